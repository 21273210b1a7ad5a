"""Guest assets: the kernel's own mm selftests, built from the tree under test.

The tree decides the directory (tools/testing/selftests/mm from 6.3 on,
.../vm before). The selftests are built with the tree's own Makefile
(`make OUTPUT=DIR USERLDFLAGS=-static`, as lib.mk documents) against the
tree's uapi headers (`make O=BUILD headers`, passed as KHDR_INCLUDES),
statically: the guest has no libc. Nothing is written to the tree: make
runs in a shadow of it (real directories down to the selftest directory,
symlinks to the tree for everything else), since 6.12's Makefile writes
its local_config.* next to its sources. One shadow and output directory
per kernel build directory, so make decides what to rebuild; make is
skipped while neither the tree (its generation) nor the targets changed.
Hands on the binaries, copied out of the shared cache.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness import cache
from harness.commands import run
from harness.errors import BuildError
from harness.kernel.build import KernelBuild, first_errors, make_vars

SELFTEST_DIRS = ("tools/testing/selftests/mm", "tools/testing/selftests/vm")  # 6.3+, before


@dataclass(frozen=True)
class Built:
    directory: str  # the selftest directory in the tree, e.g. tools/testing/selftests/vm
    binaries: tuple[Path, ...]


def selftest_dir(tree: Path) -> str:
    for directory in SELFTEST_DIRS:
        if (tree / directory / "Makefile").is_file():
            return directory
    raise BuildError(f"{tree} has no mm selftests (none of {', '.join(SELFTEST_DIRS)})")


def _shadow(tree: Path, directory: str, root: Path) -> Path:
    """`root` mirrors `tree`: real directories along `directory` (and its files
    as symlinks), a symlink for every other entry. Returns root/directory."""
    parts = Path(directory).parts
    for depth in range(len(parts) + 1):
        rel = Path(*parts[:depth])
        here, there = root / rel, tree / rel
        here.mkdir(parents=True, exist_ok=True)
        names = {p.name for p in there.iterdir()}
        for link in here.iterdir():  # entries the tree lost; generated files stay
            if link.is_symlink() and link.name not in names:
                link.unlink()
        for name in sorted(names):
            if depth < len(parts) and name == parts[depth]:
                continue
            link = here / name
            if not link.is_symlink() and not link.exists():
                link.symlink_to(there / name)
    return root / directory


def headers(kb: KernelBuild, log: IO[str]) -> Path:
    """The tree's uapi headers, installed into the kernel build directory."""
    include, stamp = kb.build_dir / "usr/include", kb.build_dir / ".harness-headers"
    identity = cache.digest(str(kb.source.generation), kb.release)
    if not (include.is_dir() and stamp.exists() and stamp.read_text() == identity):
        run(["make", "-C", str(kb.source.tree), f"O={kb.build_dir}", *make_vars(), "headers"],
            error=BuildError, what="installing the kernel's uapi headers", log=log)
        stamp.write_text(identity)
    return include


def build(kb: KernelBuild, binaries: tuple[str, ...], log: IO[str], keep: Path) -> Built:
    """The named selftest binaries, built static from `kb`'s tree and copied to `keep`."""
    tree = kb.source.tree
    directory = selftest_dir(tree)
    unknown = [b for b in binaries if not (tree / directory / f"{b}.c").is_file()]
    if unknown:
        raise BuildError(f"{', '.join(unknown)}: no such selftest in {directory} of {tree} (no {unknown[0]}.c)")
    work = cache.subdir("selftests") / f"{tree.name}-{cache.digest(str(kb.build_dir))}"
    out, stamp = work / "out", work / ".harness-built"
    identity = cache.digest(str(kb.source.generation), kb.release, *binaries)
    if not (stamp.exists() and stamp.read_text() == identity and all((out / b).exists() for b in binaries)):
        stamp.unlink(missing_ok=True)
        include = headers(kb, log)
        source = _shadow(tree, directory, work / "tree")
        out.mkdir(parents=True, exist_ok=True)
        argv = ["make", "-C", str(source), f"OUTPUT={out}", f"KHDR_INCLUDES=-isystem {include}",
                "USERLDFLAGS=-static", *(str(out / b) for b in binaries)]
        try:
            run(argv, error=BuildError, what=f"building the selftests in {directory}", log=log)
        except BuildError as e:
            hint = "\n(libnuma.a is missing: run 'make setup' or 'apt-get install libnuma-dev')" \
                if "-lnuma" in str(e) else ""
            raise BuildError(f"the selftests of {directory} do not build:\n{first_errors(str(e))}{hint}") from None
        stamp.write_text(identity)
    keep.mkdir(parents=True, exist_ok=True)
    return Built(directory, tuple(Path(shutil.copy2(out / b, keep / b)) for b in binaries))


def module(kb: KernelBuild, path: str, keep: Path) -> Path:
    """A test module the kernel build made (e.g. lib/test_hmm.ko), copied to `keep`."""
    ko = kb.build_dir / path
    if not ko.is_file():
        raise BuildError(f"{path} was not built: its CONFIG_ symbol must be =m "
                         "(kernel-configs/selftests.config asks for it)")
    keep.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(ko, keep / ko.name))
