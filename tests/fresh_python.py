"""Runs code in a new Python interpreter for tests about process state (what is imported, what
the collector walks), which one test process cannot show twice (not a test module itself)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str) -> str:
    """Run ``code`` (dedented) in a new interpreter with this one's environment; return what it
    printed. A failure fails the calling test with the child's stderr."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()
