"""Test-run stage: run each test group in the booted guest and collect its KTAP.

The boot group is read from the serial console. A script group (the
workload is one) is pushed over SFTP and run over SSH; its stdout (KTAP) is
written to OUT/<group>.ktap as it arrives and echoed as live progress. The
module group is loaded with insmod and read from the console. While a group
runs the serial console is read without pause, so a kernel crash ends the
group at once, and a group that outlives its timeout is a hang: the guest's
blocked tasks are dumped (sysrq w) into OUT/hang-<group>.txt. Hands on one
TestResult per group plus how the group ended.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.results import ktap, oops
from harness.results.model import CrashReport, Status, TestResult
from harness.spec import ScriptGroup
from harness.vm import qemu
from harness.vm.ssh import CommandResult, GuestShell

log = logging.getLogger("harness")
GUEST_DIR = "/tmp/harness"
DUMP_WAIT_S = 3  # for the sysrq dump to reach the console


@dataclass(frozen=True)
class GroupRun:
    result: TestResult
    ended: str  # "done", "crash" (kernel crashed; QEMU may be gone) or "hang"


class _Progress:
    """Collects a group's stdout: to its .ktap file, to the terminal, with arrival times."""

    def __init__(self, group: str, path: Path):
        self.group, self.file, self.start = group, path.open("wb", buffering=0), time.monotonic()
        self.pending, self.arrivals, self.line_no = b"", {}, 0

    def __call__(self, chunk: bytes) -> None:
        self.file.write(chunk)
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        for raw in lines:
            self.line_no += 1
            now = time.monotonic() - self.start
            self.arrivals[self.line_no] = now
            text = raw.decode(errors="replace").rstrip()
            if text.lstrip().startswith(("ok ", "not ok ")):
                log.info("%s [%6.1f s] %s", self.group, now, text.strip())
            elif text.lstrip().startswith("# Subtest: "):  # which test runs now
                log.info("%s [%6.1f s] running %s", self.group, now, text.split(": ", 1)[1])

    def close(self) -> None:
        self.file.close()


def _with_durations(test: TestResult, arrivals: dict[int, float], since: float = 0.0) -> TestResult:
    """A leaf's duration is the time between the previous result line and its own."""
    subtests, previous = [], since
    for sub in test.subtests:
        sub = _with_durations(sub, arrivals, previous)
        subtests.append(sub)
        if sub.line in arrivals:
            previous = arrivals[sub.line]
    own = arrivals.get(test.line) if test.line else None
    duration = round(own - since, 3) if own is not None and not test.subtests else test.duration_s
    return dataclasses.replace(test, subtests=tuple(subtests), duration_s=duration)


def _blame_first_missing(group: TestResult, why: str, directive: str | None,
                         crash: CrashReport | None) -> TestResult:
    """The first test that never reported was the one running: it failed with `why`."""
    subtests, blamed = list(group.subtests), False
    for i, sub in enumerate(subtests):
        if sub.status is Status.ERROR and not blamed and any(d.startswith("missing") for d in sub.diagnostics):
            subtests[i] = dataclasses.replace(sub, status=Status.FAIL, directive=directive, crash=crash,
                                              diagnostics=(why,))
            blamed = True
    diagnostics = group.diagnostics + (() if blamed else (why,))
    return dataclasses.replace(group, status=Status.FAIL, subtests=tuple(subtests), crash=crash,
                               diagnostics=diagnostics)


def group_from_console(lines: list[tuple[int, str]], name: str) -> TestResult | None:
    """The KTAP document on the console that says '# Subtest: NAME', parsed."""
    for document in ktap.split_documents(lines):
        if any(ktap.strip_console_prefix(text).strip() == f"# Subtest: {name}" for _, text in document):
            return ktap.parse_ktap(document, name)
    return None


def boot_group(vm: qemu.Vm, timeout: float) -> TestResult:
    group = group_from_console(vm.console.lines(), "boot")
    if vm.ready.kind == "marker" and group is not None:
        return group
    why = {"crash": "the kernel crashed during boot", "exit": "QEMU exited during boot",
           "timeout": f"the guest was not ready within {timeout:.0f} s"}.get(vm.ready.kind, "no boot checks printed")
    if group is None:
        return not_run("boot", why)
    return TestResult(group.name, Status.ERROR, group.diagnostics + (why,), group.directive, group.subtests,
                      line=group.line)


def attach_crashes(group: TestResult, crashes: list) -> TestResult:
    """A crash fails the group that was running; it is kept in its diagnostics."""
    if not crashes:
        return group
    titles = tuple(f"kernel crash: {c.title} (console.log:{c.first_line})" for c in crashes)
    status = Status.ERROR if group.status is Status.ERROR else Status.FAIL
    return TestResult(group.name, status, group.diagnostics + titles, group.directive, group.subtests,
                      group.duration_s, crashes[0], group.line)


def not_run(name: str, why: str) -> TestResult:
    return TestResult(name=name, status=Status.ERROR, diagnostics=(why,))


def _dump_blocked_tasks(vm: qemu.Vm, shell: GuestShell, out: Path, group: str, since_line: int) -> Path:
    """sysrq w (blocked tasks) on a channel of its own; the console shows the dump."""
    try:
        shell.run("echo w > /proc/sysrq-trigger", timeout=DUMP_WAIT_S)
    except Exception as e:  # noqa: BLE001 - a hung guest may refuse SSH too; keep going
        log.warning("%s: could not ask the guest for its blocked tasks: %s", group, e)
    vm.console.drain(DUMP_WAIT_S)
    dump = out / f"hang-{group}.txt"
    dump.write_text("\n".join(text for n, text in vm.console.lines() if n > since_line) + "\n")
    return dump


def run_watched(vm: qemu.Vm, shell: GuestShell, command: str, timeout: float, on_stdout=None,
                before_stop=None) -> tuple[str, CommandResult, Path | None]:
    """Run `command` over SSH while the console is read (and logged) without pause.

    Returns how it ended ("done", "crash" or "hang"), the command's result,
    and what `before_stop(kind, console_line)` returned: it runs before a
    crashed or hung VM is stopped (the SSH command ends with the VM)."""
    console_start = vm.console.line_count()
    kept = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(shell.run, command, timeout, on_stdout)
        watch = vm.console.wait_for(None, timeout + 5, until=future.done)
        kind = {"marker": "done", "timeout": "hang"}.get(watch.kind, "crash")
        if kind == "done" and future.result().timed_out:
            kind = "hang"
        if kind != "done":
            kept = before_stop(kind, console_start) if before_stop else None
            vm.stop()
        result = future.result()
    vm.console.drain(0.2)  # what the kernel printed as the command ended
    return kind, result, kept


def _dumper(vm: qemu.Vm, shell: GuestShell, out: Path, name: str):
    """For run_watched: a hung group's blocked-task dump."""
    def dump(kind: str, since_line: int) -> Path | None:
        return _dump_blocked_tasks(vm, shell, out, name, since_line) if kind == "hang" else None
    return dump


def _ended_badly(result: TestResult, kind: str, vm: qemu.Vm, since_line: int, timeout: float,
                 dump: Path | None) -> TestResult:
    """Blame the test that was running for the hang or crash that ended its group."""
    if kind == "hang":
        why = f"hang: no result within {timeout:.0f} s; blocked tasks in {dump.name}"
        return _blame_first_missing(result, why, "TIMEOUT", None)
    crashes = [c for c in oops.find_crashes(vm.console.lines()) if c.first_line > since_line]
    crash = crashes[0] if crashes else None
    why = f"kernel crash: {crash.title} (console.log:{crash.first_line})" if crash else "QEMU exited"
    return _blame_first_missing(result, why, None, crash)


def _parse(lines: list[tuple[int, str]], name: str, where: str) -> TestResult:
    try:
        return ktap.parse_ktap(lines, name)
    except ktap.KtapError:
        return TestResult(name, Status.ERROR, (f"no KTAP output in {where}",))


def timed(run):
    """Record how long a group ran as the group's own duration."""
    def wrapper(*args, **kwargs) -> GroupRun:
        start = time.monotonic()
        ran = run(*args, **kwargs)
        took = round(time.monotonic() - start, 2)
        return GroupRun(dataclasses.replace(ran.result, duration_s=took), ran.ended)
    return wrapper


@timed
def run_script(vm: qemu.Vm, shell: GuestShell, group: ScriptGroup, out: Path, timeout: float) -> GroupRun:
    """Push and run one script group; its stdout is the KTAP."""
    shell.run(f"mkdir -p {GUEST_DIR}", timeout=30)
    remote = f"{GUEST_DIR}/{group.script.name}"
    shell.put(group.script, remote, mode=0o755)
    since = vm.console.line_count()
    progress = _Progress(group.name, out / f"{group.name}.ktap")
    log.info("%s: running %s (timeout %.0f s)", group.name, group.script.name, timeout)
    kind, command, dump = run_watched(vm, shell, f"cd {GUEST_DIR} && {remote}", timeout, progress,
                                      _dumper(vm, shell, out, group.name))
    progress.close()
    lines = list(enumerate((out / f"{group.name}.ktap").read_text(errors="replace").splitlines(), 1))
    result = _with_durations(_parse(lines, group.name, "its stdout"), progress.arrivals)
    if kind != "done":
        return GroupRun(_ended_badly(result, kind, vm, since, timeout, dump), kind)
    if command.status != 0 and result.status is Status.PASS:
        result = dataclasses.replace(result, status=Status.FAIL,
                                     diagnostics=result.diagnostics + (f"exit status {command.status}",))
    if command.stderr.strip():
        stderr = "stderr: " + command.stderr.strip()[-500:]
        result = dataclasses.replace(result, diagnostics=result.diagnostics + (stderr,))
    return GroupRun(result, "done")


def _regroup(name: str, subtests: list[TestResult], diagnostics: tuple[str, ...] = ()) -> TestResult:
    """A group whose status follows its leaves (worst wins)."""
    leaves = [leaf for sub in subtests for leaf in sub.leaves()]
    if any(leaf.status is Status.FAIL for leaf in leaves):
        status = Status.FAIL
    elif any(leaf.status is Status.ERROR for leaf in leaves):
        status = Status.ERROR
    else:
        status = Status.PASS
    return TestResult(name, status, diagnostics, subtests=tuple(subtests))


def _check(name: str, ok: bool, diagnostic: str) -> TestResult:
    return TestResult(name, Status.PASS if ok else Status.FAIL, (diagnostic,))


ISOLATED = ("nr_isolated_anon", "nr_isolated_file")
SUITE_END = r"^\S*(?:\[[^\]]*\] ?)*(?:not )?ok \d+ migrate_pages\b"  # the module's last KTAP line


def _isolated(shell: GuestShell) -> dict[str, int]:
    # stat_refresh folds the per-CPU deltas in, so the counters are exact
    output = shell.run("echo 1 > /proc/sys/vm/stat_refresh 2>/dev/null; cat /proc/vmstat", timeout=30).stdout
    values = dict(line.split() for line in output.splitlines() if line.split()[0] in ISOLATED)
    return {k: int(v) for k, v in values.items()}


@timed
def run_module(vm: qemu.Vm, shell: GuestShell, ko: Path, out: Path, timeout: float) -> GroupRun:
    """insmod the test module, read its KTAP live from the console, cross-check
    it with dmesg over SSH, unload it, and check nothing stayed isolated."""
    shell.run(f"mkdir -p {GUEST_DIR}", timeout=30)
    remote = f"{GUEST_DIR}/{ko.name}"
    shell.put(ko, remote)
    before = _isolated(shell)
    since = vm.console.line_count()
    log.info("module: loading %s (timeout %.0f s)", ko.name, timeout)
    kind, command, dump = run_watched(vm, shell, f"insmod {remote}", timeout, None,
                                      _dumper(vm, shell, out, "module"))
    if kind == "done" and command.status != 0:
        message = (command.stderr or command.stdout).strip() or f"exit status {command.status}"
        return GroupRun(TestResult("module", Status.ERROR, (f"insmod failed: {message}",)), "done")
    if kind == "done":  # insmod returned after init: the console may still be printing
        vm.console.wait_for(SUITE_END, timeout=10)
    console = [(n, text) for n, text in vm.console.lines() if n > since]
    documents = ktap.split_documents(console)
    result = _parse(documents[0] if documents else console, "module", "the kernel log")
    if kind != "done":
        return GroupRun(_ended_badly(result, kind, vm, since, timeout, dump), kind)
    dmesg = shell.run("dmesg", timeout=30).stdout.splitlines()
    dmesg_docs = ktap.split_documents(list(enumerate(dmesg, 1)))
    seen = _parse(dmesg_docs[-1], "module", "dmesg") if dmesg_docs else None
    same = seen is not None and [(t.name, t.status) for t in seen.leaves()] == \
        [(t.name, t.status) for t in result.leaves()]
    unload = shell.run(f"rmmod {ko.stem}", timeout=60)
    after = _isolated(shell)
    checks = [
        _check("console_matches_dmesg", same, "the results on the serial console and in dmesg "
               + ("agree" if same else "differ")),
        _check("unload", unload.status == 0, f"rmmod: {(unload.stderr or 'ok').strip()}"),
        _check("isolated_counters_restored", after == before, f"before load {before}, after unload {after}"),
    ]
    return GroupRun(_regroup("module", list(result.subtests) + checks, result.diagnostics), "done")
