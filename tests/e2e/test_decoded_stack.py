"""A crash report's stack decoded to file:line: mutant 11 (a BUG_ON in
migrate_folio_unmap()) on a kernel built with `--profile debug-info`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO, harness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a full debug-info build: `make test-slow`

MUTANT = REPO / "tests/e2e/mutants/11-bug-on-in-migration.patch"


def bug_on_line() -> int:
    """mm/migrate.c's line of the BUG_ON, from the mutant's own hunk header and context."""
    lines = MUTANT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("@@ "))
    first = int(lines[start].split("+")[1].split(",")[0])
    body = [line for line in lines[start + 1:] if not line.startswith("-")]
    return first + next(i for i, line in enumerate(body) if "BUG_ON" in line)


def test_the_bug_on_is_named_by_file_and_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("kernel: {profiles: [debug-info]}\ntests: [boot, workload]\n")
    out = tmp_path / "out"
    done = harness("run", "--spec", str(spec), "--patch", str(MUTANT), "--out", str(out))
    assert done.returncode == 1, done.stderr[-3000:]
    crash = json.loads((out / "results.json").read_text())["crashes"][0]
    place = f"mm/migrate.c:{bug_on_line()}"
    assert crash["title"].startswith("kernel BUG"), crash["title"]
    rip = [line for line in crash["stack"].splitlines() if line.startswith("RIP:")]
    assert rip and place in rip[0], crash["stack"]  # where it stopped: the BUG_ON itself, inlined or not
    assert place in (out / "junit.xml").read_text()
    assert place in Path(out / "summary.txt").read_text()
