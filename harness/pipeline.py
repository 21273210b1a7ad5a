"""One run: spec -> kernel build -> guest assets -> VM -> test groups -> results.

Each stage is called once, in order, with the value the previous one handed
on; this module only wires them together, times them and keeps the run's
artifacts in one directory. It owns the VM: it boots it, hands it to the
test groups (harness/groups) and stops it, at the end or as soon as a group
crashed or hung the kernel.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import cache, groups
from harness.errors import BootError, VmCrashed, VmKilled, disk_full_is_an_error
from harness.groups import Ended, Guest
from harness.guest import initramfs, keys
from harness.kernel import build as kbuild
from harness.kernel import config as kconfig
from harness.kernel import source as ksource
from harness.kernel import symbols
from harness.results import kcidb, oops, report
from harness.results.model import CrashReport, RunResult, TestResult
from harness.spec import GroupEntry, Spec, group_name
from harness.vm import qemu
from harness.vm.console import CrashWatch, note_between_boots
from harness.vm.ssh import GuestShell

log = logging.getLogger("harness")
BOOT_TAIL_LINES = 12  # what stderr shows of a boot that did not get ready
SSH_CONNECT_S = 30  # init has started sshd before it says ready: this is only slack
CRASHES = CrashWatch(oops.CRASH_START, oops.find_crashes)  # what the console watches for

Assets = dict[str, Any]  # group name -> what its kind's prepare returned
# metadata.timings_s, in seconds: the stages of a run, in order (docs/results-schema.md)
STAGES = ("wait", "source", "build", "assets", "image", "boot", "tests")
WORK = ("wait", "build", "assets", "boot", "tests")  # not the harness's own: `overhead` is the rest of `total`
# QEMU's own crash during a group (qemu.BOOT_ATTEMPTS says why it happens) decides nothing: the
# group runs again on a fresh boot, this many times in a run; then the run is exit 2.
QEMU_CRASH_RERUNS = 1


def source_lock(spec: Spec) -> contextlib.AbstractContextManager[None]:
    """Runs on the same source share its private tree and build: they take turns
    (`debian:linux-source-6.1` and the path it is extracted to are one source)."""
    return cache.locked(f"source-{cache.digest(str(ksource.origin_path(spec.kernel.source)))}")


@contextlib.contextmanager
def clocked(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the block's wall-clock seconds to timings[stage]."""
    start = time.monotonic()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.monotonic() - start


def _build(spec: Spec, out_dir: Path, timings: dict[str, float]) -> kbuild.KernelBuild:
    took: dict[str, float] = {}
    with clocked(took, "source"):
        src = ksource.prepare(spec.kernel.source, spec.kernel.rev, spec.kernel.patches)
    log.info("source: %s (%s)%s in %.1f s", src.tree, src.version,
             f", {len(src.patches)} patch(es) applied," if src.patches else "", took["source"])
    with clocked(took, "build"):
        kb = kbuild.build(src, spec.kernel.fragments, out_dir, spec.timeouts.build)
    log.info("build: %s in %.1f s (%s)", kb.release, took["build"], kb.build_dir)
    for stage, seconds in took.items():
        timings[stage] = timings.get(stage, 0.0) + seconds
    return kb


def build_kernel(spec: Spec, out_dir: Path) -> kbuild.KernelBuild:
    with disk_full_is_an_error(), source_lock(spec):
        return _build(spec, out_dir, {})


def prepare(spec: Spec, out_dir: Path, scratch: Path, with_assets: bool = True,
            timings: dict[str, float] | None = None) -> tuple[kbuild.KernelBuild, Assets]:
    """Build the kernel and (unless only booting) each group's asset; keep what
    QEMU and the guest read in the run's scratch, since a parallel run may
    rebuild the shared tree. `timings` gets the seconds of each stage."""
    timings = {} if timings is None else timings
    qemu.check_starts()
    with disk_full_is_an_error(), contextlib.ExitStack() as held:
        with clocked(timings, "wait"):
            held.enter_context(source_lock(spec))
        kb = _build(spec, out_dir, timings)
        assets: Assets = {}
        if with_assets:
            with (out_dir / "build.log").open("a") as build_log, clocked(timings, "assets"):
                assets = {group_name(g): groups.kind_of(g).prepare(g, kb, build_log, scratch) for g in spec.tests}
        vmlinux = _linked(kb.vmlinux, scratch / "vmlinux")
    return replace(kb, vmlinux=vmlinux), assets


def _linked(path: Path, to: Path) -> Path:
    """A hard link (make replaces vmlinux, never rewrites it), or a copy on another file system."""
    try:
        os.link(path, to)
    except OSError:
        shutil.copy2(path, to)
    return to


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """Per-run scratch space (kernel copy, swap image, initramfs, keys), removed afterwards;
    locked while the run lives, so `harness cache clean` knows a run is in progress."""
    path = Path(tempfile.mkdtemp(prefix="run-", dir=cache.subdir("scratch")))
    try:
        with cache.holding(path):
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def booted(spec: Spec, kb: kbuild.KernelBuild, out_dir: Path, scratch: Path,
           timings: dict[str, float] | None = None, preload: tuple[Path, ...] = ()) -> Iterator[qemu.Vm[CrashReport]]:
    """Assemble the guest (with `preload`: files the groups push) and boot it;
    QEMU is stopped when the block ends."""
    config = kconfig.read_config(kb.config_path)
    kasan = config.get("CONFIG_KASAN") == "y"
    shadow = spec.vm.memory_mib // 8 if kasan else 0  # KASAN's shadow: 1/8 of memory, from the first node
    with clocked({} if timings is None else timings, "image"):
        image = initramfs.assemble(spec.vm, keys.make(scratch / "keys"), scratch, reserved_mib=shadow,
                                   preload=preload)
    console_log = out_dir / "console.log"
    vm = qemu.boot(spec.vm, kb.vmlinux, image, console_log, spec.timeouts.boot, CRASHES,
                   lpj=qemu.preset_lpj(config))
    with vm:
        (out_dir / "qemu.pid").write_text(f"{vm.pid}\n")
        log.info("boot: %s in %.1f s under %s (console: %s)",
                 "ready" if vm.ready else vm.boot_ended.how.value, vm.boot_seconds,
                 vm.accel.upper(), console_log)
        if not vm.ready:  # a developer (or a CI log that keeps no files) sees why at once
            ended = f"QEMU ended: {note}; " if (note := vm.console.exit_note()) else ""
            log.info("boot: %sthe last console lines:\n%s", ended,
                     textwrap.indent(vm.console.tail(BOOT_TAIL_LINES), "  | "))
        yield vm


def guest_shell(vm: qemu.Vm[CrashReport]) -> GuestShell:
    """SSH into a booted guest; a guest that never got ready is a BootError."""
    if not vm.ready:
        crashes = vm.console.crashes()
        what = f"the kernel crashed: {crashes[0].title}" if crashes else f"boot ended by {vm.boot_ended.how.value}"
        raise BootError(f"the guest did not get ready ({what})\nlast console lines:\n{vm.console.tail()}")
    return GuestShell.connect(vm.ssh_port, vm.image.keys, SSH_CONNECT_S, vm.console.tail)


@contextlib.contextmanager
def guest(spec: Spec, vm: qemu.Vm[CrashReport], out_dir: Path) -> Iterator[Guest]:
    """The booted guest as the groups get it; its SSH shell is closed when the block ends."""
    handed = Guest(vm, spec, out_dir, lambda: guest_shell(vm))
    try:
        yield handed
    finally:
        handed.close()


def metadata(spec: Spec, kb: kbuild.KernelBuild, vm: qemu.Vm[CrashReport], timings: dict[str, float],
             group_times: dict[str, float]) -> dict[str, Any]:
    started = datetime.now(UTC) - timedelta(seconds=timings["total"])
    return {
        "started": started.isoformat(timespec="microseconds"),
        "kernel": {"version": kb.source.version, "release": kb.release, "origin": kb.source.origin,
                   "commit": kb.source.commit, "patches": [str(p) for p in kb.source.patches],
                   "patchset_hash": kcidb.patchset_hash(list(kb.source.patches)),
                   "configs": [str(c) for c in spec.kernel.configs], "profiles": list(spec.kernel.profiles),
                   "compiler": kcidb.compiler(kb.config_path),
                   "config_hash": cache.digest(kb.config_path.read_bytes())},
        "vm": {"accel": vm.accel, "cpus": spec.vm.cpus, "swap_mib": spec.vm.swap_mib,
               "numa": [asdict(n) for n in spec.vm.numa], "distances": spec.vm.distances},
        "timings_s": {**{k: round(v, 2) for k, v in timings.items()},
                      "groups": {k: round(v, 2) for k, v in group_times.items()}},
    }


def run(spec: Spec, out_dir: Path) -> RunResult:
    """The whole run; artifacts land in out_dir. Raises HarnessError (exit 2).

    A crash or hang stops the VM. With `after_crash: reboot` in the spec the
    guest is booted again for the groups left; otherwise they are errors."""
    with disk_full_is_an_error():
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "console.log").unlink(missing_ok=True)
        with scratch_dir() as scratch:
            so_far = SoFar(spec, out_dir, time.monotonic(), pending=list(spec.tests))
            try:
                return _run(spec, out_dir, scratch, so_far)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM (cli.py): QEMU is stopped; report what finished
                if so_far.kb is not None and so_far.vm is not None:
                    so_far.report("interrupted")
                raise


@dataclass
class SoFar:
    """What a run has done so far: enough for its report at any point."""

    spec: Spec
    out_dir: Path
    started: float
    kb: kbuild.KernelBuild | None = None
    vm: qemu.Vm[CrashReport] | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (STAGES)
    group_times: dict[str, float] = field(default_factory=dict)  # seconds per group, in the guest
    results: list[TestResult] = field(default_factory=list)
    pending: list[GroupEntry] = field(default_factory=list)  # the groups not finished, the running one first

    def report(self, why: str) -> RunResult:
        """The run's result, with the groups left as errors saying `why`; written to out_dir."""
        assert self.kb is not None and self.vm is not None
        results = self.results + [groups.not_run(group_name(g), why) for g in self.pending]
        self.timings["total"] = time.monotonic() - self.started
        self.timings["overhead"] = self.timings["total"] - sum(self.timings.get(k, 0.0) for k in WORK)
        result = RunResult(metadata(self.spec, self.kb, self.vm, self.timings, self.group_times), tuple(results),
                           tuple(self.vm.console.crashes()))
        result = symbols.decoded(result, self.kb)
        report.write_all(result, self.out_dir)
        return result


def _qemu_killed(so_far: SoFar, signum: int, group: str) -> VmKilled:
    """QEMU was killed from outside during `group`: the report says what finished, the run exits 2."""
    so_far.report(f"not run: {groups.killed(signum, f'group {group}')}")
    return groups.qemu_killed(signum, f"group {group}", _what_finished(so_far))


def _qemu_crashed(so_far: SoFar, note: str, group: str) -> VmCrashed:
    """QEMU crashed by itself during `group`, and had before in this run: the report says
    what finished, the run exits 2."""
    so_far.report(f"not run: {groups.qemu_crashed(note, f'group {group}')}")
    return groups.qemu_crash_error(note, f"group {group}", f", the second time in this run{_what_finished(so_far)}")


def _what_finished(so_far: SoFar) -> str:
    return f"; the tests that finished are in {so_far.out_dir / 'results.json'}, the others are errors"


def _run(spec: Spec, out_dir: Path, scratch: Path, so_far: SoFar) -> RunResult:
    timings = so_far.timings = {stage: 0.0 for stage in STAGES}
    kb, assets = prepare(spec, out_dir, scratch, timings=timings)
    so_far.kb = kb
    pending, results = so_far.pending, so_far.results
    preload = tuple(dict.fromkeys(p for g in spec.tests for p in groups.kind_of(g).pushes(assets[group_name(g)])))
    reruns = QEMU_CRASH_RERUNS
    while True:
        with booted(spec, kb, out_dir, scratch, timings, preload) as vm, guest(spec, vm, out_dir) as handed:
            so_far.vm = vm
            timings["boot"] += vm.boot_seconds
            timings.setdefault("boot_to_first_result", vm.first_result_seconds or 0.0)
            clean = vm.ready and not vm.console.crashes(since=vm.console.start_line)
            ended = Ended.DONE
            while pending and ended is Ended.DONE:
                kind = groups.kind_of(pending[0])
                if not (clean or kind.after_failed_boot):
                    break
                handed.timeout = kind.time_limit(spec)
                with clocked(so_far.group_times, group_name(pending[0])), clocked(timings, "tests"):
                    ran = kind.run(handed, assets[group_name(pending[0])])
                ended = ran.ended
                if ended is Ended.QEMU_CRASHED and reruns:
                    break  # not recorded: the group runs again on a fresh boot
                pending.pop(0)  # only now: a group interrupted while it runs is reported as such
                results.append(ran.result)
            killed = vm.console.killed_by() if ended is Ended.KILLED else None
            if ended is not Ended.DONE:
                vm.stop()  # the group has taken what it needs (a hang's dump) from the guest
                vm.console.drain(0.3)  # what QEMU still had to print
            note = vm.console.exit_note() if ended is Ended.QEMU_CRASHED else ""
        if ended is Ended.QEMU_CRASHED and reruns:
            reruns -= 1
            why = groups.qemu_crashed(note, f"group {group_name(pending[0])}")
            log.warning("%s; not a verdict on the kernel: booting again to run it again", why)
            note_between_boots(out_dir / "console.log", f"{why}; booting again to run it again")
            continue
        if not clean or ended in (Ended.DONE, Ended.KILLED, Ended.QEMU_CRASHED) or not pending \
                or spec.after_crash != "reboot":
            break
        log.info("the kernel %s: booting again for %d group(s) left", ended.value, len(pending))
    if killed is not None:
        raise _qemu_killed(so_far, killed, results[-1].name)
    if ended is Ended.QEMU_CRASHED:
        raise _qemu_crashed(so_far, note, results[-1].name)
    why = (groups.stop_reason(results[-1], ended) if ended is not Ended.DONE
           else "not run: the boot did not finish cleanly")
    return so_far.report(why)
