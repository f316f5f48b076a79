#!/usr/bin/env python3
"""Keep the README's code in step with the compiled examples.

A README block

    <!-- snippet: examples/pipeline.cpp#stages -->
    ```cpp
    ...
    ```
    <!-- /snippet -->

is rewritten with the lines between `// [stages]` and `// [/stages]` in
examples/pipeline.cpp (without `#name`: the whole file). The examples are
compiled in CI, so the README's code compiles too.

usage: readme_snippets.py [--check] [FILE.md ...]   (default: README.md)
  --check  exit 1 when a block differs from its source (nothing is written)
"""
import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- snippet: *(?P<src>[^#\s]+)(?:#(?P<tag>[\w-]+))? *-->\n)(?P<body>.*?)(<!-- /snippet -->)",
                   re.S)


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


def main(argv):
    check = "--check" in argv
    files = [a for a in argv if a != "--check"] or ["README.md"]
    stale = []
    for f in files:
        p = ROOT / f if not pathlib.Path(f).is_absolute() else pathlib.Path(f)
        old = p.read_text()
        new = render(old)
        if new != old:
            if check:
                stale.append(f)
            else:
                p.write_text(new)
    if stale:
        print("readme_snippets: stale code blocks in " + ", ".join(stale) +
              ": run scripts/readme_snippets.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
