"""The kselftest-mm group's pure parts: the spec's selection, the mapping of
selftest output to results (from real captures), the shadow tree."""
import textwrap
from pathlib import Path

import pytest

from harness import spec
from harness.errors import SpecError
from harness.groups import kselftest
from harness.guest import selftests
from harness.results.model import Status

pytestmark = pytest.mark.unit
DATA = Path(__file__).parent / "data" / "kselftest"


def load(tmp_path: Path, text: str) -> spec.Spec:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return spec.load(path)


def test_selection_is_data(tmp_path):
    s = load(tmp_path, "tests: [boot, kselftest-mm]")
    assert s.tests == ("boot", "kselftest-mm")
    s = load(tmp_path, "tests: [boot, {kselftest-mm: [migration, mremap_test]}]")
    assert s.tests == ("boot", spec.SelftestGroup("kselftest-mm", ("migration", "mremap_test")))
    assert "kselftest-mm" not in spec.DEFAULT_GROUPS  # it builds kernel selftests: asked for, not default


@pytest.mark.parametrize("text, message", [
    ("tests: [{kselftest-mm: []}]", r"tests\[0\].kselftest-mm: expected a non-empty list"),
    ("tests: [{kselftest-mm: migration}]", "expected a non-empty list"),
    ("tests: [{kselftest-mm: [migration, 'a b']}]", r"kselftest-mm\[1\]: 'a b' is not a selftest name"),
    ("tests: [{kselftest-mm: [hmm, hmm]}]", "named twice"),
    ("tests: [kselftest-mm, {kselftest-mm: [hmm]}]", "unique"),
    ("tests: [kselftest-vm]", "kselftest-mm: \\[NAME, ...\\]"),
])
def test_bad_selections_are_named(tmp_path, text, message):
    with pytest.raises(SpecError, match=message):
        load(tmp_path, text)


def test_plain_selftest_exit_status_is_its_result():
    out = list(enumerate(["Running test", "OK"], 1))
    assert kselftest.result_of("ksm_numa", "merge_across_nodes", 0, out, "./ksm_tests -N -m 1").status is Status.PASS
    failed = kselftest.result_of("ksm_numa", "merge_across_nodes", 1, out, "./ksm_tests -N -m 1")
    assert failed.status is Status.FAIL and failed.diagnostics[-1] == "./ksm_tests -N -m 1: exit status 1"
    skipped = kselftest.result_of("x", "", 4, list(enumerate(["NUMA not available"], 1)), "./x")
    assert (skipped.name, skipped.status, skipped.directive) == ("x", Status.SKIP, "SKIP NUMA not available")


def test_a_tap_selftest_that_exits_non_zero_fails():
    out = list(enumerate(["TAP version 13", "1..1", "ok 1 migration.private_anon"], 1))
    assert kselftest.result_of("migration", "", 0, out, "./migration").status is Status.PASS
    assert kselftest.result_of("migration", "", 1, out, "./migration").status is Status.FAIL


def test_shadow_tree_writes_nothing_into_the_tree(tmp_path):
    tree = tmp_path / "linux"
    mm = tree / "tools/testing/selftests/mm"
    mm.mkdir(parents=True)
    (mm / "Makefile").write_text("all:\n")
    (mm / "migration.c").write_text("int main(void) { return 0; }\n")
    (tree / "tools/testing/selftests/lib.mk").write_text("\n")
    (tree / "mm").mkdir()
    assert selftests.selftest_dir(tree) == "tools/testing/selftests/mm"
    shadow = selftests._shadow(tree, "tools/testing/selftests/mm", tmp_path / "shadow")
    (shadow / "local_config.h").write_text("generated\n")  # what 6.12's Makefile writes next to its sources
    assert (shadow / "migration.c").resolve() == mm / "migration.c"
    assert (tmp_path / "shadow/mm").resolve() == tree / "mm"
    assert not (mm / "local_config.h").exists()
    (mm / "migration.c").unlink()
    selftests._shadow(tree, "tools/testing/selftests/mm", tmp_path / "shadow")
    assert not (shadow / "migration.c").is_symlink() and (shadow / "local_config.h").is_file()
