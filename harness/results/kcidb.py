"""Results stage: kcidb.json, the run as KCIDB I/O data for KernelCI's common database.

One checkout (the source and patch series), one build of it, and one test
per node of the result tree: `path` is the dotted path (group.subtest.leaf),
so suites and their leaves are both there, as KCIDB's test tree expects. A
crash no test could be blamed for is one more failed test, `crashes`, like
JUnit's "crashes" suite. A merged result (matrix, `report --merge`) gives one
checkout and build per run it holds.

Written without the `kcidb-io` package; the tests validate the output with
its schema (SCHEMA_VERSION is its latest, v5.3 in kcidb-io 141).

Choices:
- Ids are ORIGIN:RUN:KIND[:N], RUN a digest of the run's metadata (which holds
  its start time): unique per run, and the same when the file is made again
  from results.json or merged, so a resubmission updates rather than adds.
- Status: pass PASS, fail FAIL, skip SKIP, xfail DONE (it ran; it says nothing
  about the code), error ERROR, except a test that never started (planned
  but never reported, or a group not run after a crash) MISS.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.cache import digest
from harness.results import ktap, report
from harness.results.model import CrashReport, RunResult, Status, TestResult

ORIGIN = "migrate_harness"
SCHEMA_VERSION = {"major": 5, "minor": 3}
ARCHITECTURE = "x86_64"
CRASH_PATH = report.CRASH_SUITE
EXCERPT_MAX = 16384  # the schema's maxLength for log_excerpt
NOT_RUN = "not run:"  # how the pipeline says a group never started

_STATUS = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.SKIP: "SKIP", Status.XFAIL: "DONE",
           Status.ERROR: "ERROR"}
_PATH_CHAR_RE = re.compile(r"[^A-Za-z0-9_-]+")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")


def patchset_hash(patches: list[Path]) -> str:
    """KCIDB's patchset_hash: sha256 over the patches' sha256 hashes, one per line; "" for none."""
    if not patches:
        return ""
    lines = "".join(hashlib.sha256(p.read_bytes()).hexdigest() + "\n" for p in patches)
    return hashlib.sha256(lines.encode()).hexdigest()


def compiler(config_path: Path) -> str | None:
    """The compiler the kernel was built with, as kbuild recorded it in .config."""
    for line in config_path.read_text(errors="replace").splitlines():
        if line.startswith("CONFIG_CC_VERSION_TEXT="):
            return line.split("=", 1)[1].strip('"')
    return None


def _path_part(name: str) -> str:
    return _PATH_CHAR_RE.sub("_", name).strip("_") or "unnamed"


def _text(text: str) -> str:
    """A string the schema accepts: no NUL, at most EXCERPT_MAX characters (the end is cut);
    a console's undecodable bytes (lone surrogates) become U+FFFD, so any JSON reader takes it."""
    text = text.replace("\0", "").encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text if len(text) <= EXCERPT_MAX else text[: EXCERPT_MAX - 2] + "\n…"


def _status(test: TestResult) -> str:
    never_started = not test.subtests and any(d == ktap.MISSING or d.startswith(NOT_RUN) for d in test.diagnostics)
    return "MISS" if test.status is Status.ERROR and never_started else _STATUS[test.status]


def _crash_text(crash: CrashReport) -> str:
    return f"{crash.title} (console.log lines {crash.first_line}-{crash.last_line})\n{crash.excerpt}"


def _excerpt(test: TestResult) -> str | None:
    lines = report.failure_lines(test)
    text = "\n".join(lines) + (f"\n\n{_crash_text(test.crash)}" if test.crash else "")
    return _text(text.strip()) or None


def _nodes(test: TestResult, path: str) -> Iterator[tuple[str, TestResult]]:
    """(dotted path, node) for the node and every node below it, parents first."""
    yield path, test
    for sub in test.subtests:
        yield from _nodes(sub, f"{path}.{_path_part(sub.name)}")


def _test(run_id: str, build_id: str, n: int, path: str, node: TestResult,
          environment: dict[str, Any]) -> dict[str, Any]:
    test: dict[str, Any] = {"id": f"{ORIGIN}:{run_id}:test:{n}", "build_id": build_id, "origin": ORIGIN, "path": path,
            "status": _status(node), "environment": environment}
    if node.duration_s is not None:
        test["duration"] = node.duration_s
    if node.status.is_failure and (excerpt := _excerpt(node)):
        test["log_excerpt"] = excerpt
    if node.directive:
        test["comment"] = _text(node.directive)
    misc: dict[str, Any] = {"name": node.name}
    if node.line is not None:
        misc["console_line"] = node.line
    if node.crash:
        misc["crash"] = {"title": node.crash.title, "console_lines": [node.crash.first_line, node.crash.last_line]}
    test["misc"] = misc
    return test


def _mapping(value: object) -> dict[str, Any]:
    """A metadata section; results.json written by other tools may hold anything there."""
    return value if isinstance(value, dict) else {}


def _environment(metadata: dict[str, Any]) -> dict[str, Any]:
    vm = _mapping(metadata.get("vm"))
    if not vm:
        return {"comment": "QEMU guest"}
    nodes = len(vm.get("numa") or [])
    return {"comment": f"QEMU {str(vm.get('accel', '')).upper()} guest, {vm.get('cpus')} CPUs, "
                       f"{nodes} NUMA nodes, swap {vm.get('swap_mib')} MiB", "misc": vm}


def run_document(result: RunResult, label: str | None = None) -> dict[str, Any]:
    """checkouts, builds and tests of one run (not a merged result)."""
    meta = result.metadata
    kernel = _mapping(meta.get("kernel"))
    run_id = digest(json.dumps(meta, sort_keys=True), length=16)
    checkout_id, build_id = f"{ORIGIN}:{run_id}:checkout", f"{ORIGIN}:{run_id}:build"
    where: dict[str, Any] = {"label": label} if label else {}
    checkout: dict[str, Any] = {"id": checkout_id, "origin": ORIGIN, "valid": True,
                "comment": _text(f"{kernel.get('origin', 'kernel source')} {kernel.get('version', '')}".strip()),
                "misc": {**where, **{k: kernel[k] for k in ("origin", "version", "patches") if k in kernel}}}
    if _SHA1_RE.match(kernel.get("commit") or ""):
        checkout["git_commit_hash"] = kernel["commit"]
    if "patchset_hash" in kernel:
        checkout["patchset_hash"] = kernel["patchset_hash"]
    build: dict[str, Any] = {"id": build_id, "checkout_id": checkout_id, "origin": ORIGIN, "architecture": ARCHITECTURE,
             "status": "PASS", "config_name": _text("+".join(["migrate-harness", *kernel.get("configs", [])])),
             "misc": {**where, **{k: kernel[k] for k in ("release", "config_hash") if k in kernel}}}
    if "started" in meta:
        checkout["start_time"] = build["start_time"] = meta["started"]
    if kernel.get("compiler"):
        build["compiler"] = kernel["compiler"]
    if _mapping(meta.get("timings_s")).get("build") is not None:
        build["duration"] = meta["timings_s"]["build"]
    environment = _environment(meta)
    nodes = [(p, node) for group in result.groups for p, node in _nodes(group, _path_part(group.name))]
    tests = [_test(run_id, build_id, n, p, node, environment) for n, (p, node) in enumerate(nodes)]
    blamed = {node.crash for _, node in nodes if node.crash}
    for crash in dict.fromkeys(c for c in result.crashes if c not in blamed):
        tests.append({"id": f"{ORIGIN}:{run_id}:test:{len(tests)}", "build_id": build_id, "origin": ORIGIN,
                      "path": CRASH_PATH, "status": "FAIL", "comment": _text(crash.title),
                      "log_excerpt": _text(_crash_text(crash)), "environment": environment,
                      "misc": {"crash": {"title": crash.title,
                                         "console_lines": [crash.first_line, crash.last_line]}}})
    return {"checkouts": [checkout], "builds": [build], "tests": tests}


def _runs(metadata: dict[str, Any], groups: list[TestResult], crashes: list[CrashReport],
          prefix: str = "") -> list[tuple[str, RunResult]]:
    """The single runs inside a (possibly nested) merged result, with their labels.

    report.merge names groups LABEL/GROUP and lists under "crash_labels" whose
    each crash is, in order."""
    if "merged" not in metadata:
        return [(prefix.rstrip("/"), RunResult(metadata, tuple(groups), tuple(crashes)))]
    labels = metadata.get("crash_labels") or []
    runs = []
    for label, meta in metadata["merged"].items():
        own = [g for g in groups if g.name.startswith(f"{label}/")]
        own = [dataclasses.replace(g, name=g.name[len(label) + 1:]) for g in own]
        its_crashes = [c for c, owner in zip(crashes, labels, strict=False) if owner == label]
        runs += _runs(meta, own, its_crashes, f"{prefix}{label}/")
    return runs


def document(result: RunResult) -> dict[str, Any]:
    """The kcidb.json document: every run in `result` (one, or several if merged)."""
    doc: dict[str, Any] = {"version": dict(SCHEMA_VERSION), "checkouts": [], "builds": [], "tests": []}
    merged = "merged" in result.metadata
    for label, run in _runs(result.metadata, list(result.groups), list(result.crashes)):
        part = run_document(run, label if merged else None)
        for kind in ("checkouts", "builds", "tests"):
            doc[kind] += part[kind]
    return doc


def write(result: RunResult, out_dir: Path) -> None:
    (out_dir / "kcidb.json").write_text(json.dumps(document(result), indent=2) + "\n", encoding="utf-8")
