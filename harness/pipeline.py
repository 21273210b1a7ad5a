"""One run: spec -> kernel build -> guest assets -> VM -> test run -> results.

Each stage is called once, in order, with the value the previous one handed
on; this module only wires them together, times them and keeps the run's
artifacts in one directory.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from harness import cache, testrun
from harness.errors import BootError, BuildError
from harness.groups import kselftest
from harness.guest import compile as compiler
from harness.guest import initramfs, keys
from harness.kernel import build as kbuild
from harness.kernel import source as ksource
from harness.results import kcidb, oops, report
from harness.results.model import RunResult, TestResult
from harness.spec import ScriptGroup, SelftestGroup, Spec
from harness.vm import qemu
from harness.vm.ssh import GuestShell

log = logging.getLogger("harness")
SSH_CONNECT_S = 30  # init has started sshd before it says ready: this is only slack


def _source_lock(spec: Spec):
    """Runs on the same source share its private tree and build: they take turns
    (`debian:linux-source-6.1` and the path it is extracted to are one source)."""
    return cache.locked(f"source-{cache.digest(str(ksource.origin_path(spec.kernel.source)))}")


def _build(spec: Spec, out_dir: Path) -> kbuild.KernelBuild:
    start = time.monotonic()
    src = ksource.prepare(spec.kernel.source, spec.kernel.rev, spec.kernel.patches)
    log.info("source: %s (%s)%s", src.tree, src.version,
             f", {len(src.patches)} patch(es) applied" if src.patches else "")
    kb = kbuild.build(src, spec.kernel.configs, out_dir, spec.timeouts.build)
    log.info("build: %s in %.1f s (%s)", kb.release, time.monotonic() - start, kb.build_dir)
    return kb


def build_kernel(spec: Spec, out_dir: Path) -> kbuild.KernelBuild:
    with _source_lock(spec):
        return _build(spec, out_dir)


@dataclass(frozen=True)
class Assets:
    """What the groups push into the guest, compiled before the boot."""

    workload: Path | None
    module: Path | BuildError | None  # a module that does not build fails its group, not the run
    kselftest: kselftest.Prepared | BuildError | None = None


def compile_assets(spec: Spec, kb: kbuild.KernelBuild, out_dir: Path, scratch: Path) -> Assets:
    with (out_dir / "build.log").open("a") as log:
        chosen = [g for g in spec.tests if g == kselftest.NAME or isinstance(g, SelftestGroup)]
        selftests = None
        if chosen:
            tests = chosen[0].tests if isinstance(chosen[0], SelftestGroup) else ()
            selftests = kselftest.prepare(tests, kb, log, scratch / kselftest.NAME)
        workload = compiler.workload(log) if "workload" in spec.tests else None
        module: Path | BuildError | None = None
        if "module" in spec.tests:
            try:
                module = compiler.module(kb, log)
            except BuildError as e:
                module = e
    return Assets(workload, module, selftests)


def prepare(spec: Spec, out_dir: Path, scratch: Path,
            with_assets: bool = True) -> tuple[kbuild.KernelBuild, Assets]:
    """Build the kernel and (unless only booting) the guest's programs; copy what
    QEMU and the guest read into the run's scratch, since a parallel run may
    rebuild the shared tree."""
    with _source_lock(spec):
        kb = _build(spec, out_dir)
        assets = compile_assets(spec, kb, out_dir, scratch) if with_assets else Assets(None, None)
        kernel = Path(shutil.copy2(kb.bzimage, scratch / "bzImage"))
        module = assets.module
        if isinstance(module, Path):
            module = Path(shutil.copy2(module, scratch / module.name))
    return replace(kb, bzimage=kernel), replace(assets, module=module)


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
           with_ssh: bool = True) -> Iterator[qemu.Vm]:
    """Assemble the guest and boot it; QEMU is stopped when the block ends."""
    run_keys = keys.make(scratch / "keys") if with_ssh else None
    image = initramfs.assemble(spec.vm, run_keys, scratch, with_ssh=with_ssh)
    console_log = out_dir / "console.log"
    vm = qemu.boot(spec.vm, kb.bzimage, image, console_log, spec.timeouts.boot, with_ssh)
    with vm:
        (out_dir / "qemu.pid").write_text(f"{vm.pid}\n")
        log.info("boot: %s in %.1f s under %s (console: %s)",
                 "ready" if vm.ready.kind == "marker" else vm.ready.kind, vm.boot_seconds,
                 vm.accel.upper(), console_log)
        yield vm


def guest_shell(vm: qemu.Vm) -> GuestShell:
    """SSH into a booted guest; a guest that never got ready is a BootError."""
    if vm.ready.kind != "marker":
        crashes = oops.find_crashes(vm.console.lines())
        what = f"the kernel crashed: {crashes[0].title}" if crashes else f"boot ended by {vm.ready.kind}"
        raise BootError(f"the guest did not get ready ({what})\nlast console lines:\n{vm.console.tail()}")
    return GuestShell.connect(vm.ssh_port, vm.image.keys, SSH_CONNECT_S, vm.console.tail)


def metadata(spec: Spec, kb: kbuild.KernelBuild, vm: qemu.Vm, timings: dict) -> dict:
    started = datetime.now(timezone.utc) - timedelta(seconds=timings["total"])
    return {
        "started": started.isoformat(timespec="microseconds"),
        "kernel": {"version": kb.source.version, "release": kb.release, "origin": kb.source.origin,
                   "commit": kb.source.commit, "patches": [str(p) for p in kb.source.patches],
                   "patchset_hash": kcidb.patchset_hash(list(kb.source.patches)),
                   "configs": [str(c) for c in spec.kernel.configs], "compiler": kcidb.compiler(kb.config_path),
                   "config_hash": cache.digest(kb.config_path.read_bytes())},
        "vm": {"accel": vm.accel, "cpus": spec.vm.cpus, "swap_mib": spec.vm.swap_mib,
               "numa": [asdict(n) for n in spec.vm.numa], "distances": spec.vm.distances},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


def run_group(spec: Spec, vm: qemu.Vm, shell: GuestShell, group: str | ScriptGroup | SelftestGroup,
              assets: Assets, out_dir: Path) -> testrun.GroupRun:
    if group == kselftest.NAME or isinstance(group, SelftestGroup):
        return kselftest.run(vm, shell, assets.kselftest, out_dir, spec.timeouts.test)
    if group == "module":
        if isinstance(assets.module, BuildError):
            return testrun.GroupRun(testrun.not_run("module", str(assets.module)), "done")
        return testrun.run_module(vm, shell, assets.module, out_dir, spec.timeouts.test)
    if group == "workload":
        group = ScriptGroup("workload", assets.workload)
    return testrun.run_script(vm, shell, group, out_dir, group.timeout or spec.timeouts.test)


def run_in_guest(spec: Spec, vm: qemu.Vm, groups: list[str | ScriptGroup], assets: Assets,
                 out_dir: Path) -> tuple[list[TestResult], str]:
    """Run groups over SSH until one crashes or hangs the guest.

    Returns their results and how the last one ended ("done", "crash", "hang")."""
    results: list[TestResult] = []
    with guest_shell(vm) as shell:
        for group in groups:
            ran = run_group(spec, vm, shell, group, assets, out_dir)
            results.append(ran.result)
            if ran.ended != "done":
                return results, ran.ended
    return results, "done"


def run(spec: Spec, out_dir: Path) -> RunResult:
    """The whole run; artifacts land in out_dir. Raises HarnessError (exit 2).

    A crash or hang stops the VM. With `after_crash: reboot` in the spec the
    guest is booted again for the groups left; otherwise they are errors."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "console.log").unlink(missing_ok=True)
    with scratch_dir() as scratch:
        return _run(spec, out_dir, scratch)


def _run(spec: Spec, out_dir: Path, scratch: Path) -> RunResult:
    started = time.monotonic()
    kb, assets = prepare(spec, out_dir, scratch)
    timings = {"build": time.monotonic() - started, "boot": 0.0, "tests": 0.0}
    pending = [g for g in spec.tests if g != "boot"]
    groups: list[TestResult] = []
    while True:
        with booted(spec, kb, out_dir, scratch) as vm:
            timings["boot"] += vm.boot_seconds
            timings.setdefault("boot_to_first_result", vm.first_result_seconds or 0.0)
            boot = testrun.boot_group(vm, spec.timeouts.boot)
            boot_crashes = [c for c in oops.find_crashes(vm.console.lines())
                            if c.first_line > vm.console.start_line]
            clean = vm.ready.kind == "marker" and not boot_crashes
            if not groups:
                groups.append(testrun.attach_crashes(boot, boot_crashes))
            if not clean or not pending:
                break
            tests_started = time.monotonic()
            results, ended = run_in_guest(spec, vm, pending, assets, out_dir)
            timings["tests"] += time.monotonic() - tests_started
            groups += results
            pending = pending[len(results):]
            vm.console.drain(0.3)
        if ended == "done" or not pending or spec.after_crash != "reboot":
            break
        log.info("the kernel %s: booting again for %d group(s) left",
                 "crashed" if ended == "crash" else "hung", len(pending))
    why = ("not run: the boot did not finish cleanly" if not clean
           else "not run: an earlier group crashed or hung the kernel")
    groups += [testrun.not_run(g if isinstance(g, str) else g.name, why) for g in pending]
    crashes = oops.find_crashes(vm.console.lines())
    timings["total"] = time.monotonic() - started
    result = RunResult(metadata(spec, kb, vm, timings), tuple(groups), tuple(crashes))
    report.write_all(result, out_dir)
    return result
