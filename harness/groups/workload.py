"""Group `workload`: guest-tools/workload/, the static C suite (one binary,
compiled on the host), run like a script group (see script.py)."""
from __future__ import annotations

from pathlib import Path
from typing import IO

from harness.groups.script import Program
from harness.guest import compile as compiler
from harness.kernel.build import KernelBuild
from harness.spec import GroupEntry

NAME = "workload"


def prepare(entry: GroupEntry, kernel: KernelBuild, log: IO[str], keep: Path) -> Program:
    """The binary's path is keyed by its sources' content: no parallel run rewrites it."""
    return Program(NAME, compiler.workload(log))
