"""Guest assets: the programs compiled on the host for the guest.

- The workload: every guest-tools/workload/*.c linked into one static binary
  (`gcc -static`), cached by the content of its sources and flags.
- The test module: guest-tools/module built by kbuild (`make -C BUILD M=`)
  against the kernel just built, in a cache directory kept per kernel build
  directory, so the checkout never holds build output.
"""
from __future__ import annotations

import os
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


def _built_from(kb: KernelBuild, work: Path, sources: list[Path]) -> str:
    """A digest of what migrate_test.ko is built from: its sources, the kernel's
    release, .config and exported symbols (Module.symvers), and the size and
    mtime of every header kbuild recorded it includes (its .cmd files). An edit
    of a .c file of the kernel changes none of these: make is skipped."""
    deps = sorted({line.strip(" \\") for cmd in work.glob(".*.o.cmd") for line in cmd.read_text().splitlines()
                   if line.startswith("  ") and "$(" not in line})
    stats = [f"{d}:{st.st_mtime_ns}:{st.st_size}" if (st := _stat(kb.build_dir / d)) else f"{d}:-" for d in deps]
    return cache.digest(kb.release, kb.config_path.read_bytes(), _read(kb.build_dir / "Module.symvers"),
                        *(p.name for p in sources), *(p.read_bytes() for p in sources), *stats)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def module(kb: KernelBuild, log: IO[str]) -> Path:
    """migrate_test.ko built against `kb`; a BuildError carries the compiler's first errors.

    One kbuild directory per kernel build directory, so kbuild itself decides
    what to recompile; make is skipped while nothing it is built from changed."""
    sources = _sources(MODULE_DIR, ("*.c", "*.h", "Kbuild", "Makefile"))
    work = module_dir(kb)
    ko = work / f"{MODULE_NAME}.ko"
    stamp = work / ".harness-built"
    if cache.Stamp(stamp, _built_from(kb, work, sources)).current(ko):
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
    cache.Stamp(stamp, _built_from(kb, work, sources)).write()  # with the headers this make recorded
    return ko
