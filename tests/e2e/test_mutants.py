"""The suite's power, re-checked on every `make test`: a few injected bugs from
different areas (tests/e2e/mutants/*.patch), each must turn the run red (exit 1)
with the test that should catch it named in results.json. The full table is
`make test-mutants` (tests/e2e/mutants.py, tests/e2e/MUTANTS.md).

Each costs an incremental rebuild of one file and a run (about 30 s on 6.1 under
TCG); the 6.12 one reuses test_kernels.py's 6.12 build."""
from __future__ import annotations

import pytest
from mutants import HERE, failing, harness_run

pytestmark = pytest.mark.e2e

SOURCE_61, SOURCE_612 = "debian:linux-source-6.1", "debian:linux-source-6.12"
SUBSET = [  # (kernel source, mutant, a test that must fail)
    (SOURCE_61, "01-data-not-copied", "workload.anon_move_pages"),  # the copy: data byte for byte
    (SOURCE_61, "02-miscounted-return", "module.migrate_pages.shmem_to_node1"),  # migrate_pages()'s count
    (SOURCE_612, "15-nodev-as-eacces", "workload.bad_args"),  # move_pages(2)'s argument checks, on 6.12
]


@pytest.mark.parametrize("source, mutant, caught_by", SUBSET, ids=[f"{s[7:]}-{m}" for s, m, _ in SUBSET])
def test_an_injected_bug_turns_the_run_red(source, mutant, caught_by, tmp_path):
    status, results = harness_run(tmp_path / "out", "--source", source, "--patch", str(HERE / "mutants" / f"{mutant}.patch"))
    assert results is not None, f"no results.json (exit {status})"
    assert status == 1, f"exit {status}: {mutant} was not caught"
    assert caught_by in failing(results), failing(results)
