"""KTAP parser: console captures in, TestResult trees out."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.results.ktap import (
    MAX_DIAGNOSTICS,
    KtapError,
    parse_ktap,
    split_documents,
    strip_console_prefix,
)
from harness.results.model import Counts, Status

pytestmark = pytest.mark.unit

MISSING = "missing: planned but never reported"


def numbered(text: str) -> list[tuple[int, str]]:
    """A log as the harness hands it over: (1-based line number, raw line)."""
    return list(enumerate(textwrap.dedent(text).strip("\n").splitlines(), start=1))


def parse(text: str, name: str = "group"):
    return parse_ktap(numbered(text), name)


BOOT_CHECK = """\
    KTAP version 1
    # Subtest: boot
    1..3
    ok 1 numa_nodes_online
    # expected 2 nodes, found 1
    not ok 2 node_memory
    ok 3 swap_active # SKIP no swap disk
"""

# Hand-written in the shape KUnit prints on a serial console with
# CONFIG_PRINTK_TIME and CONFIG_PRINTK_CALLER, including unrelated printk lines.
KUNIT_CAPTURE = """\
[    0.000000][    T0] Linux version 6.9.0 (builder@ci) #1 SMP PREEMPT_DYNAMIC
[    0.000000][    T0] Command line: console=ttyS0 kunit.enable=1
[    0.498112][    T1] KTAP version 1
[    0.498115][    T1] 1..2
[    0.498300][    T1]     KTAP version 1
[    0.498302][    T1]     # Subtest: mm_migrate
[    0.498303][    T1]     # module: migrate_kunit
[    0.498304][    T1]     1..3
[    0.499010][    T1]     ok 1 migrate_folio_basic
[    0.499200][   T57] random: crng init done
[    0.499811][    T1]     # migrate_folio_mapcount: EXPECTATION FAILED at mm/migrate_kunit.c:88
[    0.499812][    T1]     Expected mapcount == 1, but
[    0.499813][    T1]         mapcount == 2 (0x2)
[    0.499900][    T1]     not ok 2 migrate_folio_mapcount
[    0.500011][   T12] virtio_blk virtio1: [vda] 2097152 512-byte logical blocks (1.07 GB/1.00 GiB)
[    0.500100][    T1]     ok 3 migrate_huge_folio # SKIP THP disabled
[    0.500101][    T1] # mm_migrate: pass:1 fail:1 skip:1 total:3
[    0.500102][    T1] # Totals: pass:1 fail:1 skip:1 total:3
[    0.500103][    T1] not ok 1 mm_migrate
[    0.500200][    T1]     KTAP version 1
[    0.500201][    T1]     # Subtest: mempolicy
[    0.500202][    T1]     1..1
[    0.500210][    T1]         KTAP version 1
[    0.500211][    T1]         # Subtest: policy_modes
[    0.500212][    T1]         ok 1 MPOL_BIND
[    0.500213][    T1]         ok 2 MPOL_INTERLEAVE
[    0.500214][    T1]     # policy_modes: pass:2 fail:0 skip:0 total:2
[    0.500215][    T1]     ok 1 policy_modes
[    0.500216][    T1] # mempolicy: pass:1 fail:0 skip:0 total:1
[    0.500217][    T1] # Totals: pass:2 fail:0 skip:0 total:2
[    0.500218][    T1] ok 2 mempolicy
[    0.512000][    T1] Run /sbin/init as init process
"""


@pytest.mark.parametrize("raw, expected", [
    ("[    1.234567] ok 1 foo", "ok 1 foo"),
    ("[    1.234567][    T1] ok 1 foo", "ok 1 foo"),
    ("[  T123] ok 1 foo", "ok 1 foo"),
    ("<6>[ 1.2] KTAP version 1", "KTAP version 1"),
    ("[    0.5][    C0]     ok 1 nested\r", "    ok 1 nested"),
    ("ok 1 plain\r", "ok 1 plain"),
    ("    # no prefix, indented", "    # no prefix, indented"),
    ("[vda] not a prefix", "[vda] not a prefix"),
])
def test_strip_console_prefix(raw, expected):
    assert strip_console_prefix(raw) == expected


def test_simple_pass_and_fail():
    group = parse("""
        KTAP version 1
        1..2
        ok 1 first
        not ok 2 second
    """)
    assert [(r.name, r.status) for r in group.subtests] == [("first", Status.PASS), ("second", Status.FAIL)]
    assert group.name == "group"
    assert group.status is Status.FAIL


@pytest.mark.parametrize("line, status, directive", [
    ("ok 1 t # SKIP no swap", Status.SKIP, "SKIP no swap"),
    ("not ok 1 t # SKIP not supported", Status.SKIP, "SKIP not supported"),
    ("ok 1 t # skip lower case", Status.SKIP, "SKIP lower case"),
    ("not ok 1 t # TODO known bug", Status.XFAIL, "TODO known bug"),
    ("ok 1 t # TODO fixed meanwhile", Status.PASS, "TODO fixed meanwhile"),
    ("not ok 1 t # XFAIL racy", Status.XFAIL, "XFAIL racy"),
    ("not ok 1 t # TIMEOUT 300s", Status.FAIL, "TIMEOUT 300s"),
    ("not ok 1 t # ERROR setup failed", Status.ERROR, "ERROR setup failed"),
    ("ok 1 t # not a directive", Status.PASS, None),
])
def test_directives(line, status, directive):
    (result,) = parse(f"KTAP version 1\n1..1\n{line}").subtests
    assert (result.status, result.directive) == (status, directive)
    assert result.name == ("t # not a directive" if directive is None else "t")


def test_tap13_dash_style_and_version():
    group = parse("""
        TAP version 13
        1..2
        ok 1 - foo
        not ok 2 - bar baz # SKIP nope
    """)
    assert [r.name for r in group.subtests] == ["foo", "bar baz"]
    assert group.subtests[1].status is Status.SKIP


def test_boot_check_document():
    group = parse(BOOT_CHECK, "boot")
    nodes, memory, swap = group.subtests
    assert (nodes.name, nodes.status, nodes.line) == ("numa_nodes_online", Status.PASS, 4)
    assert memory.status is Status.FAIL
    assert memory.diagnostics == ("expected 2 nodes, found 1",)
    assert (swap.status, swap.directive) == (Status.SKIP, "SKIP no swap disk")
    assert group.status is Status.FAIL
    assert group.line == 1
    assert group.diagnostics == ()  # "# Subtest: boot" is the document's name, not a diagnostic


def test_nested_two_levels_as_kunit_prints_it():
    group = parse("""
        KTAP version 1
        1..2
            KTAP version 1
            # Subtest: suite
            1..2
            ok 1 case_a
            ok 2 case_b
        ok 1 suite
            KTAP version 1
            # Subtest: other
            1..1
            ok 1 case_c # SKIP no hw
        ok 2 other
    """)
    suite, other = group.subtests
    assert (suite.name, suite.status, suite.line) == ("suite", Status.PASS, 8)
    assert [(c.name, c.line) for c in suite.subtests] == [("case_a", 6), ("case_b", 7)]
    assert suite.diagnostics == ()
    assert other.subtests[0].status is Status.SKIP
    assert group.status is Status.PASS
    assert Counts.of([group]) == Counts(passed=2, skipped=1)


def test_three_levels_and_two_space_indentation():
    group = parse("""
        KTAP version 1
        1..1
          # Subtest: suite
          1..1
            # Subtest: param
            ok 1 p0
            not ok 2 p1
          ok 1 param
        ok 1 suite
    """)
    (suite,) = group.subtests
    (param,) = suite.subtests
    assert [p.name for p in param.subtests] == ["p0", "p1"]
    # Both parents said ok over a failing leaf.
    assert param.status is Status.FAIL and suite.status is Status.FAIL
    assert group.status is Status.FAIL


def test_realistic_kunit_capture():
    group = parse_ktap(numbered(KUNIT_CAPTURE), "kunit")
    migrate, mempolicy = group.subtests
    assert (migrate.name, migrate.status, migrate.line) == ("mm_migrate", Status.FAIL, 19)
    assert [(c.name, c.status, c.line) for c in migrate.subtests] == [
        ("migrate_folio_basic", Status.PASS, 9),
        ("migrate_folio_mapcount", Status.FAIL, 14),
        ("migrate_huge_folio", Status.SKIP, 16),
    ]
    failed = migrate.subtests[1]
    assert failed.diagnostics == ("migrate_folio_mapcount: EXPECTATION FAILED at mm/migrate_kunit.c:88",)
    assert migrate.diagnostics == (
        "module: migrate_kunit",
        "mm_migrate: pass:1 fail:1 skip:1 total:3", "Totals: pass:1 fail:1 skip:1 total:3",
    )
    (modes,) = mempolicy.subtests
    assert [c.name for c in modes.subtests] == ["MPOL_BIND", "MPOL_INTERLEAVE"]
    assert (mempolicy.status, mempolicy.line) == (Status.PASS, 31)
    assert (group.status, group.line) == (Status.FAIL, 3)
    assert Counts.of([group]) == Counts(passed=3, failed=1, skipped=1)


def test_noise_between_results_is_never_a_result():
    group = parse("""
        [    1.000000] KTAP version 1
        [    1.000001] 1..2
        [    1.000002] random: crng init done
        [    1.000003] looks ok 1 to me
        [    1.000004] okay 3 things
        [    1.000005][  T9] virtio_blk virtio1: [vda] 2097152 512-byte logical blocks
        [    1.000006][  T1] ok 1 first
        [    1.000007]  vda: vda1
        [    1.000008][  T1] ok 2 second
    """)
    assert [(r.name, r.line) for r in group.subtests] == [("first", 7), ("second", 9)]
    assert all(r.diagnostics == () for r in group.subtests)
    assert group.status is Status.PASS


def test_missing_results_at_top_level():
    group = parse("""
        KTAP version 1
        1..5
        ok 1 a
        ok 2 b
        # Subtest: d
        ok 3 c
        # Subtest: e
        [   12.3] BUG: kernel NULL pointer dereference, address: 0000000000000000
    """)
    names = [(r.name, r.status) for r in group.subtests]
    assert names == [("a", Status.PASS), ("b", Status.PASS), ("c", Status.PASS),
                     ("e", Status.ERROR), ("test 5 (missing)", Status.ERROR)]
    assert group.subtests[3].diagnostics == (MISSING,)
    assert group.subtests[3].line is None
    assert group.status is Status.ERROR


def test_missing_results_nested_parent_is_error():
    group = parse("""
        KTAP version 1
        1..2
            KTAP version 1
            # Subtest: suite
            1..3
            ok 1 case_a
            not ok 2 case_b
    """)
    suite, second = group.subtests
    assert (suite.name, suite.status, suite.line) == ("suite", Status.ERROR, 3)
    assert suite.diagnostics[-1].startswith("missing:")
    assert [(c.name, c.status) for c in suite.subtests] == [
        ("case_a", Status.PASS), ("case_b", Status.FAIL), ("test 3 (missing)", Status.ERROR)]
    assert suite.subtests[2].diagnostics == (MISSING,)
    assert (second.name, second.status) == ("test 2 (missing)", Status.ERROR)
    assert group.status is Status.FAIL  # KCIDB's order: case_b's FAIL outranks the ERRORs


def test_nested_plan_short_but_parent_reported():
    group = parse("""
        KTAP version 1
        1..1
            1..2
            ok 1 case_a
        ok 1 suite
    """)
    (suite,) = group.subtests
    assert suite.subtests[1].status is Status.ERROR
    assert suite.status is Status.FAIL  # said ok, but a child never reported


def test_parent_ok_over_failed_child_is_fail():
    group = parse("""
        KTAP version 1
        1..1
            1..2
            ok 1 case_a
            not ok 2 case_b
        ok 1 suite
    """)
    (suite,) = group.subtests
    assert suite.status is Status.FAIL
    assert "reported ok but a subtest failed" in suite.diagnostics


def test_parent_keeps_its_own_failure_and_skip():
    group = parse("""
        KTAP version 1
        1..2
            1..1
            ok 1 case_a
        not ok 1 suite_a
            1..1
            ok 1 case_b # SKIP
        ok 2 suite_b # SKIP no hw
    """)
    assert [r.status for r in group.subtests] == [Status.FAIL, Status.SKIP]


def test_diagnostics_placement():
    group = parse("""
        KTAP version 1
        # header about the document
        1..2
        # before first
        # Subtest: first
        ok 1 first
        # before second
        ok 2 second
        # after the last result
    """)
    first, second = group.subtests
    assert first.diagnostics == ()
    assert second.diagnostics == ("before second",)
    # Lines after the plan but before the first "# Subtest:" header are the suite's preamble.
    assert group.diagnostics == ("header about the document", "before first", "after the last result")


def test_duplicate_number_is_an_error_that_fails_the_suite():
    group = parse("""
        KTAP version 1
        1..3
        ok 1 a
        ok 1 again
        ok 3 c
    """)
    a, again, c, missing = group.subtests
    assert a.diagnostics == () and c.diagnostics == ("expected test 2, got 3",)
    assert (again.status, again.diagnostics) == (
        Status.ERROR, ("duplicate test number 1 (also at line 3): the KTAP producer is broken",))
    # Test 2 was never reported under its own number.
    assert (missing.name, missing.status) == ("test 2 (missing)", Status.ERROR)
    assert group.status is Status.ERROR


def test_duplicate_number_keeps_a_failure_and_counts_per_level():
    group = parse("""
        KTAP version 1
        1..2
            KTAP version 1
            1..1
            ok 1 inner
        ok 1 suite
        not ok 1 twice
        ok 2 b
    """)
    suite, twice, b = group.subtests
    assert suite.subtests[0].diagnostics == ()  # "ok 1" at another level is no duplicate
    assert twice.status is Status.FAIL and twice.diagnostics[-1].startswith("duplicate test number 1 ")
    assert b.diagnostics == ()


def test_out_of_order_numbers_fill_only_unseen():
    group = parse("""
        KTAP version 1
        1..3
        ok 2 b
        ok 1 a
    """)
    b, a, missing = group.subtests
    assert b.diagnostics == ("expected test 1, got 2",)
    assert a.diagnostics == ("expected test 2, got 1",)
    assert (missing.name, missing.status) == ("test 3 (missing)", Status.ERROR)


# The workload's layout (guest-tools/workload/migrate_suite.c): plan, preamble,
# then per case "# Subtest: NAME", the case's own lines, its result.
WORKLOAD = """\
    KTAP version 1
    1..3
    # kernel 6.1, 2 memory nodes (testing nodes 0 and 1), uid 0
    # Subtest: anon_move_pages
    # 128 private anonymous pages written under MPOL_BIND{0}
    # FAIL: anon: status[0] = node 0, expected node 1
    not ok 1 anon_move_pages
    ok 2 not_selected # SKIP not selected
    # Subtest: hangs
    # FAIL: hangs: child 77 did not finish within 30 s (killed)
    not ok 3 hangs # TIMEOUT stuck in kernel: kernel_move_pages+0x8d/0x1a0
"""


def test_workload_preamble_goes_to_the_suite_and_headers_are_names():
    group = parse(WORKLOAD, "workload")
    first, skipped, hung = group.subtests
    assert group.diagnostics == ("kernel 6.1, 2 memory nodes (testing nodes 0 and 1), uid 0",)
    assert first.diagnostics == ("128 private anonymous pages written under MPOL_BIND{0}",
                                 "FAIL: anon: status[0] = node 0, expected node 1")
    assert skipped.diagnostics == ()
    assert (hung.status, hung.directive) == (Status.FAIL, "TIMEOUT stuck in kernel: kernel_move_pages+0x8d/0x1a0")
    assert hung.diagnostics == ("FAIL: hangs: child 77 did not finish within 30 s (killed)",)


def test_without_subtest_headers_lines_after_the_plan_belong_to_the_first_test():
    group = parse("""
        KTAP version 1
        # Subtest: boot
        1..1
        # node 0: expected 1024 MiB, found 512 MiB
        not ok 1 node0_memory
    """)
    assert group.subtests[0].diagnostics == ("node 0: expected 1024 MiB, found 512 MiB",)
    assert group.diagnostics == ()


def test_subtest_header_of_a_test_that_never_reported_names_it():
    group = parse("""
        KTAP version 1
        1..2
        # preamble
        # Subtest: first
        ok 1 first
        # Subtest: second
        # started
    """)
    _, second = group.subtests
    assert (second.name, second.status) == ("second", Status.ERROR)
    assert group.diagnostics == ("preamble", "started")


def test_diagnostics_are_capped_with_a_count_and_where_to_read_them():
    chatter = "".join(f"# line {i}\n" for i in range(1000))
    group = parse_ktap(numbered(f"KTAP version 1\n1..1\n{chatter}# FAIL: at the end\nnot ok 1 noisy\n"),
                       "workload", log="workload.ktap")
    (noisy,) = group.subtests
    assert len(noisy.diagnostics) == MAX_DIAGNOSTICS + 1
    half = MAX_DIAGNOSTICS // 2
    assert noisy.diagnostics[:half] == tuple(f"line {i}" for i in range(half))
    assert noisy.diagnostics[half] == f"... {1001 - MAX_DIAGNOSTICS} more diagnostic lines dropped (see workload.ktap)"
    assert noisy.diagnostics[-1] == "FAIL: at the end"  # the last lines before the result are kept


def test_cap_holds_for_a_parent_and_the_suite_too():
    chatter = "".join(f"    # inner {i}\n" for i in range(300))
    before = "".join(f"# pre {i}\n" for i in range(300))
    group = parse_ktap(numbered(f"KTAP version 1\n{before}1..1\n    KTAP version 1\n    1..1\n{chatter}"
                                "    ok 1 leaf\nok 1 parent\n"), "g")
    assert len(group.diagnostics) == MAX_DIAGNOSTICS + 1 and "100 more diagnostic lines dropped" in \
        group.diagnostics[MAX_DIAGNOSTICS // 2]
    assert len(group.subtests[0].subtests[0].diagnostics) == MAX_DIAGNOSTICS + 1


def test_parser_reads_only_up_to_the_end_of_the_first_document():
    def lines():
        yield from numbered("KTAP version 1\n1..1\nok 1 a\nKTAP version 1\n")
        raise AssertionError("read past the next document")
    assert parse_ktap(lines(), "g").status is Status.PASS


def test_no_version_line_raises():
    with pytest.raises(KtapError):
        parse("1..1\nok 1 foo\n")


def test_text_before_version_is_ignored():
    group = parse("""
        ok 7 stray result from a boot script
        # stray comment
        KTAP version 1
        1..1
        ok 1 real
    """)
    assert [r.name for r in group.subtests] == ["real"]
    assert group.line == 3 and group.diagnostics == ()


@pytest.mark.parametrize("text, status", [
    ("KTAP version 1\n1..2\nok 1 a # SKIP\nok 2 b # SKIP", Status.SKIP),
    ("KTAP version 1\n1..2\nok 1 a # SKIP\nok 2 b", Status.PASS),
    ("KTAP version 1\n1..1\nnot ok 1 a # TODO", Status.PASS),
    ("KTAP version 1\n1..2\nnot ok 1 a\nnot ok 2 b # ERROR", Status.FAIL),  # KCIDB: FAIL outranks ERROR
    ("KTAP version 1\n1..2\nok 1 a\nnot ok 2 b # ERROR", Status.ERROR),
    ("KTAP version 1\n1..0", Status.SKIP),
    ("KTAP version 1", Status.ERROR),
])
def test_overall_status(text, status):
    assert parse(text).status is status


def test_second_document_ends_the_first():
    log = numbered("""
        [    0.1] booting
        [    0.2] KTAP version 1
        [    0.3] 1..1
        [    0.4] ok 1 first_doc
        [    0.5] random: crng init done
        [    0.6] KTAP version 1
        [    0.7]     KTAP version 1
        [    0.8]     1..1
        [    0.9]     not ok 1 case
        [    1.0] 1..1
        [    1.1] not ok 1 second_doc
    """)
    first = parse_ktap(log, "one")
    assert [r.name for r in first.subtests] == ["first_doc"]
    assert first.status is Status.PASS

    docs = split_documents(log)
    assert [[number for number, _ in doc] for doc in docs] == [[2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    second = parse_ktap(docs[1], "two")
    (result,) = second.subtests
    assert (result.name, result.status, result.line) == ("second_doc", Status.FAIL, 11)
    assert second.line == 6


def test_split_documents_without_any_document():
    assert split_documents(numbered("just\nnoise\n")) == []


# Real output captured from a full run on the default 6.1 kernel under QEMU:
# the serial console (boot checks, then the test module's KTAP among kernel
# messages) and the workload's stdout.
REAL = Path(__file__).parent / "data" / "ktap"


def test_real_console_holds_the_boot_and_module_documents():
    lines = list(enumerate((REAL / "console-6.1.log").read_text(errors="replace").split("\n"), 1))
    boot, module = split_documents(lines)
    boot_result = parse_ktap(boot, "boot")
    assert [t.name for t in boot_result.subtests] == [
        "numa_nodes_online", "node0_memory", "node0_cpus", "node1_memory", "node1_cpus", "swap_active"]
    assert boot_result.status is Status.PASS
    module_result = parse_ktap(module, "module")
    (suite,) = module_result.subtests
    assert suite.name == "migrate_pages" and len(suite.subtests) == 8
    assert all(t.status is Status.PASS for t in suite.subtests) and suite.subtests[0].name == "shmem_to_node1"
    assert all(t.line and "ok" in lines[t.line - 1][1] for t in suite.subtests)


def test_real_workload_output():
    lines = list(enumerate((REAL / "workload-6.1.ktap").read_text().split("\n"), 1))
    result = parse_ktap(lines, "workload")
    assert len(result.subtests) == 14 and result.status is Status.PASS
    assert result.subtests[-1].name == "query_mode"


def test_tests_that_never_reported_take_the_names_the_producer_lists():
    """After a hang the workload prints nothing more: its `--list` names the cases left."""
    lines = ["KTAP version 1", "1..4", "# Subtest: a", "ok 1 a", "# Subtest: b", "not ok 2 b # TIMEOUT stuck"]
    group = parse_ktap(list(enumerate(lines, 1)), "workload", names=["a", "b", "c", "d"])
    assert [(t.name, t.status) for t in group.subtests] == [
        ("a", Status.PASS), ("b", Status.FAIL), ("c", Status.ERROR), ("d", Status.ERROR)]
    short = parse_ktap(list(enumerate(lines, 1)), "workload", names=["a", "b", "c"])
    assert [t.name for t in short.subtests] == ["a", "b", "c", "test 4 (missing)"]
    nested = ["KTAP version 1", "1..1", "    KTAP version 1", "    1..2", "    ok 1 x", "ok 1 outer"]
    assert [t.name for t in parse_ktap(list(enumerate(nested, 1)), "g", names=["outer"]).leaves()] == \
        ["x", "test 2 (missing)"]
