"""Reports: a hand-built RunResult in; results.json, junit.xml and summary text out."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import validate_junit
from lxml import etree

from harness.errors import HarnessError

# Aliased so pytest does not try to collect the dataclass as a test class.
from harness.results.model import Counts, CrashReport, RunResult, Status
from harness.results.model import TestResult as Result
from harness.results.report import from_json, junit_xml, load, merge, summary, to_json, write_all

pytestmark = pytest.mark.unit

# What a serial console can hand over: colour codes, NUL, BEL, an undecodable byte
# (surrogateescape), and XML's own syntax.
NOISY = "\x1b[31mexpected 2 pages\x00 moved\x07\udc80, got 1 ]]> <&"
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
LONG_NAME = "migrate_pages_between_nodes_with_a_name_far_too_long_for_any_table_" * 2

OOPS = CrashReport("BUG: unable to handle page fault in migrate_folio", "BUG: ...\nRIP: ...", 40, 71)
ORPHAN = CrashReport("WARNING in move_to_new_folio", "WARNING: CPU: 0 ...\n---[ end trace ]---", 90, 99)
ON_PASS = CrashReport("INFO: task hung (blocked for more than 10 seconds): migrate", "INFO: ...", 120, 130)


def run() -> RunResult:
    """Two groups, nesting three deep, every status, crashes on a failure, a pass and nowhere."""
    migration = Result("migration", Status.FAIL, diagnostics=("group note",), duration_s=4.5, line=3, subtests=(
        Result("basic", Status.PASS, duration_s=0.25, line=5, crash=ON_PASS),
        Result("private_anon", Status.FAIL, line=12, subtests=(
            Result("thp", Status.FAIL, diagnostics=(NOISY, "second line"), duration_s=1.0, line=10, crash=OOPS),
            Result("shared", Status.XFAIL, directive="TODO known race", line=11),
            Result("deep", Status.PASS, line=9, subtests=(
                Result("leaf", Status.PASS, line=8),
            )),
        )),
        Result("swap", Status.SKIP, directive="SKIP no swap", line=13),
        Result("never", Status.ERROR, diagnostics=("missing: planned but never reported",)),
        Result(LONG_NAME, Status.PASS, duration_s=0.5, line=14),
    ))
    boot = Result("boot", Status.ERROR, directive="TIMEOUT", duration_s=60.0)
    return RunResult(
        metadata={"kernel": "6.6.0", "commit": "abc123", "config_hash": "f00", "patches": ["a.patch"],
                  "topology": {"nodes": 2}, "accel": "kvm", "durations": {"boot_s": 3.2}},
        groups=(migration, boot),
        crashes=(OOPS, ORPHAN, ON_PASS),
    )


# ---- results.json ----------------------------------------------------------


def test_round_trip_is_exact_through_json_text():
    result = run()
    assert from_json(json.loads(json.dumps(to_json(result)))) == result


def test_round_trip_of_an_empty_run():
    assert from_json(to_json(RunResult())) == RunResult()


def test_document_follows_the_schema():
    doc = to_json(run())
    assert doc["schema"] == 1
    assert doc["counts"] == {"passed": 3, "failed": 1, "skipped": 1, "errors": 2, "xfailed": 1, "total": 8}
    assert doc["ok"] is False
    assert [g["name"] for g in doc["groups"]] == ["migration", "boot"]
    thp = doc["groups"][0]["subtests"][1]["subtests"][0]
    assert set(thp) == {"name", "status", "diagnostics", "directive", "duration_s", "line", "crash", "subtests"}
    assert thp["status"] == "fail" and thp["crash"]["title"] == OOPS.title
    assert set(doc["crashes"][0]) == {"title", "excerpt", "first_line", "last_line"}
    assert {t["status"] for t in doc["groups"][0]["subtests"]} <= {s.value for s in Status}


def test_unknown_schema_version_is_refused():
    with pytest.raises(ValueError, match="schema"):
        from_json({**to_json(run()), "schema": 2})


# ---- junit.xml -------------------------------------------------------------


def test_schema_rejects_what_ci_parsers_reject():
    for bad in ('<testsuites><testcase name="x"/></testsuites>',
                '<testsuites><testsuite name="g" tests="one" failures="0" errors="0"/></testsuites>',
                '<testsuites><testsuite name="g" tests="1" failures="1" errors="0"><testcase name="x">'
                '<failure><b/></failure></testcase></testsuite></testsuites>',
                '<testsuites><testsuite name="g" tests="1" failures="0" errors="0"><system-out/>'
                '<testcase name="x"/></testsuite></testsuites>',
                '<testsuites><testsuite name="g" tests="1" failures="0" errors="0">'
                '<testcase name="x" time="0.12345"/></testsuite></testsuites>'):
        with pytest.raises(etree.DocumentInvalid):
            validate_junit(bad)


def attr_counts(el: ET.Element) -> tuple[int, ...]:
    return tuple(int(el.get(a)) for a in ("tests", "failures", "errors", "skipped"))


def parsed() -> ET.Element:
    return ET.fromstring(junit_xml(run()))


def test_junit_is_valid_and_structured():
    validate_junit(junit_xml(run()))


def test_junit_counts_equal_counts_plus_crash_testcases():
    result, root = run(), parsed()
    c = result.counts
    # ORPHAN is attached nowhere and ON_PASS only to a passing leaf: two extra error testcases.
    assert attr_counts(root) == (c.total + 2, c.failed, c.errors + 2, c.skipped)
    for suite, group in zip(root, result.groups, strict=False):
        g = Counts.of([group])
        assert attr_counts(suite) == (g.total, g.failed, g.errors, g.skipped)
        assert len(suite.findall("testcase")) == g.total
    crashes = root.find("testsuite[@name='crashes']")
    assert attr_counts(crashes) == (2, 0, 2, 0)
    assert [c.get("name") for c in crashes.findall("testcase")] == [ORPHAN.title, ON_PASS.title]
    assert sum(attr_counts(s)[0] for s in root) == attr_counts(root)[0]


def test_one_testsuite_per_group_and_dotted_leaf_names():
    root = parsed()
    assert [s.get("name") for s in root] == ["migration", "boot", "crashes"]
    migration = root.find("testsuite[@name='migration']")
    assert [c.get("name") for c in migration.findall("testcase")] == [
        "basic", "private_anon.thp", "private_anon.shared", "private_anon.deep.leaf", "swap", "never", LONG_NAME]
    assert {c.get("classname") for c in migration.findall("testcase")} == {"migration"}
    assert migration.find("system-out").text == "group note"  # the group's own diagnostics
    # A group without subtests is its own single testcase.
    assert [c.get("name") for c in root.find("testsuite[@name='boot']")] == ["boot"]


def test_junit_outcomes_per_status():
    cases = {c.get("name"): c for c in parsed().iter("testcase")}
    failure = cases["private_anon.thp"].find("failure")
    assert failure.get("message") == "expected 2 pages moved, got 1 ]]> <&"
    assert "second line" in failure.text and OOPS.title in failure.text and OOPS.excerpt in failure.text
    assert cases["never"].find("error").get("message") == "missing: planned but never reported"
    assert cases["boot"].find("error").get("message") == "TIMEOUT"
    assert cases["swap"].find("skipped").get("message") == "SKIP no swap"
    assert "expected failure" in cases["private_anon.shared"].find("system-out").text
    assert len(cases["basic"]) == 0 and cases["basic"].get("time") == "0.250"
    assert "time" not in cases["swap"].attrib


def test_control_characters_are_stripped_and_xml_syntax_survives():
    text = junit_xml(run())
    assert not XML_FORBIDDEN.search(text)
    assert "\x1b" not in text and "[31m" not in text
    ET.fromstring(text)  # "]]>" and "<&" in text and attributes are escaped


# ---- summary ---------------------------------------------------------------


def test_summary_rows_sections_and_last_line():
    result = run()
    lines = summary(result).splitlines()
    assert lines[-1] == result.counts.line() == "3 passed, 3 failed, 1 skipped (2 errors)"
    assert all(len(line) <= 100 for line in lines)
    rows = [line.split() for line in lines[1:9]]
    assert [r[0] for r in rows] == ["PASS", "FAIL", "XFAIL", "PASS", "SKIP", "ERROR", "PASS", "ERROR"]
    assert rows[0] == ["PASS", "migration", "basic", "0.25s"]
    assert "…" in lines[7] and LONG_NAME not in lines[7]
    text = "\n".join(lines)
    assert "FAIL migration: private_anon.thp" in text
    assert "    expected 2 pages moved, got 1 ]]> <&" in text
    assert f"    crash: {OOPS.title}" in text
    assert "ERROR boot: boot\n    TIMEOUT" in text  # no diagnostic: the directive stands in
    assert f"{ORPHAN.title} (console.log lines 90-99)" in text
    assert text.count(OOPS.title + " (console.log") == 1


def test_summary_lines_stay_within_100_characters():
    long = "x" * 300
    result = RunResult(groups=(Result(long, Status.FAIL, subtests=(
        Result(long, Status.ERROR, diagnostics=(long,), crash=CrashReport(long, "", 1, 2)),)),))
    lines = summary(result).splitlines()
    assert all(len(line) <= 100 for line in lines)
    assert sum("…" in line for line in lines) >= 5  # group, name, failure, diagnostic, crash titles


def test_summary_of_an_empty_run():
    assert summary(RunResult()).splitlines()[-1] == "0 passed, 0 failed, 0 skipped"


# ---- files -----------------------------------------------------------------


def test_write_all_then_load(tmp_path):
    out = tmp_path / "run"
    write_all(run(), out)
    assert {p.name for p in out.iterdir()} == {"results.json", "junit.xml", "summary.txt"}
    assert load(out) == run()
    ET.parse(out / "junit.xml")
    assert (out / "summary.txt").read_text(encoding="utf-8") == summary(run())


def test_load_missing_dir_names_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(HarnessError, match=re.escape(str(missing / "results.json"))):
        load(missing)


@pytest.mark.parametrize("content", [
    "{not json",
    "[1, 2]",
    '{"schema": 1}',
    '{"schema": 1, "groups": [{"name": "g", "status": "exploded"}]}',
    '{"schema": 1, "groups": ["g"]}',
])
def test_load_malformed_json_names_the_path(tmp_path, content):
    (tmp_path / "results.json").write_text(content, encoding="utf-8")
    with pytest.raises(HarnessError, match=re.escape(str(tmp_path / "results.json"))):
        load(tmp_path)


def test_schema_doc_example_round_trips():
    """The example in docs/results-schema.md reads back and writes out unchanged."""
    doc = (Path(__file__).parents[2] / "docs" / "results-schema.md").read_text(encoding="utf-8")
    example = json.loads(doc.split("```json\n", 1)[1].split("```", 1)[0])
    assert to_json(from_json(example)) == example


def test_summary_prints_group_runtimes_and_the_accelerator():
    group = Result("workload", Status.PASS, subtests=(Result("a", Status.PASS),), duration_s=12.04)
    text = summary(RunResult({"vm": {"accel": "tcg"}}, (group,)))
    assert "Group runtimes under TCG: workload 12.0s" in text
    assert text.rstrip().splitlines()[-1] == "1 passed, 0 failed, 0 skipped"


def group(name, *statuses, crash=None):
    leaves = tuple(Result(f"t{i}", s, crash=crash if s is Status.FAIL else None) for i, s in enumerate(statuses))
    worst = Status.FAIL if Status.FAIL in statuses else Status.ERROR if Status.ERROR in statuses else Status.PASS
    return Result(name, worst, subtests=leaves)


def test_merge_prefixes_groups_and_keeps_counts():
    a = RunResult({}, (group("boot", Status.PASS), group("module", Status.PASS, Status.FAIL)))
    b = RunResult({}, (group("boot", Status.PASS, Status.PASS),))
    merged = merge({"6.1": a, "6.12": b})
    assert [g.name for g in merged.groups] == ["6.1/boot", "6.1/module", "6.12/boot"]
    assert merged.counts.passed == 4 and merged.counts.failed == 1
