"""Faults and bad input as a user meets them (issue 17): real signals, real
processes, a real full or read-only filesystem. Every harness a test starts
is ended, and its QEMU checked gone, when the test ends (`start_harness`)."""
from __future__ import annotations

import json
import signal
import time

import pytest
from conftest import process_gone, qemu_pid

pytestmark = pytest.mark.integration

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
