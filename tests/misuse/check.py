#!/usr/bin/env python3
"""Compiles unawaited.cpp with each GORO_MISUSE value: 0 must compile, the
others must fail under -Werror with the warning that names the misuse.
Usage: check.py CXX INCLUDE_DIR [extra compiler args...]"""
import os
import subprocess
import sys

cxx, inc, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
src = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'unawaited.cpp')
want = {1: 'unused variable', 2: 'co_await it', 3: 'co_await it', 4: 'co_await it'}
failed = False
for n in [0, 1, 2, 3, 4]:
    cmd = cxx.split() + ['-std=c++20', '-Wall', '-Wextra', '-Werror', '-fsyntax-only', '-I', inc,
                         '-DGORO_MISUSE=%d' % n] + extra + [src]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if n == 0:
        ok = r.returncode == 0
    else:
        ok = r.returncode != 0 and want[n] in r.stderr
    print('GORO_MISUSE=%d: %s' % (n, 'ok' if ok else 'WRONG'))
    if not ok:
        print(r.stderr[-3000:])
        failed = True
sys.exit(1 if failed else 0)
