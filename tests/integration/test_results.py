"""Results end to end: script groups over SSH, a kernel panic in the middle of a
suite, a hang; exit codes, junit.xml and the artifacts they leave."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from conftest import DATA, harness, process_gone, validate_junit

pytestmark = pytest.mark.integration


def spec_with(tmp_path, groups: str) -> str:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"tests:\n  - boot\n{groups}")
    return str(spec)


def test_script_group_results_and_durations(default_kernel, tmp_path):
    spec = spec_with(tmp_path, f"  - {{name: smoke, script: {DATA / 'three-checks.sh'}}}\n")
    out = tmp_path / "out"
    result = harness("run", "--spec", spec, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke [" in result.stderr and "ok 3 runs_as_root" in result.stderr  # live progress
    validate_junit((out / "junit.xml").read_text())
    smoke = ET.parse(out / "junit.xml").getroot().find("testsuite[@name='smoke']")
    assert [c.get("name") for c in smoke.findall("testcase")] == [
        "two_nodes_online", "migration_counters", "runs_as_root"]
    data = json.loads((out / "results.json").read_text())
    leaves = data["groups"][1]["subtests"]
    assert all(leaf["duration_s"] is not None for leaf in leaves)
    assert (out / "smoke.ktap").read_text().startswith("KTAP version 1")
    assert harness("report", str(out)).stdout.rstrip() == result.stdout.split("artifacts:")[0].rstrip()


def test_panic_midway_fails_the_running_test_and_keeps_the_others(default_kernel, tmp_path):
    spec = spec_with(tmp_path, f"  - {{name: crasher, script: {DATA / 'panics-midway.sh'}}}\n"
                               f"  - {{name: later, script: {DATA / 'three-checks.sh'}}}\n")
    out = tmp_path / "out"
    result = harness("run", "--spec", spec, "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Kernel panic - not syncing: sysrq triggered crash" in result.stdout
    data = json.loads((out / "results.json").read_text())
    crasher = {t["name"]: t for t in data["groups"][1]["subtests"]}
    assert crasher["before_one"]["status"] == "pass" and crasher["before_two"]["status"] == "pass"
    validate_junit((out / "junit.xml").read_text())
    assert crasher["trigger_panic"]["status"] == "fail"
    assert crasher["trigger_panic"]["crash"]["title"] == "Kernel panic - not syncing: sysrq triggered crash"
    assert crasher["test 4 (missing)"]["status"] == "error"
    assert data["groups"][2]["status"] == "error"  # `later` could not run
    assert data["metadata"]["timings_s"]["tests"] < 30  # ended by the panic, not by a timeout
    assert process_gone(int((out / "qemu.pid").read_text()))


def test_hang_is_cut_at_the_timeout_with_a_blocked_task_dump(default_kernel, tmp_path):
    spec = spec_with(tmp_path, f"  - {{name: hanger, script: {DATA / 'hangs.sh'}, timeout: 8}}\n")
    out = tmp_path / "out"
    result = harness("run", "--spec", spec, "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads((out / "results.json").read_text())
    hanger = {t["name"]: t for t in data["groups"][1]["subtests"]}
    assert hanger["before_hang"]["status"] == "pass"
    hung = next(t for t in hanger.values() if t["directive"] == "TIMEOUT")
    assert hung["status"] == "fail" and "hang-hanger.txt" in hung["diagnostics"][0]
    assert "Show Blocked State" in (out / "hang-hanger.txt").read_text()
    assert data["metadata"]["timings_s"]["tests"] < 8 + 15
    assert process_gone(int((out / "qemu.pid").read_text()))


def test_after_crash_reboot_runs_the_groups_left(default_kernel, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"after_crash: reboot\ntests:\n  - boot\n"
                    f"  - {{name: crasher, script: {DATA / 'panics-midway.sh'}}}\n"
                    f"  - {{name: later, script: {DATA / 'three-checks.sh'}}}\n")
    out = tmp_path / "out"
    result = harness("run", "--spec", str(spec), "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr  # the crash still fails the run
    assert "booting again for 1 group(s) left" in result.stderr
    data = json.loads((out / "results.json").read_text())
    assert [g["status"] for g in data["groups"]] == ["pass", "fail", "pass"]
    assert (out / "console.log").read_text().count("Linux version") == 2
    assert process_gone(int((out / "qemu.pid").read_text()))
