"""The spine end to end: `harness run` builds (incrementally), boots a real kernel
with 2 NUMA nodes and swap under QEMU, and reports the boot checks."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET

import pytest
from conftest import BOOT_CHECKS, DATA, EXPECTED_SKIPS, REPO, harness, process_gone, qemu_pid, skips

from harness import cli
from harness.vm import qemu

pytestmark = pytest.mark.integration


def test_default_run_passes_and_writes_artifacts(default_kernel, tmp_path):
    out = tmp_path / "out"
    result = harness("run", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^(\d+) passed, 0 failed", result.stdout, re.MULTILINE)
    assert int(re.search(r"^(\d+) passed", result.stdout, re.MULTILINE).group(1)) >= 3
    suites = ET.parse(out / "junit.xml").getroot().findall("testsuite")
    boot = next(s for s in suites if s.get("name") == "boot")
    assert [case.get("name") for case in boot.findall("testcase")] == BOOT_CHECKS
    assert boot.get("failures") == "0" and boot.get("errors") == "0"
    assert skips(out) == EXPECTED_SKIPS, (out / "summary.txt").read_text()  # a skip is no pass
    console = (out / "console.log").read_text()
    assert "Linux version 6.1" in console
    # the CPUs take the preset loops_per_jiffy (qemu.preset_lpj; the kernel says so once): none
    # calibrates its delay loop (under TCG: 0.1-0.3 s per CPU, and it fails)
    assert "Calibrating delay loop (skipped) preset value" in console
    assert "calibrate_delay_direct()" not in console
    meta = json.loads((out / "results.json").read_text())["metadata"]
    assert meta["vm"]["accel"] in ("kvm", "tcg") and meta["kernel"]["version"].startswith("6.1.")
    assert process_gone(int((out / "qemu.pid").read_text()))
    # a second identical run finds nothing to build (build.log is appended to: read its part only)
    first_log = len((out / "build.log").read_text())
    again = harness("run", "--out", str(out))
    assert again.returncode == 0
    compiled = [line for line in (out / "build.log").read_text()[first_log:].splitlines()
                if re.match(r"\s+(CC|LD|AR)\s", line)]
    assert not compiled, compiled[:5]


def test_failing_check_is_counted_and_exits_1(default_kernel, tmp_path):
    spec = tmp_path / "spec.yaml"  # the kernel is told to ignore the NUMA tables QEMU gives it
    spec.write_text("vm: {append: numa=off}\n")
    out = tmp_path / "out"
    result = harness("run", "--spec", str(spec), "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "expected 2 nodes, found 1" in result.stdout
    assert re.search(r"^\d+ passed, [1-9]\d* failed", result.stdout, re.MULTILINE)
    boot = ET.parse(out / "junit.xml").getroot().find("testsuite[@name='boot']")
    failed = {c.get("name") for c in boot.findall("testcase") if c.find("failure") is not None}
    assert "numa_nodes_online" in failed and "swap_active" not in failed


def test_without_the_scratch_disk_the_run_fails_and_says_why(default_kernel, tmp_path, monkeypatch):
    """The harness stops attaching the scratch disk (a profile without its -drive line):
    the boot check fails, and the ext4 case's skip is no pass."""
    text = qemu.PROFILE.read_text()
    profile = tmp_path / "no-scratch.j2"
    profile.write_text("".join(line for line in text.splitlines(True) if "{{ scratch_disk }}" not in line))
    assert profile.read_text() != text
    monkeypatch.setattr(qemu, "PROFILE", profile)
    out = tmp_path / "out"
    assert cli.main(["run", "--out", str(out)]) == 1
    assert "-drive" in (out / "qemu.cmdline").read_text() and "scratch.img" not in (out / "qemu.cmdline").read_text()
    summary = (out / "summary.txt").read_text().replace("\n    ", " ")  # wrapped entries as one line
    assert "FAIL boot: scratch_mounted: scratch disk /dev/vdb (no block device) on /mnt/scratch: expected ext4, " \
           "found not mounted" in summary, summary
    assert "cannot mount the scratch disk /dev/vdb" in (out / "console.log").read_text()
    assert skips(out) == ["workload.file_pages_ext4"]
    assert re.search(r"^SKIP workload: file_pages_ext4: \S", summary, re.MULTILINE), summary  # with its reason


def test_patch_is_applied_to_a_private_copy_and_booted(default_kernel, tmp_path):
    from harness.kernel.source import debian_tree
    pristine = debian_tree("linux-source-6.1") / "mm/migrate.c"
    before = pristine.read_bytes()
    out = tmp_path / "out"
    result = harness("run", "--patch", str(DATA / "migrate-marker.patch"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "harness-marker: this kernel has the patched mm/migrate.c" in (out / "console.log").read_text()
    assert pristine.read_bytes() == before


@pytest.mark.parametrize("args, culprit", [
    (["--source", "/no/such/kernel"], "/no/such/kernel does not exist"),
    (["--patch", str(DATA / "does-not-apply.patch")], "does-not-apply.patch does not apply: mm/migrate.c: hunk #1"),
    (["--config", str(DATA / "unknown-symbol.config")], "CONFIG_DOES_NOT_EXIST=y (unknown-symbol.config, line 2)"),
    (["--spec", str(DATA / "broken.yaml")], "broken.yaml, line 5, column 1: YAML syntax error: expected ',' or ']'"),
    (["--spec", str(DATA / "memory-mismatch.yaml")], "does not add up"),
])
def test_bad_input_exits_2_naming_the_culprit(tmp_path, args, culprit):
    result = harness("run", *args, "--out", str(tmp_path / "out"), timeout=600)
    assert result.returncode == 2, result.stdout + result.stderr
    assert culprit in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out" / "qemu.pid").exists()


def test_guest_that_never_gets_ready_is_stopped(default_kernel, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("vm: {accel: tcg}\ntimeouts: {boot: 0.2}\n")
    out = tmp_path / "out"
    result = harness("run", "--spec", str(spec), "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not ready within" in result.stdout
    assert process_gone(int((out / "qemu.pid").read_text()))


def test_sigint_stops_qemu(default_kernel, tmp_path, start_harness):
    out = tmp_path / "out"
    started = start_harness(out, "boot", ignore_sigint=True)  # as a background job of a script starts it
    started.wait_for(out / "qemu.pid", "\n")
    pid = qemu_pid(out)
    started.proc.send_signal(signal.SIGINT)
    _, stderr = started.proc.communicate(timeout=60)
    assert started.proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert process_gone(pid)
    assert (out / "console.log").stat().st_size > 0


def test_make_test_kernel_is_the_main_job(default_kernel, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(["make", "test-kernel", f"OUT={out}"], cwd=REPO, capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"^\d+ passed, 0 failed", result.stdout, re.MULTILINE)
    assert (out / "junit.xml").exists() and (out / "console.log").exists()


def test_accel_probe_reports_its_choice(default_kernel, tmp_path):
    from harness import cache
    shutil.rmtree(cache.subdir("accel"))  # forget the last verdict: probe again
    out = tmp_path / "out"
    result = harness("run", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    accel = json.loads((out / "results.json").read_text())["metadata"]["vm"]["accel"]
    assert f"under {accel.upper()}" in result.stderr
    if accel == "tcg":  # KVM missing, or present and broken (as on these 2-core machines): said once
        assert "KVM not used" in result.stderr or "falling back to TCG" in result.stderr


def test_bisect_exit_codes_for_git_bisect_run(default_kernel, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("vm: {append: numa=off}\ntests: [boot]\n")
    bad = harness("run", "--bisect-exit-codes", "--spec", str(spec), "--out", str(tmp_path / "bad"))
    assert bad.returncode == 1 and "bisect verdict: bad" in bad.stdout, bad.stderr[-2000:]
    skip = harness("run", "--bisect-exit-codes", "--config", str(DATA / "unknown-symbol.config"),
                   "--out", str(tmp_path / "skip"))
    assert skip.returncode == 125 and "bisect verdict: skip" in skip.stderr
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "qemu-system-x86_64").write_text("#!/bin/sh\necho 'broken on purpose' >&2\nexit 1\n")
    (fake / "qemu-system-x86_64").chmod(0o755)
    stop = harness("run", "--bisect-exit-codes", "--out", str(tmp_path / "stop"),
                   env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert stop.returncode == 255 and "stopping the bisect" in stop.stderr
    assert "QEMU would not start" in stop.stderr and "build:" not in stop.stderr  # said before building
