"""Faults and bad input as a user meets them (issue 17): real signals, real
processes, a real full or read-only filesystem. Every harness a test starts
is ended, and its QEMU checked gone, when the test ends (`start_harness`)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, harness, process_gone, qemu_pid

from harness.results.report import REPORTS

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
