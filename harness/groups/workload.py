"""Group `workload`: guest-tools/workload/, the static C suite (one binary,
compiled on the host), run like a script group (see script.py)."""
from __future__ import annotations

from pathlib import Path
from typing import IO

from harness.commands import run
from harness.errors import GuestError
from harness.groups.script import Program
from harness.guest import compile as compiler
from harness.kernel.build import KernelBuild
from harness.spec import GroupEntry

NAME = "workload"


def prepare(entry: GroupEntry, kernel: KernelBuild, log: IO[str], keep: Path) -> Program:
    return program(NAME, (), log)


def program(name: str, args: tuple[str, ...], log: IO[str]) -> Program:
    """The suite run with `args`. The binary's path is keyed by its sources' content:
    no parallel run rewrites it. It lists its cases (static, it runs on the host
    too): a case a hang or crash kept from reporting is named, not 'test N (missing)'."""
    binary = compiler.workload(log)
    listed = run([str(binary), *args, "--list"], error=GuestError, what=f"listing the {name} cases", log=log,
                 timeout=30)
    return Program(name, binary, args=args, cases=tuple(listed.split()))
