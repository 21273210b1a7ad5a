"""Guest assets: the programs compiled on the host for the guest.

- The workload: every guest-tools/workload/*.c linked into one static binary
  (`gcc -static`), cached by the content of its sources and flags.
- The test module: guest-tools/module built by kbuild (`make -C BUILD M=`)
  against the kernel just built, in a cache directory kept per kernel build
  directory, so the checkout never holds build output.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import IO

from harness import cache
from harness.commands import run
from harness.errors import BuildError, GuestError
from harness.guest import GUEST_TOOLS
from harness.kernel.build import KernelBuild, first_errors, make_vars
from harness.progress import Progress

WORKLOAD_DIR = GUEST_TOOLS / "workload"
MODULE_DIR = GUEST_TOOLS / "module"
MODULE_NAME = "migrate_test"
CFLAGS = ["-static", "-O2", "-Wall", "-Wextra", "-pthread"]


def _sources(directory: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted(p for pattern in patterns for p in directory.glob(pattern) if p.is_file())


def workload(log: IO[str]) -> Path:
    """The static workload binary; compiled only when its sources changed."""
    sources = _sources(WORKLOAD_DIR, ("*.c", "*.h"))
    if not any(p.suffix == ".c" for p in sources):
        raise GuestError(f"no workload sources (*.c) in {WORKLOAD_DIR}")
    key = cache.digest(*CFLAGS, *(p.name for p in sources), *(p.read_bytes() for p in sources))
    return cache.publish(cache.subdir("guest") / f"migrate_suite-{key}", lambda tmp: run(
        ["gcc", *CFLAGS, "-o", str(tmp), *(str(p) for p in sources if p.suffix == ".c")],
        error=GuestError, what="compiling the guest workload", log=log))


def module_dir(kb: KernelBuild) -> Path:
    """Where migrate_test.ko is built for `kb` (kept per kernel build directory)."""
    return cache.subdir("modules") / f"{MODULE_NAME}-{cache.digest(str(kb.build_dir))}"


def module(kb: KernelBuild, log: IO[str]) -> Path:
    """migrate_test.ko built against `kb`; a BuildError carries the compiler's first errors.

    One kbuild directory per kernel build directory, so kbuild itself decides
    what to recompile; make is skipped while neither the module's sources nor
    the kernel tree (its generation) changed."""
    sources = _sources(MODULE_DIR, ("*.c", "*.h", "Kbuild", "Makefile"))
    work = module_dir(kb)
    ko = work / f"{MODULE_NAME}.ko"
    stamp = cache.Stamp(work / ".harness-built", cache.digest(
        str(kb.source.generation), kb.release, *(p.name for p in sources), *(p.read_bytes() for p in sources)))
    if stamp.current(ko):
        return ko
    work.mkdir(parents=True, exist_ok=True)
    for source in sources:
        target = work / source.name
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copy2(source, target)
    try:
        with Progress(f"building {MODULE_NAME}.ko", None, "steps") as progress:
            run(["make", "-C", str(kb.build_dir), *make_vars(), f"M={work}", "modules"],
                error=BuildError, what=f"building {MODULE_NAME}.ko", log=log, on_line=progress.line)
    except BuildError as e:
        raise BuildError(f"{MODULE_NAME}.ko does not build against {kb.release}:\n{first_errors(str(e))}") from None
    stamp.write()
    return ko
