"""Reports: a hand-built RunResult in; results.json, junit.xml and summary text out."""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import validate_junit
from lxml import etree

from harness.errors import HarnessError
from harness.results.ktap import parse_ktap, split_documents

# Aliased so pytest does not try to collect the dataclass as a test class.
from harness.results.model import Counts, CrashReport, RunResult, Status
from harness.results.model import TestResult as Result
from harness.results.report import (
    failure,
    failure_lines,
    from_json,
    junit_xml,
    load,
    merge,
    summary,
    to_json,
    write_all,
)

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
    assert set(thp) == {"name", "status", "diagnostics", "failure", "directive", "duration_s", "line", "crash",
                        "migrate_reasons", "subtests"}
    assert thp["status"] == "fail" and thp["crash"]["title"] == OOPS.title
    assert thp["failure"] == f"kernel crash: {OOPS.title} (console.log:40)"
    assert doc["groups"][0]["subtests"][0]["failure"] is None  # passed
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
    assert failure.get("message") == f"kernel crash: {OOPS.title} (console.log:40)"
    assert "expected 2 pages moved, got 1 ]]> <&" in failure.text
    assert "second line" in failure.text and OOPS.title in failure.text and OOPS.excerpt in failure.text
    assert cases["never"].find("error").get("message") == "missing: planned but never reported"
    assert cases["boot"].find("error").get("message") == "timed out"
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
    # The crash first; the failed check after it is counted, and shown in junit.xml.
    assert f"FAIL migration: private_anon.thp: kernel crash: {OOPS.title} (console.log:40) (+1 more in junit.xml)" \
        in text.replace("\n    ", " ")
    assert "ERROR migration: never: missing: planned but never reported" in text
    assert "HANG boot: boot: timed out" in text  # a TIMEOUT with nothing said
    assert f"{ORPHAN.title} (console.log lines 90-99)" in text
    assert text.count(OOPS.title + " (console.log") == 1


def test_summary_lines_stay_within_100_characters():
    long = "x" * 300
    result = RunResult(groups=(Result(long, Status.FAIL, subtests=(
        Result(long, Status.ERROR, diagnostics=(long,), crash=CrashReport(long, "", 1, 2)),)),))
    lines = summary(result).splitlines()
    assert all(len(line) <= 100 for line in lines)
    assert sum("…" in line for line in lines) >= 3  # table group and name, Failures: header, crash title
    # What failed is wrapped, never cut: its end says "expected X, seen Y".
    failures = "".join(line.strip() for line in lines[lines.index("Failures:") + 2:lines.index("Crashes:")])
    assert f"kernel crash: {long} (console.log:1)" in failures


def test_summary_says_why_each_test_skipped():
    text = summary(run())
    assert "\nSkipped:\nSKIP migration: swap: no swap\n" in text
    said = Result("case", Status.SKIP, diagnostics=("no ext4 scratch mount",), directive="SKIP")
    quiet = Result("quiet", Status.SKIP, directive="SKIP")
    text = summary(RunResult(groups=(Result("workload", Status.PASS, subtests=(said, quiet)),)))
    assert "SKIP workload: case: no ext4 scratch mount" in text and "SKIP workload: quiet: no reason given" in text


def test_summary_of_an_empty_run():
    assert summary(RunResult()).splitlines()[-1] == "0 passed, 0 failed, 0 skipped"


# ---- files -----------------------------------------------------------------


def test_write_all_then_load(tmp_path):
    out = tmp_path / "run"
    write_all(run(), out)
    assert {p.name for p in out.iterdir()} == {"results.json", "junit.xml", "summary.txt", "kcidb.json"}
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


# ---- what failed -----------------------------------------------------------


def failed(*diagnostics: str, directive: str | None = None, crash: CrashReport | None = None,
           status: Status = Status.FAIL) -> Result:
    return Result("case", status, diagnostics=diagnostics, directive=directive, crash=crash)


@pytest.mark.parametrize("test, lines", [
    # The workload: informational lines first, then its FAIL lines.
    (failed("128 pages written", "FAIL: status[0] = node 0, expected node 1", "duration 0.1 s",
            "FAIL: 128 of 128 statuses wrong"),
     ["FAIL: status[0] = node 0, expected node 1", "FAIL: 128 of 128 statuses wrong"]),
    # The module: "case: what: expected X, seen Y".
    (failed("shmem_to_node1: pfn 0x1234", "shmem_to_node1: index 0: node: expected 1, seen 0"),
     ["shmem_to_node1: index 0: node: expected 1, seen 0"]),
    (failed("mapcount: EXPECTATION FAILED at mm/migrate_kunit.c:88"),
     ["mapcount: EXPECTATION FAILED at mm/migrate_kunit.c:88"]),
    # A header is never what failed; the first other line stands in, else the directive.
    (failed("Subtest: case", "returned -12"), ["returned -12"]),
    (failed("Subtest: case", directive="ERROR setup", status=Status.ERROR), ["ERROR setup"]),
    (failed(), []),
    # A hang: the directive's reason first, the dump named when a diagnostic names it.
    (failed("FAIL: case did not finish within 30 s: killed", "blocked tasks in hang-workload.txt",
            directive="TIMEOUT stuck in kernel: kernel_move_pages+0x8d/0x1a0"),
     ["stuck in kernel: kernel_move_pages+0x8d/0x1a0; blocked tasks in hang-workload.txt",
      "FAIL: case did not finish within 30 s: killed"]),
    # The harness's own hang verdict: bare TIMEOUT, its diagnostic names the dump already.
    (failed("hang: no result within 30 s; blocked tasks in hang-module.txt", directive="TIMEOUT"),
     ["hang: no result within 30 s; blocked tasks in hang-module.txt"]),
    # A crash comes first, with its console.log line.
    (failed("FAIL: expected 1, saw 0", crash=OOPS),
     [f"kernel crash: {OOPS.title} (console.log:40)", "FAIL: expected 1, saw 0"]),
    # Only failures say what failed.
    (Result("ok", Status.PASS, diagnostics=("expected 1, seen 1",)), []),
    (Result("s", Status.SKIP, directive="SKIP no swap"), []),
])
def test_failure_lines(test, lines):
    assert failure_lines(test) == lines
    assert failure(test) == (lines[0] if lines else None)


def test_summary_says_hang_and_counts_the_other_failure_lines():
    hung = failed("FAIL: killed", directive="TIMEOUT stuck in kernel: kernel_move_pages+0x8d/0x1a0")
    text = summary(RunResult(groups=(Result("workload", Status.FAIL, subtests=(hung,)),)))
    assert "HANG workload: case: stuck in kernel: kernel_move_pages+0x8d/0x1a0 (+1 more in junit.xml)" in text


def test_summary_drops_the_workloads_fail_prefix_and_wraps_instead_of_cutting():
    check = "FAIL: " + "child's pages after migrate_pages {0}->{1} (move_pages query): " * 2 + "expected node 1"
    text = summary(RunResult(groups=(Result("workload", Status.FAIL, subtests=(failed(check),)),)))
    entry = text.split("Failures:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(entry) == 2 and all(len(line) <= 100 for line in entry)
    assert entry[0].startswith("FAIL workload: case: child's pages") and entry[1].startswith("    ")
    assert " ".join(line.strip() for line in entry).endswith("expected node 1")


# ---- golden files ----------------------------------------------------------
# Real captures with the summary.txt and junit.xml they must give; data/golden/README.md says how
# they were made. UPDATE_GOLDEN=1 rewrites the expected files.

GOLDEN = Path(__file__).parent / "data" / "golden"
GOLDEN_CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "workload.ktap").exists())  # qemu/: test_qemu.py


def numbered_file(path: Path) -> list[tuple[int, str]]:
    return list(enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1))


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_summary_and_junit(name):
    case, result = GOLDEN / name, load(GOLDEN / name)
    for file, text in (("summary.txt", summary(result)), ("junit.xml", junit_xml(result))):
        if os.environ.get("UPDATE_GOLDEN"):
            (case / file).write_text(text, encoding="utf-8")
        assert text == (case / file).read_text(encoding="utf-8"), \
            f"{case / file} differs; if the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff"
    validate_junit(junit_xml(result))


def reported(group: Result) -> list[tuple]:
    """Leaves that printed a result line: what the parser alone decides."""
    return [(t.name, t.status, t.directive) for t in group.leaves() if t.line is not None]


def said(group: Result) -> list[tuple[str, ...]]:
    return [t.diagnostics for t in group.leaves() if t.line is not None]


def assert_recorded(parsed: Result, recorded: Result) -> None:
    """The record is the parser's verdict; the harness may add diagnostics (a crash, a dump), never drop one."""
    assert reported(parsed) == reported(recorded)
    assert all(set(p) <= set(r) for p, r in zip(said(parsed), said(recorded), strict=True))


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_record_is_what_the_parser_makes_of_the_captures(name):
    case = GOLDEN / name
    groups = {g.name: g for g in load(case).groups}
    assert_recorded(parse_ktap(numbered_file(case / "workload.ktap"), "workload", "workload.ktap"), groups["workload"])
    if groups["module"].subtests:
        doc = next(d for d in split_documents(numbered_file(case / "console.log"))
                   if any(text.strip().endswith("# Subtest: migrate_pages") for _, text in d))
        assert_recorded(parse_ktap(doc, "module", "console.log"), groups["module"])


def test_golden_wrong_node_names_the_node_mismatch_for_every_failure():
    text = (GOLDEN / "wrong-node" / "summary.txt").read_text(encoding="utf-8")
    entries = text.split("Failures:\n", 1)[1].split("\n\n", 1)[0].replace("\n    ", " ").splitlines()
    assert len(entries) == 11
    assert all("Subtest" not in e and "memory nodes" not in e for e in entries)
    assert sum("expected node 1" in e for e in entries) == 10  # concurrent_bounce says "not on node 1"
    messages = [f.get("message") for f in ET.parse(GOLDEN / "wrong-node" / "junit.xml").iter("failure")]
    assert len(messages) == 11 and all(m.startswith("FAIL: ") for m in messages)


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
