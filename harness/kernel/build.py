"""Kernel stage 3: build out of tree (`make O=`), with ccache when present.

The build directory is keyed by the source tree and the config inputs, so
switching back to a config reuses its build, and a run with nothing changed
lets make find nothing to do. Hands on a `KernelBuild`.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import cache
from harness.commands import need_tool, run
from harness.errors import BuildError, CommandTimeout, ConfigError
from harness.kernel import config as kconfig
from harness.kernel.source import KernelSource
from harness.progress import Progress

# Fixed build identity: identical inputs give identical objects (and ccache hits).
BUILD_ENV = {"KBUILD_BUILD_USER": "harness", "KBUILD_BUILD_HOST": "migrate-harness",
             "KBUILD_BUILD_TIMESTAMP": "1970-01-01"}


STEPS_FILE = ".harness-steps"  # kbuild steps of the last build from an empty directory
# What a run needs: QEMU boots vmlinux through its PVH entry point (CONFIG_PVH, guest.config), so
# no bzImage (its objcopy, compression and decompressor link); modules: test_hmm.ko (kselftest-mm).
TARGETS = ("vmlinux", "modules")
FIRST_ESTIMATE = 1700  # kbuild steps of our 6.1 config from scratch (1702 counted), before a build counted them


@dataclass(frozen=True)
class KernelBuild:
    build_dir: Path
    config_path: Path
    release: str  # `uname -r` of the built kernel
    source: KernelSource
    vmlinux: Path  # what QEMU boots, through its PVH entry point; with its symbols (and debug info, with debug-info)


def make_vars() -> list[str]:
    return ["CC=ccache gcc"] if shutil.which("ccache") else []


def make_argv(source: KernelSource, build_dir: Path) -> list[str]:
    """The make command line of a build (TARGETS, out of tree, one job per CPU)."""
    return ["make", "-C", str(source.tree), f"O={build_dir}", *make_vars(), f"-j{os.cpu_count() or 2}", *TARGETS]


def build_dir_for(source: KernelSource, fragments: list[Path]) -> Path:
    """Keyed by the options the fragments ask for, in order: a comment edited in one is no new build."""
    options = [f"{r.symbol}={r.value}" for f in fragments for r in kconfig.read_fragment(f)]
    key = cache.digest(str(source.tree), *make_vars(), *options)
    return cache.build_dir(source.tree.name, key)


def first_errors(log_text: str, limit: int = 12) -> str:
    """The first compiler/make error lines of a build log, with a line of context."""
    lines = log_text.splitlines()
    hits = [i for i, line in enumerate(lines) if re.search(r"\berror\b|\*\*\*", line)]
    picked: list[str] = []
    for i in hits:
        for line in lines[max(i - 1, 0): i + 2]:
            if line not in picked:
                picked.append(line)
        if len(picked) >= limit:
            break
    return "\n".join(picked[:limit]) or "\n".join(lines[-limit:])


def expected_steps(build_dir: Path) -> int | None:
    """The steps a build of `build_dir` will print: those of its last full build
    (or a first estimate) when it starts from scratch; unknown when incremental."""
    if (build_dir / "vmlinux").exists():
        return None
    try:
        return int((build_dir / STEPS_FILE).read_text())
    except (OSError, ValueError):
        return FIRST_ESTIMATE


def build(source: KernelSource, extra_fragments: tuple[Path, ...], out_dir: Path, timeout: float,
          build_dir: Path | None = None, use_ccache: bool = True) -> KernelBuild:
    """Configure and build; build.log and .config land in out_dir.

    `build_dir` and `use_ccache=False` are for measuring cold builds (make bench)."""
    for tool in ("make", "gcc", "flex", "bison", "bc"):
        need_tool(tool)
    fragments = kconfig.default_fragments() + list(extra_fragments)
    for fragment in fragments:
        if not fragment.is_file():
            raise ConfigError(f"config fragment {fragment} does not exist")
    build_dir = build_dir or build_dir_for(source, fragments)
    build_dir.mkdir(parents=True, exist_ok=True)
    os.utime(build_dir)  # its last use, for `harness cache`
    # Paths under the cache (private trees and build directories alike) are hashed relative to the
    # build directory: a build of another config of the same tree, in a build directory of its
    # own, finds the objects the config change does not touch (preprocessed output unchanged).
    env = {**BUILD_ENV, "CCACHE_DIR": str(cache.subdir("ccache")), "CCACHE_BASEDIR": str(cache.root())}
    if not use_ccache:
        env["CCACHE_DISABLE"] = "1"
    log_path = out_dir / "build.log"
    with log_path.open("a") as log:
        config = kconfig.configure(source.tree, build_dir, fragments, log)
        shutil.copyfile(config, out_dir / ".config")
        # written after a make that succeeded on this very tree
        built = cache.Stamp(build_dir / ".harness-built",
                            cache.digest(str(source.generation), config.read_bytes(), *make_vars()))
        if built.current():
            log.write("harness: no source file changed since the last build: make skipped\n")
        else:
            argv = make_argv(source, build_dir)
            total = expected_steps(build_dir)
            try:
                with Progress("build", total, "steps") as progress:
                    run(argv, error=BuildError, what="kernel build", log=log, timeout=timeout, env=env,
                        on_line=progress.line)
                if total is not None:
                    (build_dir / STEPS_FILE).write_text(f"{progress.done}\n")
            except CommandTimeout:
                raise
            except BuildError:
                raise BuildError(f"the kernel build failed (full log: {log_path}):\n"
                                 f"{first_errors(log_path.read_text(errors='replace'))}") from None
            built.write()
    release = (build_dir / "include/config/kernel.release").read_text().strip()
    return KernelBuild(build_dir=build_dir, config_path=config, release=release, source=source,
                       vmlinux=build_dir / "vmlinux")
