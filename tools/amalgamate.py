#!/usr/bin/env python3
"""Generate the single headers from the headers under include/goro/.

Two single headers, each from its entry point: single_include/goro/goro.hpp
(everything, from include/goro/goro.hpp) and single_include/goro/core.hpp
(no debug server, from include/goro/core.hpp). Starting at the entry, every `#include <goro/...>` line (or
`#include "goro/..."`) is replaced by the text of that header, recursively.
Each header is inlined once, where it is first included; a later include of
the same header is dropped, as `#pragma once` would have made it empty.
`#pragma once` lines of the inlined headers are dropped and the result gets a
single one at the top. Every other line, standard includes included, is kept
as it is.

The output depends only on the headers' contents: no dates, no absolute
paths, `\n` line ends. So CI can regenerate it and compare:

    tools/amalgamate.py           write both single headers
    tools/amalgamate.py --check   exit 1 if a committed file is stale
    tools/amalgamate.py --stdout  print the generated text of goro.hpp

Python 3 standard library only; runs from any working directory.
"""

import argparse
import difflib
import pathlib
import re
import sys

SCRIPT = "tools/amalgamate.py"
ENTRIES = ("goro/goro.hpp", "goro/core.hpp")

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*[<"](goro/[^>"]+)[>"]')
PRAGMA_ONCE_RE = re.compile(r"^\s*#\s*pragma\s+once\b")

BANNER = """\
// goro — single-header edition of {entry}.
//
// GENERATED FILE: do not edit. It is produced by {script} from the
// headers under include/goro/; edit those and run the script again.
// Use: #include <{entry}> with -I single_include, -std=c++20 -pthread.
#pragma once
"""


class AmalgamateError(Exception):
    pass


def repo_root_from_script():
    # tools/amalgamate.py -> the repository root is the parent of tools/.
    return pathlib.Path(__file__).resolve().parent.parent


def read_header(include_dir, name):
    path = include_dir / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AmalgamateError("header not found: include/" + name) from None
    # Decode strictly so a stray encoding problem is reported, not mangled.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AmalgamateError("include/%s is not valid UTF-8: %s" % (name, e)) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def amalgamate(include_dir, entry):
    """Return the single-header text of entry for the tree rooted at include_dir."""
    out = [BANNER.format(entry=entry, script=SCRIPT)]
    # A header is marked seen when its inlining starts, so an include cycle
    # ends the way `#pragma once` ends it in the compiler: the inner include
    # of a header still being inlined is empty.
    seen = set()

    def inline(name):
        seen.add(name)
        out.append("\n// ---- begin %s ----\n" % name)
        text = read_header(include_dir, name)
        for line in text.splitlines():
            if PRAGMA_ONCE_RE.match(line):
                continue
            m = INCLUDE_RE.match(line)
            if m:
                child = m.group(1)
                if child not in seen:
                    inline(child)
                continue
            out.append(line + "\n")
        out.append("// ---- end %s ----\n" % name)

    inline(entry)
    return "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Generate single_include/goro/{goro,core}.hpp from include/goro/.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="exit 1 if the single header is missing or stale")
    mode.add_argument("--stdout", action="store_true",
                      help="print the generated header instead of writing it")
    parser.add_argument("--root", type=pathlib.Path, default=None,
                        help="repository root (default: the parent of tools/)")
    args = parser.parse_args(argv)

    root = (args.root or repo_root_from_script()).resolve()
    include_dir = root / "include"
    status = 0
    for entry in ENTRIES:
        try:
            text = amalgamate(include_dir, entry)
        except AmalgamateError as e:
            print("amalgamate: error: %s" % e, file=sys.stderr)
            return 2
        if args.stdout:
            if entry == ENTRIES[0]:
                sys.stdout.write(text)
            continue
        status = max(status, write_or_check(root, entry, text, args.check))
    return status


def write_or_check(root, entry, text, check):
    output = root / "single_include" / entry
    shown = "single_include/" + entry
    if check:
        try:
            current = output.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            print("amalgamate: %s is missing; run %s and commit the result"
                  % (shown, SCRIPT), file=sys.stderr)
            return 1
        if current == text:
            print("amalgamate: %s is up to date" % shown)
            return 0
        diff = list(difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=shown + " (committed)", tofile=shown + " (generated)"))
        shown_diff = diff[:40]
        sys.stderr.write("".join(shown_diff))
        if len(diff) > len(shown_diff):
            sys.stderr.write("... (%d more diff lines)\n" % (len(diff) - len(shown_diff)))
        print("amalgamate: %s is stale: it differs from what the headers under "
              "include/ generate; run %s and commit the result" % (shown, SCRIPT),
              file=sys.stderr)
        return 1

    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        if output.read_bytes() == text.encode("utf-8"):
            print("amalgamate: %s already up to date" % shown)
            return 0
    except FileNotFoundError:
        pass
    # newline="" so the file gets \n on every platform.
    with open(output, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print("amalgamate: wrote %s" % shown)
    return 0

if __name__ == "__main__":
    sys.exit(main())
