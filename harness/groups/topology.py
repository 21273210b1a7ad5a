"""Group `topology` (not default): the workload's topology suite (`migrate_suite
--topology`): cases that need 3+ nodes, memoryless or CPU-less nodes. A case
whose need the machine does not offer is a skip naming it, so the group runs on
any machine; the specs under examples/ give each case its machine."""
from __future__ import annotations

from pathlib import Path
from typing import IO

from harness.groups.script import Program
from harness.guest import compile as compiler
from harness.kernel.build import KernelBuild
from harness.spec import GroupEntry

NAME = "topology"


def prepare(entry: GroupEntry, kernel: KernelBuild, log: IO[str], keep: Path) -> Program:
    return Program(NAME, compiler.workload(log), args=("--topology",))
