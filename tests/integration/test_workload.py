"""The guest C workload on the default 6.1 kernel: compiled static on the host,
pushed and run over SSH, each case a separate result."""
from __future__ import annotations

import io
import json
import subprocess
import xml.etree.ElementTree as ET

import pytest
from conftest import harness

from harness.guest import compile as compiler

pytestmark = pytest.mark.integration


def suite_cases() -> list[str]:
    """The suite's own case table (`migrate_suite --list`; the binary is static, so it runs here too)."""
    binary = compiler.workload(io.StringIO())
    listed = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True)
    return listed.stdout.split()


def test_default_run_has_every_workload_case_passing(default_kernel, tmp_path):
    cases = suite_cases()
    assert len(cases) >= 14, cases  # the suite's cases when this list stopped being kept by hand
    out = tmp_path / "out"
    result = harness("run", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite[@name='workload']")
    assert [case.get("name") for case in suite.findall("testcase")] == cases
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert "Group runtimes under" in result.stdout and "workload" in result.stdout.split("Group runtimes")[1]
    groups = [g["name"] for g in json.loads((out / "results.json").read_text())["groups"]]
    assert groups == ["boot", "workload", "module"]
    assert (out / "workload.ktap").read_text().startswith("KTAP version 1")
