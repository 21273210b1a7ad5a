"""Hangs in the kernel, end to end: a workload case stuck in move_pages(2), an
insmod that never returns, a script stuck on a frozen filesystem. Each is a hang
with a blocked-task dump, named with the stuck function, decided within a
bound; what could not run after it is an error that says why. The budgets
themselves are measured in bench/hangs.py."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from conftest import DATA, harness, process_gone, validate_junit, workload_cases

pytestmark = pytest.mark.integration


def run(tmp_path, *args: str, spec: str | None = None) -> dict:
    out = tmp_path / "out"
    if spec is not None:
        (tmp_path / "spec.yaml").write_text(spec)
        args = (*args, "--spec", str(tmp_path / "spec.yaml"))
    result = harness("run", *args, "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert process_gone(int((out / "qemu.pid").read_text()))
    validate_junit((out / "junit.xml").read_text())
    return json.loads((out / "results.json").read_text())


def failures(out) -> list[str]:
    return [f.get("message", "") for f in ET.parse(out / "junit.xml").iter("failure")]


def leaves(test: dict) -> list[dict]:
    return [leaf for sub in test["subtests"] for leaf in leaves(sub)] if test["subtests"] else [test]


def blocked_tasks(dump) -> str:
    text = dump.read_text()
    assert "task:" in text and "state:D" in text, text[-2000:]
    return text


def test_a_workload_case_stuck_in_move_pages_stops_the_run(default_kernel, tmp_path):
    data = run(tmp_path, "--patch", str(DATA / "move-pages-sleeps-forever.patch"))
    out = tmp_path / "out"
    workload = next(g for g in data["groups"] if g["name"] == "workload")
    hung, *rest = [t for t in workload["subtests"] if t["status"] != "pass"]
    assert hung["name"] == "anon_move_pages" and hung["directive"].startswith("TIMEOUT stuck in kernel: ")
    assert "move_pages" in hung["failure"] and "hang-workload.txt" in hung["failure"]
    assert any("move_pages" in m and "stuck in kernel" in m for m in failures(out))
    blocked_tasks(out / "hang-workload.txt")
    assert rest and all(t["status"] == "error" and t["diagnostics"][0].startswith("not run: anon_move_pages hung")
                        for t in rest)
    cases = workload_cases()  # the cases never printed are named from the suite's own list
    assert [t["name"] for t in rest] == cases[cases.index("anon_move_pages") + 1:]
    module = next(g for g in data["groups"] if g["name"] == "module")
    assert module["status"] == "error" and "workload hung the kernel" in module["diagnostics"][0]
    # the case's deadline is 30 s; the verdict follows within the budget's 60 s (with slack for TCG)
    assert data["metadata"]["timings_s"]["tests"] < 30 + 60, data["metadata"]["timings_s"]


def test_an_insmod_that_never_returns_is_a_hang_at_the_module_limit(default_kernel, tmp_path):
    data = run(tmp_path, "--patch", str(DATA / "migrate-pages-sleeps-forever.patch"),
                     spec="tests: [boot, module]\ntimeouts: {test: 15}\n")  # the module's 60 s, capped
    out = tmp_path / "out"
    hung, *rest = [t for t in leaves(data["groups"][1]) if t["status"] != "pass"]
    assert hung["status"] == "fail" and hung["directive"] == "TIMEOUT" and "hang-module.txt" in hung["failure"]
    assert all(t["diagnostics"] == [f"not run: {hung['name']} hung the kernel"] for t in rest)
    assert "migrate_pages" in blocked_tasks(out / "hang-module.txt")  # the stuck insmod's stack
    assert data["metadata"]["timings_s"]["tests"] < 15 + 30, data["metadata"]["timings_s"]


def test_a_script_stuck_on_a_frozen_filesystem_is_a_hang_named_by_the_detector(default_kernel, tmp_path):
    data = run(tmp_path, spec=f"tests:\n  - boot\n  - {{name: freezer, script: {DATA / 'frozen-fs-write.sh'}, timeout: 90}}\n"
                                    f"  - workload\n")
    out = tmp_path / "out"
    freezer = {t["name"]: t for t in data["groups"][1]["subtests"]}
    assert freezer["before_freeze"]["status"] == "pass"
    hung = freezer["write_to_frozen_fs"]
    assert hung["status"] == "fail" and hung["directive"] == "TIMEOUT"
    assert "blocked for more than" in hung["failure"] and "hang-freezer.txt" in hung["failure"]
    assert freezer["test 3 (missing)"]["diagnostics"] == ["not run: write_to_frozen_fs hung the kernel"]
    assert data["groups"][2]["status"] == "error" and "freezer hung the kernel" in data["groups"][2]["diagnostics"][0]
    blocked_tasks(out / "hang-freezer.txt")
    assert data["metadata"]["timings_s"]["tests"] < 60, data["metadata"]["timings_s"]  # detector: 20-25 s
