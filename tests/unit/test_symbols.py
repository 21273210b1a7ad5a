"""Decoded crash stacks: where they go (results.json, junit.xml, summary), and
that a kernel without debug info keeps its crashes as printed."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness.kernel import symbols
from harness.kernel.build import KernelBuild
from harness.kernel.source import KernelSource
from harness.results.model import CrashReport, RunResult, Status
from harness.results.model import TestResult as Result
from harness.results.report import from_json, junit_xml, summary, to_json

pytestmark = pytest.mark.unit

BUG = CrashReport("kernel BUG in migrate_folio_unmap", "kernel BUG at mm/migrate.c:1259!\n"
                  "RIP: 0010:migrate_pages_batch+0x5d5/0xc90\n migrate_pages+0x2a8/0x3f0", 40, 71)
STACK = ("RIP: 0010:migrate_pages_batch (mm/migrate.c:1259 mm/migrate.c:1644)\n"
         "migrate_pages (mm/migrate.c:1873)")


def kernel(tmp_path: Path, debug_info: bool) -> KernelBuild:
    config = tmp_path / ".config"
    config.write_text("CONFIG_DEBUG_INFO=y\n" if debug_info else "# CONFIG_DEBUG_INFO is not set\n")
    source = KernelSource(tmp_path, "x", "6.1", None, ())
    return KernelBuild(tmp_path, config, "6.1", source, tmp_path / "vmlinux")


def test_without_debug_info_crashes_stay_as_printed(tmp_path):
    result = RunResult({}, (Result("workload", Status.FAIL, crash=BUG),), (BUG,))
    assert symbols.decoded(result, kernel(tmp_path, debug_info=False)) is result


def test_every_copy_of_a_crash_gets_its_stack(tmp_path, monkeypatch):
    monkeypatch.setattr(symbols, "decode", lambda excerpt, kb: STACK)
    leaf = Result("anon", Status.FAIL, crash=BUG)
    result = RunResult({}, (Result("workload", Status.FAIL, subtests=(leaf,)),), (BUG,))
    done = symbols.decoded(result, kernel(tmp_path, debug_info=True))
    assert done.crashes[0].stack == STACK
    assert done.groups[0].subtests[0].crash == done.crashes[0]


def test_the_stack_is_in_results_json_junit_and_the_summary():
    crash = replace(BUG, stack=STACK)
    result = RunResult({}, (Result("workload", Status.FAIL, subtests=(Result("anon", Status.FAIL, crash=crash),)),),
                       (crash,))
    document = to_json(result)
    assert document["crashes"][0]["stack"] == STACK
    assert from_json(document) == result
    assert "stack" not in to_json(replace(result, crashes=(BUG,)))["crashes"][0]
    assert "Decoded stack (scripts/decode_stacktrace.sh):\n" + STACK in junit_xml(result)
    assert "    migrate_pages (mm/migrate.c:1873)" in summary(result).splitlines()


def test_the_decoded_lines_are_those_with_a_place():
    assert symbols.PLACE.search(" migrate_pages (mm/migrate.c:1873)")
    assert symbols.PLACE.search("RIP: 0010:x (mm/migrate.c:1259 include/linux/mm.h:12 (discriminator 2))")
    assert not symbols.PLACE.search("Call Trace:")
    assert not symbols.PLACE.search(" ? migrate_pages+0x2a8/0x3f0")
