"""The example topologies (examples/*.yaml) on the default 6.1 kernel: each boots,
the boot group checks what the spec promised, and the topology group runs the
cases that machine offers (the others skip, naming what they need)."""
from __future__ import annotations

import pytest
from conftest import REPO, harness

from harness.results import migrate_reasons
from harness.results.model import Status
from harness.results.report import load

pytestmark = pytest.mark.integration

CASES = ("three_node_migrate_pages", "memoryless_target", "memoryless_local_alloc", "cpuless_place_move",
         "memory_offline", "longterm_pin", "demotion")
BOOT_SKIPS = {"lower-tier-hmat": {"node2_lower_tier"}}  # the boot checks that skip on 6.1, naming the need


@pytest.mark.parametrize("example, boot_checks, passing, reasons", [
    ("three-nodes", {"node0_distances", "node2_distances"}, {"three_node_migrate_pages"}, {}),
    ("cpuless-memoryless", {"node1_memoryless", "node2_cpuless", "node2_distances", "movable_memory"},
     {"memoryless_target", "memoryless_local_alloc", "cpuless_place_move", "memory_offline", "longterm_pin"},
     {"memory_hotplug": "topology.memory_offline", "longterm_pin": "topology.longterm_pin"}),
    ("hotplug-movable", {"node1_removable", "movable_memory"}, {"memory_offline", "longterm_pin"},
     {"memory_hotplug": "topology.memory_offline", "longterm_pin": "topology.longterm_pin"}),
    ("lower-tier", {"node2_cpuless", "node2_lower_tier"},
     {"three_node_migrate_pages", "cpuless_place_move", "memory_offline", "longterm_pin", "demotion"},
     {"demotion": "topology.demotion", "memory_hotplug": "topology.memory_offline"}),
    # 6.1 does not tier CPU-less nodes by ACPI HMAT: node 2 stays in the top tier (a skip naming why)
    ("lower-tier-hmat", {"node2_cpuless", "node2_hmat"}, {"three_node_migrate_pages", "cpuless_place_move"}, {}),
])
def test_example_topology(default_kernel, tmp_path, example, boot_checks, passing, reasons):
    out = tmp_path / "out"
    result = harness("run", "--spec", str(REPO / "examples" / f"{example}.yaml"), "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    run = load(out)
    boot, topology = run.groups
    assert {t.name for t in boot.subtests} >= boot_checks
    skipped = BOOT_SKIPS.get(example, set())
    assert all(t.status is (Status.SKIP if t.name in skipped else Status.PASS) for t in boot.subtests), \
        [(t.name, t.status) for t in boot.subtests]
    status = {t.name: t for t in topology.subtests}
    assert tuple(status) == CASES
    assert {name for name, t in status.items() if t.status is Status.PASS} == passing
    for name, t in status.items():  # every other case is a skip that names its need
        assert name in passing or (t.status is Status.SKIP and "needs: " in (t.directive or "")), (name, t)
    cover = migrate_reasons.coverage(run)
    assert {r: test for r, test in reasons.items() if test in cover[r][0]} == reasons
