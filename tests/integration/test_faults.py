"""Faults and bad input as a user meets them (issue 17): real signals, real
processes, a real full or read-only filesystem. Every harness a test starts
is ended, and its QEMU checked gone, when the test ends (`start_harness`)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, harness, process_gone, qemu_pid

from harness import cache
from harness.results.ktap import MAX_DIAGNOSTICS
from harness.results.report import REPORTS
from harness.vm import qemu

sys.path.insert(0, str(REPO / "bench"))
from group_memory import chatty_script, peak_rss  # noqa: E402

pytestmark = pytest.mark.integration
DATA = REPO / "tests" / "unit" / "data"

SLOW_SCRIPT = """#!/bin/sh
echo "KTAP version 1"
echo "1..2"
echo "ok 1 first"
echo harness-slow-script-started > /dev/console
sleep 100
echo "ok 2 second"
"""


@pytest.mark.parametrize("signum, code, said", [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),
])
def test_signal_during_a_group_stops_within_5_s_with_reports(default_kernel, tmp_path, start_harness,
                                                            signum, code, said):
    """Started from a parent that ignores SIGINT (a background job of a script):
    the harness must still take Ctrl-C, and not wait for the guest command."""
    script = tmp_path / "slow.sh"
    script.write_text(SLOW_SCRIPT)
    spec = tmp_path / "spec.yaml"
    spec.write_text("tests: [boot, {name: slow, script: slow.sh, timeout: 120}, module]\n")
    out = tmp_path / "out"
    started = start_harness(out, "run", "--spec", str(spec), ignore_sigint=True)
    started.wait_for(out / "console.log", "harness-slow-script-started")
    sent = time.monotonic()
    started.proc.send_signal(signum)
    _, stderr = started.proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert started.proc.returncode == code, stderr
    assert took <= 5, f"exited {took:.1f} s after the signal"
    assert said in stderr and "Traceback" not in stderr, stderr
    assert process_gone(qemu_pid(out))
    groups = {g["name"]: g for g in json.loads((out / "results.json").read_text())["groups"]}
    assert groups["boot"]["status"] == "pass"
    assert groups["slow"]["status"] == "error" and "interrupted" in groups["slow"]["diagnostics"][0]
    assert groups["module"]["status"] == "error" and "interrupted" in groups["module"]["diagnostics"][0]
    assert "interrupted" in (out / "summary.txt").read_text()
    assert "slow" in (out / "junit.xml").read_text()


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m", read_only: bool = False) -> Iterator[Path]:
    """A real small filesystem (we are root here), unmounted whatever happens."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if read_only else ""), "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(fs: Path, leave_kib: int) -> None:
    """Fill `fs` up to `leave_kib` KiB free."""
    st = os.statvfs(fs)
    (fs / "filler").write_bytes(bytes(st.f_bavail * st.f_frsize - leave_kib * 1024))


def exits_2(result: subprocess.CompletedProcess, *culprits: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    for culprit in culprits:
        assert culprit in result.stderr, result.stderr


SPECS = {
    "non-utf8": (b"vm: {append: 'caf\xe9'}\n", ["latin1.yaml", "line 1", "not UTF-8"]),
    "swap": (b"vm: {swap: -1}\n", ["vm.swap", "'-1' is not a positive"]),
    "mem": (b"vm: {memory: 2G, numa: [{mem: -1, cpus: 0}, {mem: 1G, cpus: 1}]}\n",
            ["vm.numa[0].mem", "'-1' is not a positive"]),
    "zero cpus": (b"vm: {cpus: 0}\n", ["vm.cpus"]),
}


@pytest.mark.parametrize("case", SPECS)
def test_bad_sizes_and_bytes_in_a_spec_exit_2(tmp_path, case):
    text, culprits = SPECS[case]
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes(text)
    exits_2(harness("run", "--spec", str(spec), "--out", str(tmp_path / "out"), timeout=120), *culprits)


def test_out_on_a_read_only_filesystem_exits_2(tmp_path):
    with tmpfs(tmp_path / "ro", read_only=True) as ro:
        exits_2(harness("run", "--out", str(ro / "out"), timeout=120), str(ro / "out"), "Read-only file system")
        bisect = harness("run", "--bisect-exit-codes", "--out", str(ro / "out"), timeout=120)
        assert bisect.returncode == 255 and "Traceback" not in bisect.stderr, bisect.stderr


def test_out_naming_a_file_exits_2(tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    exits_2(harness("run", "--out", str(tmp_path / "afile"), timeout=120), str(tmp_path / "afile"), "not a directory")
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_disk_full_while_writing_the_build_artifacts_exits_2(default_kernel, tmp_path):
    with tmpfs(tmp_path / "full") as full:
        fill(full, leave_kib=40)  # the .config copy (~200 KiB) does not fit
        exits_2(harness("build", "--out", str(full / "out")), "no space left on the device")
        bisect = harness("run", "--bisect-exit-codes", "--out", str(full / "out"))
        assert bisect.returncode == 255 and "Traceback" not in bisect.stderr, bisect.stderr


@pytest.mark.parametrize("args", [["--spec", "broken.yaml"], ["--spec", "swap.yaml"]])
def test_a_reused_out_never_keeps_the_previous_verdict(tmp_path, args):
    out = tmp_path / "out"
    passed = harness("report", "--merge", str(DATA / "kcidb" / "pass"), "--out", str(out), timeout=60)
    assert passed.returncode == 0 and json.loads((out / "results.json").read_text())["ok"]
    (tmp_path / "broken.yaml").write_text("vm: [\n")
    (tmp_path / "swap.yaml").write_text("vm: {swap: -1}\n")
    failed = harness("run", *[str(tmp_path / a) if a.endswith(".yaml") else a for a in args], "--out", str(out),
                     timeout=120)
    assert failed.returncode == 2, failed.stderr
    assert sorted(p.name for p in out.iterdir() if p.name in REPORTS) == []


def test_a_chatty_group_streams_to_disk_with_bounded_memory_and_diagnostics(default_kernel, tmp_path):
    """A guest program printing 50 MB: every line lands in its .ktap file, the
    reports keep MAX_DIAGNOSTICS per test and say how many were dropped, and
    the harness's own memory does not grow with the output (bench/group_memory.py
    measures it: 364 MiB peak before streaming, the harness alone is ~70 MiB)."""
    done, peak_mib = peak_rss(tmp_path, megabytes=50, timeout=1200)
    assert done.returncode == 1, done.stderr[-3000:]  # its chatty test fails, to reach junit.xml
    out = tmp_path / "out"
    lines = (out / "chatty.ktap").read_bytes().split(b"\n")
    line = b"# a diagnostic line the guest prints again and again, sixty-four"
    printed = -(-50_000_000 // (len(line) + 1))  # `head -c` cuts the last one short
    assert sum(1 for x in lines if x == line) == printed - 1 and lines[-4].startswith(b"# a diag")
    assert lines[-3:] == [b"not ok 1 chatty", b"ok 2 after", b""]
    chatty = json.loads((out / "results.json").read_text())["groups"][0]["subtests"][0]
    dropped = printed - MAX_DIAGNOSTICS
    assert len(chatty["diagnostics"]) == MAX_DIAGNOSTICS + 1
    assert chatty["diagnostics"][MAX_DIAGNOSTICS // 2] == (
        f"... {dropped} more diagnostic lines dropped (see chatty.ktap)")
    assert f"{dropped} more diagnostic lines dropped" in (out / "junit.xml").read_text()
    assert peak_mib < 128, f"the harness peaked at {peak_mib:.0f} MiB for 50 MB of output"


def test_qemu_killed_from_outside_is_an_infrastructure_failure(default_kernel, tmp_path, start_harness):
    """kill -9 of QEMU during a group: exit 2 saying so, not a failure of the
    test that was running; the reports hold what finished, the rest as errors."""
    (tmp_path / "slow.sh").write_text(SLOW_SCRIPT)
    spec = tmp_path / "spec.yaml"
    spec.write_text("tests: [boot, {name: slow, script: slow.sh, timeout: 120}, module]\n")
    out = tmp_path / "out"
    started = start_harness(out, "run", "--spec", str(spec))
    started.wait_for(out / "console.log", "harness-slow-script-started")
    pid = qemu_pid(out)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, stderr = started.proc.communicate(timeout=60)
    assert started.proc.returncode == 2, stderr
    assert "Traceback" not in stderr and stderr.count("harness: error") == 1, stderr
    assert "QEMU was killed (signal 9, SIGKILL) during group slow" in stderr, stderr
    groups = {g["name"]: g for g in json.loads((out / "results.json").read_text())["groups"]}
    assert groups["boot"]["status"] == "pass"
    first, second = groups["slow"]["subtests"]
    assert first["status"] == "pass" and second["status"] == "error"
    assert second["diagnostics"] == ["not run: QEMU was killed (signal 9, SIGKILL) during group slow"]
    assert groups["module"]["status"] == "error" and "QEMU was killed" in groups["module"]["diagnostics"][0]
    assert "QEMU was killed" in (out / "summary.txt").read_text()
    assert "QEMU was killed" in (out / "junit.xml").read_text()


BRIEF_SCRIPT = SLOW_SCRIPT.replace("sleep 100", "sleep 5")


@pytest.mark.parametrize("crashes", [1, 2])
def test_qemu_crashing_itself_during_a_group_runs_the_group_again(default_kernel, tmp_path, start_harness, crashes):
    """QEMU's own crash (a real SIGSEGV) during a group decides nothing: the group runs
    again on a fresh boot, and the run gives its verdict; a second crash is exit 2, with
    the tests that did not finish as errors that say so."""
    (tmp_path / "slow.sh").write_text(BRIEF_SCRIPT)
    spec = tmp_path / "spec.yaml"
    spec.write_text("vm: {accel: tcg}\ntests: [boot, {name: slow, script: slow.sh, timeout: 120}, module]\n")
    out = tmp_path / "out"
    started = start_harness(out, "run", "--spec", str(spec))
    for crash in range(1, crashes + 1):
        started.wait_for(out / "console.log", "harness-slow-script-started", count=crash)
        pid = qemu_pid(out)
        assert pid is not None
        os.kill(pid, signal.SIGSEGV)
    _, stderr = started.proc.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr
    said = "QEMU itself crashed (signal 11, SIGSEGV) during group slow"
    assert f"{said}; not a verdict on the kernel: booting again to run it again" in stderr, stderr
    console = (out / "console.log").read_text()
    assert console.count("harness-slow-script-started") == crashes + (crashes == 1)
    assert f"[harness] {said}; booting again" in console
    groups = {g["name"]: g for g in json.loads((out / "results.json").read_text())["groups"]}
    assert groups["boot"]["status"] == "pass"
    if crashes == 1:
        assert started.proc.returncode == 0, stderr
        assert groups["slow"]["status"] == "pass" and groups["module"]["status"] == "pass", groups
        return
    assert started.proc.returncode == 2 and stderr.count("harness: error") == 1, stderr
    assert (f"{said}: an infrastructure failure, not a verdict on the kernel, the second time in this run; "
            "the tests that finished are in") in stderr, stderr
    first, second = groups["slow"]["subtests"]
    assert first["status"] == "pass" and second["status"] == "error"
    assert second["diagnostics"] == [f"not run: {said}"]
    assert groups["module"]["status"] == "error" and said in groups["module"]["diagnostics"][0]


@pytest.mark.parametrize("signum, said", [
    (signal.SIGKILL, "QEMU was killed (signal 9, SIGKILL) during 'echo exec-started > /dev/console; sleep 60', "
                     "from outside the harness"),
    (signal.SIGSEGV, "QEMU itself crashed (signal 11, SIGSEGV) during 'echo exec-started > /dev/console; sleep 60': "
                     "an infrastructure failure"),
])
def test_qemu_ended_by_a_signal_during_boot_exec_is_an_infrastructure_failure(default_kernel, tmp_path,
                                                                                start_harness, signum, said):
    """`boot --exec`: QEMU killed, or crashing by itself, under the command is exit 2, not the command's failure."""
    out = tmp_path / "out"
    started = start_harness(out, "boot", "--exec", "echo exec-started > /dev/console; sleep 60")
    started.wait_for(out / "console.log", "exec-started")
    pid = qemu_pid(out)
    assert pid is not None
    os.kill(pid, signum)
    _, stderr = started.proc.communicate(timeout=60)
    assert started.proc.returncode == 2 and "Traceback" not in stderr, stderr
    assert said in stderr, stderr


def _child_qemu(harness_pid: int, not_pid: int | None = None, timeout: float = 30) -> int:
    """The QEMU the harness started (its child; not `not_pid`, an earlier one), found
    before the harness names it in qemu.pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{harness_pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                if int(pid) != not_pid and Path(f"/proc/{pid}/comm").read_text().startswith("qemu-system"):
                    return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no QEMU among the children of {harness_pid}")


def _signal_boots(tmp_path: Path, start_harness: Any, signum: int, boots: int,
                  spec_text: str = "vm: {accel: tcg}\n") -> tuple[Path, int, str]:
    """A TCG run whose QEMU gets `signum` while the kernel boots, `boots` boots in a row;
    the KVM verdicts must not change (a probe that sees a killed QEMU must not take KVM
    for broken). Returns out, the exit code and stderr."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    out = tmp_path / "out"
    started = start_harness(out, "run", "--spec", str(spec))
    verdicts = {p: p.read_text() for p in (cache.root() / "accel").glob("*.json")}
    pid = None
    for boot in range(boots):
        started.wait_for(out / "console.log", "Linux version" if boot == 0 else "booting again")
        pid = _child_qemu(started.proc.pid, not_pid=pid)
        started.wait_for(out / "console.log", "Linux version", count=boot + 1)
        os.kill(pid, signum)
    _, stderr = started.proc.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr
    assert {p: p.read_text() for p in (cache.root() / "accel").glob("*.json")} == verdicts
    return out, started.proc.returncode, stderr


def test_qemu_killed_during_boot_is_an_infrastructure_failure(default_kernel, tmp_path, start_harness):
    """A kill from outside (a user, the OOM killer) is exit 2, never a failure of the kernel, and never retried."""
    out, code, stderr = _signal_boots(tmp_path, start_harness, signal.SIGKILL, boots=1)
    assert code == 2 and stderr.count("harness: error") == 1, stderr
    assert "QEMU was killed (signal 9, SIGKILL) during group boot" in stderr, stderr
    assert "QEMU ended: signal 9, SIGKILL; the last console lines:\n" in stderr, stderr
    last = (out / "console.log").read_text().rstrip().splitlines()[-1].rstrip("\r")
    assert last in stderr  # the console's tail, for a CI log that keeps no files
    boot = json.loads((out / "results.json").read_text())["groups"][0]
    assert boot["name"] == "boot" and boot["status"] == "error", boot


def test_qemu_crashing_itself_during_boot_is_booted_again(default_kernel, tmp_path, start_harness):
    """QEMU's own crash (a QEMU bug: a real SIGSEGV) before any test ran decides nothing:
    the harness says so, boots again, and the run gives its verdict."""
    out, code, stderr = _signal_boots(tmp_path, start_harness, signal.SIGSEGV, boots=1)
    assert code == 0, stderr
    assert ("QEMU itself crashed while the guest booted under TCG (signal 11, SIGSEGV); not a verdict on "
            "the kernel: booting again (attempt 2 of 2)") in stderr, stderr
    console = (out / "console.log").read_text()
    assert console.count("Linux version") == 2 and "[harness] QEMU itself crashed" in console
    assert all(g["status"] == "pass" for g in json.loads((out / "results.json").read_text())["groups"])


def test_qemu_crashing_itself_on_every_boot_is_an_infrastructure_failure(default_kernel, tmp_path, start_harness):
    out, code, stderr = _signal_boots(tmp_path, start_harness, signal.SIGSEGV, boots=qemu.BOOT_ATTEMPTS)
    assert code == 2 and stderr.count("harness: error") == 1, stderr
    assert ("QEMU itself crashed while the guest booted under TCG (signal 11, SIGSEGV), 2 boots in a row: "
            "an infrastructure failure, not a verdict on the kernel") in stderr, stderr
    last = (out / "console.log").read_text().rstrip().splitlines()[-1].rstrip("\r")
    assert last in stderr


STALLING = "vm: {accel: tcg}\ntimeouts: {boot: 20}\n"
STALLED = "the guest stalled while booting under TCG: not ready within 20 s, not a console line for the last"


def test_a_boot_that_stalls_silently_is_booted_again(default_kernel, tmp_path, start_harness):
    """A QEMU that stops running the guest (SIGSTOP: silent, as QEMU 7.2's TCG once stalled in
    CI) is no verdict: the harness boots again and the run gives its verdict."""
    out, code, stderr = _signal_boots(tmp_path, start_harness, signal.SIGSTOP, boots=1, spec_text=STALLING)
    assert code == 0, stderr
    assert STALLED in stderr and "; not a verdict on the kernel: booting again (attempt 2 of 2)" in stderr, stderr
    console = (out / "console.log").read_text()
    assert console.count("Linux version") == 2 and f"[harness] {STALLED}" in console
    assert all(g["status"] == "pass" for g in json.loads((out / "results.json").read_text())["groups"])


def test_a_boot_that_stalls_every_time_is_the_kernels_hang(default_kernel, tmp_path, start_harness):
    """The second silent stall is a kernel hung at boot, as any boot that never got ready: exit 1."""
    out, code, stderr = _signal_boots(tmp_path, start_harness, signal.SIGSTOP, boots=qemu.BOOT_ATTEMPTS,
                                      spec_text=STALLING)
    assert code == 1 and "Traceback" not in stderr, stderr
    assert "s, 2 boots in a row: taken for the kernel hanging at boot" in stderr, stderr
    boot = json.loads((out / "results.json").read_text())["groups"][0]
    assert boot["name"] == "boot" and boot["status"] == "error", boot
    assert "the guest was not ready within 20 s" in boot["diagnostics"], boot


OOM_HOG = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
/* Locked memory cannot be swapped out: the guest's OOM killer has to act, and picks this. */
int main(void)
{
	FILE *adj = fopen("/proc/self/oom_score_adj", "w");
	if (adj) { fputs("1000", adj); fclose(adj); }
	printf("KTAP version 1\n1..2\n# Subtest: hog\n");
	fflush(stdout);
	if (mlockall(MCL_CURRENT | MCL_FUTURE)) { printf("not ok 1 hog # ERROR mlockall failed\n"); return 1; }
	for (;;) {
		char *p = malloc(1 << 20);
		if (!p) break;
		memset(p, 1, 1 << 20);
	}
	printf("not ok 1 hog # ERROR the allocations failed before any OOM kill\nok 2 after\n");
	return 0;
}
"""


def test_a_program_killed_by_the_oom_killer_says_so(default_kernel, tmp_path):
    source = tmp_path / "hog.c"
    source.write_text(OOM_HOG)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(tmp_path / "oom-hog"), str(source)], check=True)
    (tmp_path / "spec.yaml").write_text("tests: [{name: hog, script: oom-hog, timeout: 300}, module]\n")
    out = tmp_path / "out"
    done = harness("run", "--spec", str(tmp_path / "spec.yaml"), "--out", str(out))
    assert done.returncode == 1, done.stderr[-3000:]
    hog, after = json.loads((out / "results.json").read_text())["groups"][0]["subtests"]
    assert hog["name"] == "hog" and hog["status"] == "fail", hog
    assert hog["diagnostics"][0].startswith("killed by the OOM killer: process "), hog
    assert "(oom-hog)" in hog["diagnostics"][0] and "console.log:" in hog["diagnostics"][0]
    assert after["status"] == "error" and "OOM killer" in after["diagnostics"][0], after
    assert "killed by the OOM killer" in (out / "summary.txt").read_text()


def test_disk_full_while_writing_a_groups_ktap_exits_2_naming_it(default_kernel, tmp_path):
    (tmp_path / "chatty.sh").write_text(chatty_script(20))
    (tmp_path / "spec.yaml").write_text("tests: [{name: chatty, script: chatty.sh, timeout: 300}]\n")
    with tmpfs(tmp_path / "small", size="4m") as small:
        out = small / "out"
        done = harness("run", "--spec", str(tmp_path / "spec.yaml"), "--out", str(out))
        exits_2(done, f"no space left on the device while writing {out / 'chatty.ktap'}")
        assert process_gone(qemu_pid(out))
        bisect = harness("run", "--bisect-exit-codes", "--spec", str(tmp_path / "spec.yaml"), "--out", str(out))
        assert bisect.returncode == 255 and "Traceback" not in bisect.stderr, bisect.stderr
