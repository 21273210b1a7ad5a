"""Test-run stage: the table of test group kinds.

One row per kind: its name, how to `prepare` its asset from the kernel build
(on the host, before the boot, under the source lock; it may return an error
value that fails only its group), and how to `run` it in the booted guest
(harness/groups/guest.py: what a group gets and hands back). The spec's
known and default groups, asset preparation and dispatch all read this
table: adding a group kind is one module and one row.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.groups import boot, kselftest, module, script, topology, workload
from harness.groups.guest import (
    Ended,
    GroupRun,
    Guest,
    killed,
    not_run,
    qemu_crash_error,
    qemu_crashed,
    qemu_killed,
    stop_reason,
)
from harness.kernel.build import KernelBuild
from harness.spec import GroupEntry, ScriptGroup, Spec, group_name

__all__ = ["KINDS", "Ended", "Guest", "GroupKind", "GroupRun", "killed", "kind_of", "not_run", "qemu_crashed",
           "qemu_crash_error", "qemu_killed", "stop_reason"]


@dataclass(frozen=True)
class GroupKind:
    name: str
    # (the spec's entry, the kernel build, build.log, a directory private to this run) -> asset
    prepare: Callable[[GroupEntry, KernelBuild, IO[str], Path], Any]
    run: Callable[[Guest, Any], GroupRun]  # (the booted guest, the asset) -> result, how it ended
    default: bool  # run when the spec names no groups
    by_name: bool = True  # a spec names it; False: a spec gives a mapping {name, script, timeout}
    after_failed_boot: bool = False  # runs even if the guest did not boot cleanly (reads the console only)
    chooses: bool = False  # a spec may also give {name: [test, ...]} (spec.ChosenTests)
    timeout: float | None = None  # its own time limit in s, capped by the spec's timeouts.test (None: that)
    # the host files its run pushes (Guest.push), from its asset: the pipeline puts them in the initramfs
    pushes: Callable[[Any], tuple[Path, ...]] = lambda asset: ()

    def time_limit(self, spec: Spec) -> float:
        """How long the group may run before it is a hang."""
        return min(self.timeout or spec.timeouts.test, spec.timeouts.test)


KINDS: tuple[GroupKind, ...] = (
    GroupKind("boot", boot.prepare, boot.run, default=True, after_failed_boot=True),
    GroupKind("workload", workload.prepare, script.run, default=True, pushes=script.pushes),
    GroupKind("module", module.prepare, module.run, default=True, timeout=module.TIMEOUT_S, pushes=module.pushes),
    GroupKind("topology", topology.prepare, script.run, default=False, pushes=script.pushes),
    GroupKind("script", script.prepare, script.run, default=False, by_name=False, pushes=script.pushes),
    GroupKind("kselftest-mm", kselftest.prepare, kselftest.run, default=False, chooses=True),
)


def kind_of(entry: GroupEntry) -> GroupKind:
    """The row that runs a spec's group entry."""
    if isinstance(entry, ScriptGroup):
        return next(kind for kind in KINDS if not kind.by_name)
    return next(kind for kind in KINDS if kind.name == group_name(entry))
