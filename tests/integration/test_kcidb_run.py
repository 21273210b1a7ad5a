"""A real run writes kcidb.json that KCIDB's own schema package accepts; so does
`report --merge` of two real runs."""
from __future__ import annotations

import json

import pytest
from conftest import harness
from kcidb_io.schema import LATEST

pytestmark = pytest.mark.integration


def _kcidb(out) -> dict:
    doc = json.loads((out / "kcidb.json").read_text(encoding="utf-8"))
    LATEST.validate_exactly(doc)
    return doc


def test_a_passing_and_a_failing_run_write_valid_kcidb_json_and_merge(default_kernel, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("tests: [boot, module]\n")
    passing = tmp_path / "pass"
    result = harness("run", "--spec", str(spec), "--out", str(passing))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    doc = _kcidb(passing)
    (checkout,), (build,) = doc["checkouts"], doc["builds"]
    assert checkout["patchset_hash"] == "" and checkout["start_time"] == build["start_time"]
    assert build["architecture"] == "x86_64" and "gcc" in build["compiler"]
    # this run's build time: 0 when the cached build was current (the kernel fixture built it)
    timings = json.loads((passing / "results.json").read_text())["metadata"]["timings_s"]
    assert build["duration"] == timings["build"] >= 0
    statuses = {t["path"]: t["status"] for t in doc["tests"]}
    assert statuses["boot"] == statuses["boot.numa_nodes_online"] == statuses["module"] == "PASS"
    assert set(statuses.values()) == {"PASS"}

    failing_spec = tmp_path / "numa-off.yaml"  # the kernel ignores QEMU's NUMA tables: boot checks fail
    failing_spec.write_text("tests: [boot]\nvm: {append: numa=off}\n")
    failing = tmp_path / "fail"
    result = harness("run", "--spec", str(failing_spec), "--out", str(failing))
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    test = next(t for t in _kcidb(failing)["tests"] if t["path"] == "boot.numa_nodes_online")
    assert test["status"] == "FAIL" and "expected 2 nodes, found 1" in test["log_excerpt"]

    merged = tmp_path / "merged"
    result = harness("report", "--merge", str(passing), str(failing), "--out", str(merged))
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    both = _kcidb(merged)
    singles = [_kcidb(passing), _kcidb(failing)]
    assert [b["id"] for b in both["builds"]] == [s["builds"][0]["id"] for s in singles]
    assert len({b["id"] for b in both["builds"]}) == 2
    assert len(both["tests"]) == sum(len(s["tests"]) for s in singles)
