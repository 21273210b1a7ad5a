"""kcidb.json from real runs' results, validated with KCIDB's own schema package (kcidb-io)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest
from kcidb_io.schema import LATEST

from harness.results import kcidb, ktap, report
from harness.results.model import CrashReport, RunResult, Status, TestResult

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
# Real runs (6.1, TCG): a passing one, a wrong-node bug (failures), a BUG_ON (crash, tests never reported).
RUNS = {"pass": DATA / "kcidb" / "pass", "wrong-node": DATA / "golden" / "wrong-node",
        "crash": DATA / "golden" / "oops-no-panic"}  # 3 oopses, 2 not pinned on a test


def load(name: str) -> RunResult:
    return report.load(RUNS[name])


def nodes(test: TestResult):
    yield test
    for sub in test.subtests:
        yield from nodes(sub)


def check_links(doc: dict) -> None:
    """Ids unique per kind; every build names a checkout, every test a build, of this document."""
    for kind in ("checkouts", "builds", "tests"):
        ids = [obj["id"] for obj in doc[kind]]
        assert len(ids) == len(set(ids)), kind
        assert all(i.startswith(f"{kcidb.ORIGIN}:") for i in ids)
    checkouts = {c["id"] for c in doc["checkouts"]}
    builds = {b["id"] for b in doc["builds"]}
    assert all(b["checkout_id"] in checkouts for b in doc["builds"])
    assert all(t["build_id"] in builds for t in doc["tests"])


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_real_run_validates_against_the_latest_kcidb_schema(name):
    doc = kcidb.document(load(name))
    LATEST.validate_exactly(doc)  # raises jsonschema's ValidationError, naming the field
    assert doc["version"]["major"] == LATEST.major
    check_links(doc)
    assert len(doc["checkouts"]) == len(doc["builds"]) == 1


@pytest.mark.parametrize("name", sorted(RUNS))
def test_every_node_of_the_result_tree_is_a_test_with_its_dotted_path(name):
    result = load(name)
    doc = kcidb.document(result)
    expected = [n for g in result.groups for n in nodes(g)]
    tests = [t for t in doc["tests"] if t["path"] != kcidb.CRASH_PATH]
    assert len(tests) == len(expected)
    for test, node in zip(tests, expected, strict=True):
        assert test["path"].split(".")[-1] == kcidb._path_part(node.name)
        assert test.get("duration") == node.duration_s
    assert [t["path"] for t in tests if t["path"].count(".") == 1] == [
        f"{g.name}.{kcidb._path_part(leaf.name)}" for g in result.groups for leaf in g.subtests]


def test_the_passing_run_is_all_pass():
    result = load("pass")
    assert result.ok
    doc = kcidb.document(result)
    assert {t["status"] for t in doc["tests"]} == {"PASS"}
    assert {t["path"] for t in doc["tests"]} >= {"boot", "workload", "module", "workload.anon_move_pages"}
    assert not any("log_excerpt" in t for t in doc["tests"])


def test_failures_carry_what_failed_as_the_log_excerpt():
    result = load("wrong-node")
    doc = kcidb.document(result)
    by_path = {t["path"]: t for t in doc["tests"]}
    failed = [(g.name, leaf) for g in result.groups for leaf in g.subtests if leaf.status is Status.FAIL]
    assert failed
    for group, leaf in failed:
        test = by_path[f"{group}.{leaf.name}"]
        assert test["status"] == "FAIL"
        assert test["log_excerpt"].splitlines()[0] == report.failure(leaf)
    assert "expected node 1" in by_path["workload.anon_move_pages"]["log_excerpt"]


def test_a_crash_is_on_the_test_it_ended_and_the_rest_never_started():
    result = load("crash")
    doc = kcidb.document(result)
    blamed = next(t for t in doc["tests"] if t["misc"].get("crash") and t["path"].startswith("workload."))
    title = blamed["misc"]["crash"]["title"]
    assert blamed["status"] == "FAIL" and title in blamed["log_excerpt"] and "Call Trace:" in blamed["log_excerpt"]
    # planned but never reported (the kernel was dead): MISS, not ERROR; so is the group never run
    missing = [n for g in result.groups for n in nodes(g) if ktap.MISSING in n.diagnostics]
    statuses = {t["path"]: t["status"] for t in doc["tests"]}
    assert missing and all(statuses[f"workload.{kcidb._path_part(n.name)}"] == "MISS" for n in missing)
    assert statuses["module"] == "MISS"
    # crashes no test was blamed for are failed tests of their own, each once
    blamed_crashes = {n.crash for g in result.groups for n in nodes(g) if n.crash}
    orphans = [c for c in dict.fromkeys(result.crashes) if c not in blamed_crashes]
    listed = [t for t in doc["tests"] if t["path"] == kcidb.CRASH_PATH]
    assert orphans and [t["comment"] for t in listed] == [c.title for c in orphans]
    assert all(t["status"] == "FAIL" for t in listed)


def test_ids_are_stable_for_a_run_and_differ_between_runs():
    first, again = kcidb.document(load("wrong-node")), kcidb.document(load("wrong-node"))
    assert first == again
    other = kcidb.document(load("crash"))
    assert not {t["id"] for t in first["tests"]} & {t["id"] for t in other["tests"]}


def test_merged_runs_are_one_document_with_each_runs_own_objects():
    runs = {name: load(name) for name in RUNS}
    merged = kcidb.document(report.merge(runs))
    LATEST.validate_exactly(merged)
    check_links(merged)
    singles = [kcidb.document(r) for r in runs.values()]
    for kind in ("checkouts", "builds", "tests"):
        assert [o["id"] for o in merged[kind]] == [o["id"] for d in singles for o in d[kind]]
    # what a test says does not change by merging (paths stay group.test, not LABEL/group)
    strip = [{k: v for k, v in t.items() if k != "misc"} for t in merged["tests"]]
    assert strip == [{k: v for k, v in t.items() if k != "misc"} for d in singles for t in d["tests"]]
    assert {b["misc"]["label"] for b in merged["builds"]} == set(RUNS)


def test_a_merge_of_merged_shards_keeps_each_crash_with_its_run(tmp_path):
    shard1 = report.merge({"pass": load("pass"), "crash": load("crash")})
    shard2 = report.merge({"wrong-node": load("wrong-node")})
    for name, shard in (("shard-1", shard1), ("shard-2", shard2)):
        report.write_all(shard, tmp_path / name)
    merged = report.merge(report.load_many([tmp_path]))
    doc = kcidb.document(merged)
    LATEST.validate_exactly(doc)
    crash_build = kcidb.document(load("crash"))["builds"][0]["id"]
    orphans = [t for t in doc["tests"] if t["path"] == kcidb.CRASH_PATH]
    assert orphans and {t["build_id"] for t in orphans} == {crash_build}
    assert {b["misc"]["label"] for b in doc["builds"]} == {"shard-1/pass", "shard-1/crash", "shard-2/wrong-node"}
    assert json.loads((tmp_path / "shard-1" / "kcidb.json").read_text())["tests"] == [
        t for t in kcidb.document(shard1)["tests"]]


def test_report_write_all_writes_kcidb_json(tmp_path):
    report.write_all(load("crash"), tmp_path)
    doc = json.loads((tmp_path / "kcidb.json").read_text(encoding="utf-8"))
    LATEST.validate_exactly(doc)
    assert doc == json.loads(json.dumps(kcidb.document(load("crash"))))


def test_names_and_text_the_schema_would_refuse_are_made_acceptable():
    odd = TestResult("odd group", Status.FAIL, duration_s=1.0, subtests=(
        TestResult("case 1 (ümlaut/slash)", Status.FAIL, diagnostics=("FAIL: nul\0 and \udc80 byte",)),
        TestResult("...", Status.XFAIL, directive="TODO known race"),
        TestResult("long", Status.FAIL, diagnostics=("FAIL: " + "x" * 40000,)),
    ))
    crash = CrashReport("BUG: at mm/migrate.c:1", "BUG\0 ...", 3, 4)
    doc = kcidb.document(RunResult({}, (dataclasses.replace(odd, crash=crash),), (crash,)))
    LATEST.validate_exactly(doc)
    paths = [t["path"] for t in doc["tests"]]
    assert paths == ["odd_group", "odd_group.case_1_mlaut_slash", "odd_group.unnamed", "odd_group.long"]
    assert doc["tests"][2]["status"] == "DONE" and doc["tests"][2]["comment"] == "TODO known race"
    assert len(doc["tests"][3]["log_excerpt"]) <= kcidb.EXCERPT_MAX
    json.dumps(doc, ensure_ascii=False).encode("utf-8")  # no lone surrogate left


def test_patchset_hash_is_the_one_the_schema_defines(tmp_path):
    patches = sorted(Path(__file__).parents[1].glob("e2e/mutants/0*.patch"))[:3]
    assert patches
    # the schema's own recipe: sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64
    shell = subprocess.run(f"sha256sum {' '.join(map(str, patches))} | cut -c-64 | sha256sum | cut -c-64",
                           shell=True, check=True, capture_output=True, text=True).stdout.strip()
    assert kcidb.patchset_hash(patches) == shell
    assert kcidb.patchset_hash([]) == ""
