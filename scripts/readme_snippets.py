#!/usr/bin/env python3
"""Keep the code of the README and of docs/*.md in step with the compiled examples.

A block

    <!-- snippet: examples/pipeline.cpp#stages -->
    ```cpp
    ...
    ```
    <!-- /snippet -->

is rewritten with the lines between `// [stages]` and `// [/stages]` in
examples/pipeline.cpp (without `#name`: the whole file). The examples are
compiled in CI, so the documents' code compiles too.

--check also fails when a document
  * has a ```cpp block outside such a snippet (code nobody compiles), or
  * names a header that does not exist: every `NAME.hpp` mentioned is a path
    from include/ (`goro/sync/channel.hpp`), from include/goro/
    (`sync/channel.hpp`) or from the repository root
    (`examples/leak_hunt/service.hpp`). Old paths may be named only between
    `<!-- moved-headers -->` and `<!-- /moved-headers -->`, where the
    documents say where they went.

usage: readme_snippets.py [--check] [FILE.md ...]   (default: README.md and docs/*.md)
  --check  exit 1 when a block differs from its source or a check above
           fails (nothing is written)
"""
import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- snippet: *(?P<src>[^#\s]+)(?:#(?P<tag>[\w-]+))? *-->\n)(?P<body>.*?)(<!-- /snippet -->)",
                   re.S)
FENCE = re.compile(r"^```(\w*)[^\n]*\n.*?^```[ \t]*$", re.S | re.M)
MOVED = re.compile(r"<!-- moved-headers -->.*?<!-- /moved-headers -->", re.S)
HEADER = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.hpp)\b")


def default_files():
    return ["README.md"] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))


def extract(src, tag):
    path = ROOT / src
    lines = path.read_text().splitlines()
    if tag is None:
        return "\n".join(lines).rstrip() + "\n"
    start = end = None
    for i, line in enumerate(lines):
        if line.strip() == f"// [{tag}]":
            start = i + 1
        elif line.strip() == f"// [/{tag}]" and start is not None:
            end = i
            break
    if start is None or end is None:
        raise SystemExit(f"readme_snippets: {src} has no // [{tag}] ... // [/{tag}] markers")
    return textwrap.dedent("\n".join(lines[start:end])).rstrip() + "\n"


def render(text):
    def repl(m):
        code = extract(m.group("src"), m.group("tag"))
        return f"{m.group(1)}```cpp\n{code}```\n{m.group(5)}"
    return BLOCK.sub(repl, text)


def unchecked_code(text):
    """Line numbers of ```cpp blocks that no snippet marker keeps in step."""
    inside = [(m.start(), m.end()) for m in BLOCK.finditer(text)]
    found = []
    for m in FENCE.finditer(text):
        if m.group(1) in ("cpp", "c++", "cxx") and not any(a <= m.start() < b for a, b in inside):
            found.append(text.count("\n", 0, m.start()) + 1)
    return found


def missing_headers(text):
    """Headers named in `text` (outside moved-headers regions) that do not exist."""
    text = MOVED.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    found = []
    for m in HEADER.finditer(text):
        name = m.group(1)
        if name.startswith("goro/"):
            candidates = [ROOT / "include" / name, ROOT / "single_include" / name]
        else:
            candidates = [ROOT / "include" / "goro" / name, ROOT / name]
        if not any(c.is_file() for c in candidates):
            found.append((text.count("\n", 0, m.start()) + 1, name))
    return found


def main(argv):
    check = "--check" in argv
    files = [a for a in argv if a != "--check"] or default_files()
    stale = []
    problems = []
    for f in files:
        p = ROOT / f if not pathlib.Path(f).is_absolute() else pathlib.Path(f)
        old = p.read_text()
        new = render(old)
        if new != old:
            if check:
                stale.append(f)
            else:
                p.write_text(new)
        if check:
            for line in unchecked_code(old):
                problems.append(f"{f}:{line}: a ```cpp block without a <!-- snippet: ... --> marker")
            for line, name in missing_headers(old):
                problems.append(f"{f}:{line}: names {name}, which is not in include/, include/goro/ "
                                "or the repository (a moved header? see docs/api.md#moved-headers)")
    for msg in problems:
        print("readme_snippets: " + msg, file=sys.stderr)
    if stale:
        print("readme_snippets: stale code blocks in " + ", ".join(stale) +
              ": run scripts/readme_snippets.py", file=sys.stderr)
    return 1 if stale or problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
