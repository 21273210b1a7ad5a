"""Results stage: reports; turns a RunResult into the files a run hands on.

out_dir receives results.json (the record, schema in docs/results-schema.md,
read back by `harness report DIR` through load()), junit.xml (for CI test
views) and summary.txt (the terminal summary, last line Counts.line()).

Choices:
- JUnit has one testcase per leaf. A crash is shown on the FAIL/ERROR leaf it
  is attached to; every other crash in RunResult.crashes (unattached, or on a
  leaf that did not fail) becomes an error testcase in an extra "crashes"
  testsuite, so a run that is not ok never looks green in CI.
- Text from the serial console is stripped of what XML 1.0 forbids (and of
  terminal escape sequences) before it goes into junit.xml.
- What failed is said by one rule, failure_lines(): summary.txt, JUnit's
  `message` and results.json's "failure" all show its first line.
"""
from __future__ import annotations

import dataclasses
import json
import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.results import migrate_reasons
from harness.results.model import Counts, CrashReport, RunResult, Status, TestResult

SCHEMA = 1
WIDTH = 100
CRASH_SUITE = "crashes"
STACK_LINES = 8  # decoded frames of a crash in the summary (all of them in results.json and junit.xml)

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_XML_FORBIDDEN_RE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# A diagnostic that states a failed check: the workload's "FAIL: ...", a module
# case's "...: expected X, seen Y", KUnit's "EXPECTATION FAILED".
_FAILED_CHECK_RE = re.compile(r"^FAIL\b|\bFAILED\b|\b[Ee]xpected\b")
_HEADER_RE = re.compile(r"^Subtest:")
_DUMP_RE = re.compile(r"\bhang-[\w.-]+\.txt\b")


# ---- what failed -----------------------------------------------------------


def is_hang(test: TestResult) -> bool:
    return (test.directive or "").upper().startswith("TIMEOUT")


def failure_lines(test: TestResult) -> list[str]:
    """The lines that say what went wrong with a failed test, most telling first.

    A crash comes first (title and console.log line); for a hang the TIMEOUT
    directive's reason (else the first diagnostic), with the blocked-task dump
    named if a diagnostic names it; then every diagnostic stating a failed
    check. Failing those, the first diagnostic that is not a header, else the
    directive. Empty when the test did not fail or nothing was said.
    """
    if not test.status.is_failure:
        return []
    said = [d for d in test.diagnostics if not _HEADER_RE.match(d)]
    checks = [d for d in said if _FAILED_CHECK_RE.search(_ANSI_RE.sub("", d))]
    lines = [f"kernel crash: {test.crash.title} (console.log:{test.crash.first_line})"] if test.crash else []
    if is_hang(test):
        reason = (test.directive or "")[len("TIMEOUT"):].strip() or next(iter(said), "timed out")
        dump = next((m[0] for d in said if (m := _DUMP_RE.search(d))), None)
        lines.append(f"{reason}; blocked tasks in {dump}" if dump and dump not in reason else reason)
        checks = [d for d in checks if d != reason]
    lines += [d for d in checks if d not in lines]
    return lines or said[:1] or ([test.directive] if test.directive else [])


def skip_reason(test: TestResult) -> str:
    """Why a test skipped: its SKIP directive's text, else its first diagnostic."""
    reason = re.sub(r"^SKIP\b:?\s*", "", test.directive or "", flags=re.IGNORECASE)
    said = [d for d in test.diagnostics if not _HEADER_RE.match(d)]
    return reason or next(iter(said), "no reason given")


def failure(test: TestResult) -> str | None:
    """The one line that says what failed (None if the test did not fail or said nothing)."""
    return next(iter(failure_lines(test)), None)


# ---- results.json ----------------------------------------------------------


def _crash_json(crash: CrashReport) -> dict[str, Any]:
    decoded = {"stack": crash.stack} if crash.stack else {}  # only a debug-info kernel's crashes have one
    return {"title": crash.title, "excerpt": crash.excerpt,
            "first_line": crash.first_line, "last_line": crash.last_line, **decoded}


def _test_json(test: TestResult) -> dict[str, Any]:
    return {"name": test.name, "status": test.status.value,
            "diagnostics": list(test.diagnostics), "failure": failure(test), "directive": test.directive,
            "duration_s": test.duration_s, "line": test.line,
            "crash": _crash_json(test.crash) if test.crash else None,
            "migrate_reasons": migrate_reasons.parse(test.diagnostics),
            "subtests": [_test_json(sub) for sub in test.subtests]}


def to_json(result: RunResult) -> dict[str, Any]:
    """The results.json document; counts and ok are derived, for readers that skip the tree."""
    counts = result.counts
    return {"schema": SCHEMA, "metadata": dict(result.metadata),
            "counts": {**dataclasses.asdict(counts), "total": counts.total}, "ok": result.ok,
            "groups": [_test_json(group) for group in result.groups],
            "crashes": [_crash_json(crash) for crash in result.crashes]}


def _crash_from(data: dict[str, Any]) -> CrashReport:
    return CrashReport(str(data["title"]), str(data["excerpt"]),
                       int(data["first_line"]), int(data["last_line"]), data.get("stack"))


def _test_from(data: dict[str, Any]) -> TestResult:
    duration = data.get("duration_s")
    return TestResult(
        name=str(data["name"]), status=Status(data["status"]),
        diagnostics=tuple(str(d) for d in data.get("diagnostics", ())),
        directive=data.get("directive"),
        subtests=tuple(_test_from(sub) for sub in data.get("subtests", ())),
        duration_s=None if duration is None else float(duration),
        crash=_crash_from(data["crash"]) if data.get("crash") else None,
        line=data.get("line"))


def from_json(data: dict[str, Any]) -> RunResult:
    """Inverse of to_json. Raises ValueError/KeyError/TypeError on a malformed document."""
    if data.get("schema") != SCHEMA:
        raise ValueError(f"unsupported schema {data.get('schema')!r}, expected {SCHEMA}")
    return RunResult(metadata=dict(data.get("metadata", {})),
                     groups=tuple(_test_from(g) for g in data["groups"]),
                     crashes=tuple(_crash_from(c) for c in data.get("crashes", ())))


# ---- junit.xml -------------------------------------------------------------


def _xml_text(text: str) -> str:
    return _XML_FORBIDDEN_RE.sub("", _ANSI_RE.sub("", text))


def _leaves(group: TestResult) -> list[tuple[str, TestResult]]:
    """(path below the group joined with ".", leaf); a group without subtests is its own leaf."""
    return [(".".join(names) or group.name, leaf) for names, leaf in group.paths()]


def _crash_text(crash: CrashReport) -> str:
    decoded = f"\n\nDecoded stack (scripts/decode_stacktrace.sh):\n{crash.stack}" if crash.stack else ""
    return f"{crash.title} (console.log lines {crash.first_line}-{crash.last_line})\n{crash.excerpt}{decoded}"


def _totals(counts: Counts, crashes: int, time: float) -> dict[str, str]:
    """Count attributes; each crash testcase is one more test and one more error."""
    return {"tests": str(counts.total + crashes), "failures": str(counts.failed),
            "errors": str(counts.errors + crashes), "skipped": str(counts.skipped), "time": f"{time:.3f}"}


def _testcase(suite: ET.Element, group: str, path: str, leaf: TestResult) -> None:
    case = ET.SubElement(suite, "testcase", {"classname": _xml_text(group), "name": _xml_text(path)})
    if leaf.duration_s is not None:  # omitted rather than a made-up 0
        case.set("time", f"{leaf.duration_s:.3f}")
    if leaf.status.is_failure:
        tag, default = ("failure", "failed") if leaf.status is Status.FAIL else ("error", "error")
        message = failure(leaf) or default
        body = "\n".join(leaf.diagnostics) + (f"\n\n{_crash_text(leaf.crash)}" if leaf.crash else "")
        ET.SubElement(case, tag, {"message": _xml_text(message)}).text = _xml_text(body)
    elif leaf.status is Status.SKIP:
        ET.SubElement(case, "skipped", {"message": _xml_text(leaf.directive or "skipped")})
    elif leaf.status is Status.XFAIL:
        note = "\n".join([f"expected failure: {leaf.directive or 'xfail'}", *leaf.diagnostics])
        ET.SubElement(case, "system-out").text = _xml_text(note)


def junit_xml(result: RunResult) -> str:
    """JUnit XML text: a testsuite per group, a testcase per leaf, plus "crashes" if needed."""
    shown = {leaf.crash for g in result.groups for _, leaf in _leaves(g) if leaf.status.is_failure}
    orphans = [crash for crash in result.crashes if crash not in shown]
    root = ET.Element("testsuites", {"name": "migrate-harness"})
    total_time = 0.0
    for group in result.groups:
        leaves = _leaves(group)
        time = group.duration_s
        if time is None:
            time = sum(leaf.duration_s or 0.0 for _, leaf in leaves)
        total_time += time
        suite = ET.SubElement(root, "testsuite", {"name": _xml_text(group.name),
                                                  **_totals(Counts.of([group]), 0, time)})
        for path, leaf in leaves:
            _testcase(suite, group.name, path, leaf)
        if group.subtests and group.diagnostics:  # the group's own "# ..." lines; after testcases per XSD
            ET.SubElement(suite, "system-out").text = _xml_text("\n".join(group.diagnostics))
    if orphans:
        suite = ET.SubElement(root, "testsuite", {"name": CRASH_SUITE, **_totals(Counts(), len(orphans), 0.0)})
        for crash in orphans:
            title = _xml_text(crash.title)
            case = ET.SubElement(suite, "testcase", {"classname": CRASH_SUITE, "name": title})
            ET.SubElement(case, "error", {"message": title}).text = _xml_text(_crash_text(crash))
    root.attrib.update(_totals(result.counts, len(orphans), total_time))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# ---- summary.txt -----------------------------------------------------------


def _fit(text: str, width: int) -> str:
    """One line of at most width characters, cut with an ellipsis."""
    text = " ".join(_xml_text(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(result: RunResult) -> str:
    """Table of leaves, failures, skips with their reasons, crashes, then Counts.line() as the last line."""
    rows = [(leaf.status.name, g.name, path, leaf) for g in result.groups for path, leaf in _leaves(g)]
    group_w = min(max([len("GROUP")] + [len(r[1]) for r in rows]), 24)
    name_w = WIDTH - 7 - (group_w + 2) - 10  # status, group, duration columns
    lines = [f"{'STATUS':<7}{'GROUP':<{group_w + 2}}{'TEST':<{name_w}}{'TIME':>10}".rstrip()]
    for word, group, path, leaf in rows:
        took = "" if leaf.duration_s is None else f"{leaf.duration_s:.2f}s"
        group, path = _fit(group, group_w), _fit(path, name_w)
        lines.append(f"{word:<7}{group:<{group_w + 2}}{path:<{name_w}}{took:>10}".rstrip())
    failures = [r for r in rows if r[3].status.is_failure]
    if failures:
        lines += ["", "Failures:"]
    for word, group, path, leaf in failures:
        lines += _failure_entry(word, group, path, leaf)
    skips = [r for r in rows if r[3].status is Status.SKIP]
    if skips:
        lines += ["", "Skipped:"]
    for _word, group, path, leaf in skips:
        lines += textwrap.wrap(f"SKIP {_fit(group, group_w)}: {_fit(path, name_w)}: {skip_reason(leaf)}", WIDTH,
                               subsequent_indent="    ", break_on_hyphens=False)
    # A parser may attach a crash to a leaf only; list those too, once each.
    crashes = list(dict.fromkeys([*result.crashes, *(r[3].crash for r in rows if r[3].crash)]))
    if crashes:
        lines += ["", "Crashes:"]
    for crash in crashes:
        where = f" (console.log lines {crash.first_line}-{crash.last_line})"
        lines.append(_fit(crash.title, WIDTH - len(where)) + where)
        lines += ["    " + _fit(frame, WIDTH - 4) for frame in (crash.stack or "").splitlines()[:STACK_LINES]]
    lines += ["", *_groups_line(result), *migrate_reasons.coverage_lines(result, WIDTH), result.counts.line()]
    return "\n".join(lines) + "\n"


def _failure_entry(word: str, group: str, path: str, leaf: TestResult) -> list[str]:
    """`WORD GROUP: PATH: what failed (and N more lines)`, wrapped, never cut: its end says expected vs seen."""
    said = failure_lines(leaf)
    text = _fit(f"{'HANG' if is_hang(leaf) else word} {group}: {path}", WIDTH)
    if said:
        # The status word already says FAIL; the workload's "FAIL: " prefix would repeat it.
        text += ": " + " ".join(_xml_text(re.sub(r"^FAIL: ", "", said[0])).split())
    if len(said) > 1:
        text += f" (+{len(said) - 1} more in junit.xml)"
    return textwrap.wrap(text, WIDTH, subsequent_indent="    ", break_on_hyphens=False)


def _groups_line(result: RunResult) -> list[str]:
    """How long each group ran and under which accelerator (TCG is slow: say so), then the run's stages."""
    timed = [f"{g.name} {g.duration_s:.1f}s" for g in result.groups if g.duration_s is not None]
    accel = result.metadata.get("vm", {}).get("accel")
    lines = [_fit(f"Group runtimes{f' under {accel.upper()}' if accel else ''}: " + ", ".join(timed), WIDTH)] \
        if timed else []
    t = result.metadata.get("timings_s", {})
    if "overhead" in t:  # runs before the stages were timed have build, boot and tests only
        lines += textwrap.wrap(
            f"Run {t['total']:.1f}s: build {t['build']:.1f}s, assets {t['assets']:.1f}s, boot {t['boot']:.1f}s, "
            f"tests {t['tests']:.1f}s, harness {t['overhead']:.1f}s (source {t['source']:.1f}s, guest image "
            f"{t['image']:.1f}s), waiting for the source lock {t['wait']:.1f}s", WIDTH, subsequent_indent="    ")
    return lines


# ---- files -----------------------------------------------------------------


REPORTS = ("results.json", "junit.xml", "summary.txt", "kcidb.json")  # what write_all writes


def forget(out_dir: Path) -> None:
    """Remove an earlier run's reports from out_dir: a run must never leave another's verdict as its own."""
    for name in REPORTS:
        (out_dir / name).unlink(missing_ok=True)


def write_all(result: RunResult, out_dir: Path) -> None:
    """Write results.json, junit.xml, summary.txt and kcidb.json into out_dir (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # ensure_ascii keeps lone surrogates from a badly decoded console writable and round-trippable.
    (out_dir / "results.json").write_text(json.dumps(to_json(result), indent=2) + "\n", encoding="utf-8")
    (out_dir / "junit.xml").write_text(junit_xml(result), encoding="utf-8")
    (out_dir / "summary.txt").write_text(summary(result), encoding="utf-8")
    from harness.results import kcidb  # it reads this module's failure rule

    kcidb.write(result, out_dir)


def load(out_dir: Path) -> RunResult:
    """Read out_dir/results.json back; HarnessError names the file when it is missing or malformed."""
    path = Path(out_dir) / "results.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}. "
                           f"Is {out_dir} the output directory of a harness run?") from exc
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError(f"top level is {type(data).__name__}, not an object")
        return from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise HarnessError(f"malformed {path}: {detail} (see docs/results-schema.md)") from exc


def merge(results: dict[str, RunResult]) -> RunResult:
    """Several runs (matrix entries, CI shards) as one: groups become LABEL/GROUP."""
    groups = tuple(dataclasses.replace(g, name=f"{label}/{g.name}")
                   for label, r in results.items() for g in r.groups)
    crashes = tuple(c for r in results.values() for c in r.crashes)
    crash_labels = [label for label, r in results.items() for _ in r.crashes]  # whose each crash is
    return RunResult({"merged": {label: r.metadata for label, r in results.items()}, "crash_labels": crash_labels},
                     groups, crashes)


def load_many(dirs: list[Path]) -> dict[str, RunResult]:
    """Runs found in `dirs`: a run directory itself, or a directory of run directories."""
    found: dict[str, RunResult] = {}
    for directory in dirs:
        runs = [directory] if (directory / "results.json").exists() else \
            sorted(p.parent for p in directory.glob("*/results.json"))
        if not runs:
            raise HarnessError(f"{directory}: no results.json in it or in its subdirectories")
        for run_dir in runs:
            found[run_dir.name] = load(run_dir)
    return found
