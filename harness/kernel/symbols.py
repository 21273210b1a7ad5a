"""Crash stacks decoded to file:line, inlined frames too, by the kernel's own
scripts/decode_stacktrace.sh against the vmlinux the run booted. It needs
debug info (the `debug-info` profile); without it crashes stay as printed."""
from __future__ import annotations

import logging
import re
from dataclasses import replace

from harness.commands import run
from harness.errors import BuildError, HarnessError
from harness.guest import compile as compiler
from harness.kernel import config as kconfig
from harness.kernel.build import KernelBuild
from harness.results.model import RunResult, TestResult

log = logging.getLogger("harness")
FRAME = re.compile(r"[^+\s]+\+0x[0-9a-f]+/0x[0-9a-f]+")  # what the script decodes: "func+0x1b/0x90"
PLACE = re.compile(r" \((?:\S+:\d+(?: \(discriminator \d+\))? ?)+\)")  # what it writes: " (mm/migrate.c:1259 ...)"


def has_debug_info(kb: KernelBuild) -> bool:
    return kconfig.read_config(kb.config_path).get("CONFIG_DEBUG_INFO") == "y"


def decode(excerpt: str, kb: KernelBuild) -> str | None:
    """The excerpt's frames as `func (file:line [inlined into file:line...])`, one per line."""
    frames = [line.strip() for line in excerpt.splitlines() if FRAME.search(line)]
    if not frames:
        return None
    modules = compiler.module_dir(kb)  # for the test module's frames
    argv = ["bash", str(kb.source.tree / "scripts/decode_stacktrace.sh"), str(kb.vmlinux), "auto", str(modules)]
    try:
        output = run(argv, error=BuildError, what="decode_stacktrace.sh", input="\n".join(frames) + "\n",
                     timeout=600)
    except HarnessError as e:
        log.warning("crash stack not decoded: %s", e)
        return None
    decoded = [line.strip() for line in output.splitlines() if PLACE.search(line)]
    return "\n".join(decoded) or None


def decoded(result: RunResult, kb: KernelBuild) -> RunResult:
    """The result with each crash's `stack` filled in, when the kernel has debug info."""
    crashes = [*result.crashes, *(leaf.crash for g in result.groups for leaf in g.leaves() if leaf.crash)]
    if not crashes or not has_debug_info(kb):
        return result
    log.info("decoding %d crash stack(s) with scripts/decode_stacktrace.sh", len(set(crashes)))
    new = {crash: replace(crash, stack=decode(crash.excerpt, kb)) for crash in dict.fromkeys(crashes)}

    def swap(test: TestResult) -> TestResult:
        return replace(test, crash=new[test.crash] if test.crash else None,
                       subtests=tuple(swap(sub) for sub in test.subtests))
    return replace(result, groups=tuple(map(swap, result.groups)), crashes=tuple(new[c] for c in result.crashes))
