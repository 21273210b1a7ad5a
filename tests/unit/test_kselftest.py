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
    assert s.tests == ("boot", spec.ChosenTests("kselftest-mm", ("migration", "mremap_test")))
    assert "kselftest-mm" not in spec.default_groups()  # it builds kernel selftests: asked for, not default


@pytest.mark.parametrize("text, message", [
    ("tests: [{kselftest-mm: []}]", r"tests\[0\].kselftest-mm: expected a non-empty list"),
    ("tests: [{kselftest-mm: migration}]", "expected a non-empty list"),
    ("tests: [{kselftest-mm: [migration, 'a b']}]", r"kselftest-mm\[1\]: 'a b' is not a test name"),
    ("tests: [{kselftest-mm: [hmm, hmm]}]", "named twice"),
    ("tests: [kselftest-mm, {kselftest-mm: [hmm]}]", "unique"),
    ("tests: [kselftest-vm]", "kselftest-mm: \\[TEST, ...\\]"),
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


def capture(name: str) -> list[tuple[int, str]]:
    return list(enumerate((DATA / name).read_text().splitlines(), 1))


def test_migration_tap_from_a_real_run_gives_one_result_per_case():
    """6.1's migration under TCG (its shared_anon gives up on the first busy move_pages())."""
    result = kselftest.result_of("migration", "", 1, capture("migration-6.1.tap"), "./migration")
    assert [(t.name, t.status) for t in result.subtests] == [
        ("private_anon", Status.PASS), ("shared_anon", Status.FAIL), ("private_anon_thp", Status.PASS)]
    assert result.status is Status.FAIL
    assert result.subtests[1].diagnostics == ()  # kselftest_harness's RUN/FAIL lines say nothing more


def test_a_known_selftest_bug_is_an_expected_failure_only_where_the_tree_has_it(tmp_path):
    directory = "tools/testing/selftests/vm"
    (tmp_path / directory).mkdir(parents=True)
    source = tmp_path / directory / "migration.c"
    source.write_text("if (ret > 0)\n\tprintf(\"Didn't migrate %d pages\\n\", ret);\n")  # 6.1's
    bugs = kselftest.known_bugs(tmp_path, directory, ("migration", "hmm"))
    assert [(test, bug.case) for test, bug in bugs] == [("migration", "shared_anon")]
    result = kselftest.result_of("migration", "", 1, capture("migration-6.1.tap"), "./migration")
    expected = kselftest.expect_known_bugs("migration", result, bugs)
    assert [t.status for t in expected.subtests] == [Status.PASS, Status.XFAIL, Status.PASS]
    assert expected.status is Status.PASS and "Relax test to fail after 100" in expected.subtests[1].directive
    source.write_text("#define MAX_RETRIES\t100\n")  # fixed upstream: a failure is a failure again
    assert kselftest.known_bugs(tmp_path, directory, ("migration",)) == ()


def test_a_case_killed_by_a_signal_says_so_first():
    """6.1's migration on mutant 13 (SIGBUS on a migration entry), stderr merged."""
    result = kselftest.result_of("migration", "", 1, capture("migration-6.1-mutant13.tap"), "./migration")
    private_anon = result.subtests[0]
    assert private_anon.status is Status.FAIL
    assert private_anon.diagnostics == ("private_anon: Test terminated unexpectedly by signal 7",)


def test_hmm_tests_that_skipped_in_their_fixture_setup_are_skips():
    """6.1's hmm-tests (stderr merged) prints `ok` for the device-coherent variants
    it skipped in FIXTURE_SETUP; the SKIP line kselftest_harness logs says so."""
    result = kselftest.result_of("hmm", "", 0, capture("hmm-tests-6.1.tap"), "./hmm-tests")
    leaves = {leaf.name: leaf for leaf in result.leaves()}
    assert len(leaves) == 58 and result.status is Status.PASS
    skipped = {name for name, leaf in leaves.items() if leaf.status is Status.SKIP}
    assert skipped == {name for name in leaves if "device_coherent" in name} and len(skipped) == 29
    assert leaves["hmm_device_coherent.migrate"].directive == "SKIP DEVICE_COHERENT not available"
    assert leaves["hmm_device_private.migrate"].status is Status.PASS
    assert "hmm2.hmm2_device_private.double_map" in leaves


def test_a_selftest_of_one_plain_run_is_one_case():
    run = kselftest.result_of("map_populate", "", 0, list(enumerate(["ok"], 1)), "./map_populate")
    assert kselftest.flatten("map_populate", [run]).name == "map_populate" and not run.subtests
    runs = [kselftest.result_of("ksm_numa", c, 0, [], "./ksm_tests") for c in ("merge_across_nodes", "no_merge")]
    assert [t.name for t in kselftest.flatten("ksm_numa", runs).subtests] == ["merge_across_nodes", "no_merge"]
