"""Every exit status the harness gives, in one place (cli.py returns them)."""
from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    """`harness run|report|matrix|bisect|boot`."""

    PASS = 0  # every test passed
    FAIL = 1  # a test failed, or the kernel crashed or hung
    HARNESS = 2  # the harness could not do its job: bad input, build failure, QEMU would not start
    EXEC_TIMEOUT = 124  # `boot --exec CMD`: CMD outlived the test timeout (as timeout(1) says it)
    INTERRUPTED = 128  # + the signal's number: 130 Ctrl-C (SIGINT), 143 SIGTERM


class BisectExit(enum.IntEnum):
    """`run --bisect-exit-codes`: what `git bisect run` expects."""

    GOOD = 0
    BAD = 1
    SKIP = 125  # this commit cannot be judged (does not build or boot)
    STOP = 255  # the harness, not the commit, failed: `git bisect run` stops
