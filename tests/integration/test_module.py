"""The kernel test module on the default 6.1 kernel: built with kbuild M=, pushed,
loaded, its KTAP read live from the console, cross-checked with dmesg, unloaded."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from conftest import DATA, EXPECTED_SKIPS, MODULE_LEAVES, harness, skips, validate_junit

pytestmark = pytest.mark.integration

def test_module_cases_pass_and_unload_cleanly(default_kernel, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("tests: [boot, module]\n")
    out = tmp_path / "out"
    result = harness("run", "--spec", str(spec), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    validate_junit((out / "junit.xml").read_text())
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite[@name='module']")
    assert [case.get("name") for case in suite.findall("testcase")] == MODULE_LEAVES
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert skips(out) == EXPECTED_SKIPS, (out / "summary.txt").read_text()  # a skip is no pass
    module = json.loads((out / "results.json").read_text())["groups"][1]
    restored = next(t for t in module["subtests"] if t["name"] == "isolated_counters_restored")
    assert "nr_isolated_anon" in restored["diagnostics"][0]  # checked, not assumed


def test_module_is_not_rebuilt_after_an_edit_of_a_kernel_c_file(default_kernel, tmp_path):
    """mm/migrate.c changed (a patch): the kernel is rebuilt, migrate_test.ko is not
    (neither its sources, the headers it includes nor the kernel's exports changed),
    and the module kept loads into the rebuilt kernel and passes."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("tests: [boot, module]\n")
    first = harness("run", "--spec", str(spec), "--out", str(tmp_path / "first"))
    assert first.returncode == 0, first.stderr[-2000:]
    out = tmp_path / "out"
    result = harness("run", "--spec", str(spec), "--patch", str(DATA / "migrate-marker.patch"), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    build_log = (out / "build.log").read_text()
    assert "mm/migrate.o" in build_log  # the kernel was rebuilt
    assert "M=" not in build_log, build_log[-2000:]  # the module's make was skipped
    assert "harness-marker: this kernel has the patched mm/migrate.c" in (out / "console.log").read_text()
    module = json.loads((out / "results.json").read_text())["groups"][1]
    assert module["name"] == "module" and module["status"] == "pass", module

