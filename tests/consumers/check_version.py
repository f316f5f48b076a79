#!/usr/bin/env python3
"""Check that every place that states goro's version states the same one.

VERSION (top level) is the source: meson reads it with
`project(version : files('VERSION'))` and CMake with `file(READ ...)`. The
places compared with it:

  include/goro/version.hpp       GORO_VERSION_MAJOR/MINOR/PATCH and _STRING,
                                 as the preprocessor sees them
  single_include/goro/goro.hpp   the same macros, through the single header
  meson                          the configured project's version
  goro.pc                        the Version: of the generated pkg-config file
  CMake                          PACKAGE_VERSION of the generated goroConfigVersion.cmake

Configures meson and CMake in a temp dir (nothing is built). Prints one line
per place and exits 1 when any differs or cannot be read. Python 3 standard
library only; needs a C++ compiler (CXX, else c++), meson and cmake on PATH.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
PROBE = "goro_version_probe: GORO_VERSION_MAJOR GORO_VERSION_MINOR GORO_VERSION_PATCH GORO_VERSION_STRING\n"


class CheckError(Exception):
    pass


def run(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, **kw)
    if p.returncode != 0:
        tail = "\n".join(p.stdout.splitlines()[-15:])
        raise CheckError("`%s` failed (status %d):\n%s" % (
            " ".join(shlex.quote(str(c)) for c in cmd), p.returncode, tail))
    return p.stdout


def header_version(include_dir, header):
    """The version the preprocessor sees through `#include <header>`."""
    if not (include_dir / header).is_file():
        raise CheckError("%s does not exist" % (include_dir / header).relative_to(ROOT))
    cxx = shlex.split(os.environ.get("CXX") or "c++")
    source = "#include <%s>\n%s" % (header, PROBE)
    out = run(cxx + ["-std=c++20", "-E", "-P", "-I", str(include_dir), "-x", "c++", "-"],
              input=source)
    lines = [l for l in out.splitlines() if l.startswith("goro_version_probe:")]
    if not lines:
        raise CheckError("the preprocessor output has no probe line")
    m = re.match(r'goro_version_probe:\s*(\d+)\s+(\d+)\s+(\d+)\s+((?:"[^"]*"\s*)+)$', lines[-1])
    if not m:
        raise CheckError("macros missing or malformed: " + lines[-1])
    numbers = "%d.%d.%d" % tuple(int(m.group(i)) for i in (1, 2, 3))
    string = "".join(re.findall(r'"([^"]*)"', m.group(4)))
    if numbers != string:
        raise CheckError("GORO_VERSION_STRING is %s but the numbers say %s" % (string, numbers))
    return numbers


def meson_versions(tmp):
    build = tmp / "meson"
    run(["meson", "setup", str(build), str(ROOT),
         "-Dtests=false", "-Dexamples=false", "-Dbench=false"])
    info = json.loads(run(["meson", "introspect", str(build), "--projectinfo"]))
    pc = (build / "meson-private" / "goro.pc").read_text()
    m = re.search(r"^Version:\s*(\S+)\s*$", pc, re.M)
    if not m:
        raise CheckError("the generated goro.pc has no Version: line")
    return info["version"], m.group(1)


def cmake_version(tmp):
    build = tmp / "cmake"
    run(["cmake", "-S", str(ROOT), "-B", str(build), "-DGORO_INSTALL=ON"])
    text = (build / "goroConfigVersion.cmake").read_text()
    m = re.search(r'set\(PACKAGE_VERSION\s+"([^"]*)"\)', text)
    if not m:
        raise CheckError("goroConfigVersion.cmake has no PACKAGE_VERSION")
    return m.group(1)


def main():
    try:
        expected = (ROOT / "VERSION").read_text().strip()
    except FileNotFoundError:
        print("version check: FAIL: VERSION is missing")
        return 1
    if not re.fullmatch(r"\d+\.\d+\.\d+", expected):
        print("version check: FAIL: VERSION should be MAJOR.MINOR.PATCH, is %r" % expected)
        return 1

    results = []  # (place, version or None, error)

    def probe(place, fn):
        try:
            results.append((place, fn(), None))
        except (CheckError, OSError, ValueError, KeyError) as e:
            results.append((place, None, str(e)))

    with tempfile.TemporaryDirectory(prefix="goro-version-") as t:
        tmp = pathlib.Path(t)
        probe("include/goro/version.hpp", lambda: header_version(ROOT / "include", "goro/version.hpp"))
        probe("single_include/goro/goro.hpp",
              lambda: header_version(ROOT / "single_include", "goro/goro.hpp"))
        if shutil.which("meson"):
            try:
                project_version, pc_version = meson_versions(tmp)
                results.append(("meson project()", project_version, None))
                results.append(("goro.pc (meson)", pc_version, None))
            except (CheckError, OSError, ValueError, KeyError) as e:
                results.append(("meson", None, str(e)))
        else:
            results.append(("meson", None, "meson is not on PATH"))
        if shutil.which("cmake"):
            probe("CMake goroConfigVersion", lambda: cmake_version(tmp))
        else:
            results.append(("CMake", None, "cmake is not on PATH"))

    ok = True
    print("version check: VERSION says %s" % expected)
    for place, got, err in results:
        if err is not None:
            ok = False
            print("  FAIL %-30s %s" % (place, err.replace("\n", "\n       ")))
        elif got != expected:
            ok = False
            print("  FAIL %-30s %s (differs)" % (place, got))
        else:
            print("  ok   %-30s %s" % (place, got))
    if not ok:
        print("version check: FAIL: make every place above say %s (VERSION is the source;"
              " include/goro/version.hpp repeats it; regenerate the single header with"
              " tools/amalgamate.py)" % expected)
        return 1
    print("version check: all agree on %s" % expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
