import textwrap
from pathlib import Path

import pytest

from harness import spec
from harness.errors import SpecError

pytestmark = pytest.mark.unit


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_no_spec_and_empty_spec_are_the_default(tmp_path):
    assert spec.load(None) == spec.Spec()
    assert spec.load(write(tmp_path, "")) == spec.Spec()


def test_full_spec(tmp_path):
    s = spec.load(write(tmp_path, """
        kernel: {source: linux, patches: [a.patch], configs: [x.config]}
        vm:
          cpus: 3
          memory: 1536M
          numa: [{mem: 1G, cpus: 0-1}, {mem: 512M, cpus: 2}]
          distances: [[10, 30], [30, 10]]
          swap: 256M
          accel: tcg
        timeouts: {boot: 30}
    """))
    assert s.kernel.source == str(tmp_path / "linux")
    assert s.kernel.patches == (tmp_path / "a.patch",)
    assert s.vm.numa == (spec.NumaNode(1024, (0, 1)), spec.NumaNode(512, (2,)))
    assert s.vm.memory_mib == 1536 and s.vm.swap_mib == 256
    assert s.vm.distances == ((10, 30), (30, 10))
    assert s.timeouts.boot == 30 and s.timeouts.build == spec.Timeouts().build


def test_three_nodes_cpuless_and_memoryless(tmp_path):
    s = spec.load(write(tmp_path, """
        vm:
          cpus: 3
          numa: [{mem: 1G, cpus: 0-1}, {mem: 0, cpus: 2}, {mem: 512M}, {mem: 256M, cpus: []}]
          distances: [[10, 20, 30, 30], [20, 10, 30, 30], [30, 30, 10, 40], [30, 30, 40, 10]]
    """))
    assert s.vm.numa == (spec.NumaNode(1024, (0, 1)), spec.NumaNode(0, (2,)), spec.NumaNode(512, ()),
                         spec.NumaNode(256, ()))
    assert s.vm.memory_mib == 1792 and s.vm.distances[2] == (30, 30, 10, 40)


def test_hotplug_and_movable(tmp_path):
    s = spec.load(write(tmp_path, """
        vm:
          numa: [{mem: 1G, cpus: 0-1}, {mem: 1G, cpus: 2-3}, {mem: 0}]
          hotplug: [{mem: 256M, node: 1}, {mem: 512M, node: 2}]
          movable: 256M
    """))
    assert s.vm.hotplug == (spec.Dimm(256, 1), spec.Dimm(512, 2)) and s.vm.movable_mib == 256
    assert s.vm.memory_mib == 2048 and s.vm.node_mib(1) == 1280 and s.vm.node_mib(2) == 512
    assert s.vm.kernel_args == "memhp_default_state=online_movable movablecore=256M"
    assert spec.VmSpec().kernel_args == ""


def test_lower_tier_node_is_an_nvdimm(tmp_path):
    s = spec.load(write(tmp_path, "vm: {cpus: 2, numa: [{mem: 1G, cpus: 0-1}, {mem: 512M, tier: lower}]}"))
    assert s.vm.numa[1] == spec.NumaNode(512, (), True) and s.vm.nvdimms == (spec.Dimm(512, 1),)
    assert s.vm.memory_mib == 1024 and s.vm.node_mib(1) == 384


def test_lower_tier_node_from_hmat(tmp_path):
    s = spec.load(write(tmp_path, """
        vm:
          cpus: 2
          numa: [{mem: 1G, cpus: 0}, {mem: 1G, cpus: 1}, {mem: 512M, tier: lower}]
          distances: [[10, 20, 40], [20, 10, 30], [40, 30, 10]]
          tiers: hmat
    """))
    assert s.vm.nvdimms == () and s.vm.memory_mib == 2560 and s.vm.node_mib(2) == 512  # plain memory
    assert s.vm.lower_tier_nodes == (2,) and s.vm.initiator(2) == 1  # the nearest node with CPUs
    assert s.vm.hmat == ((0, 0, 100, 20000), (0, 1, 200, 20000), (0, 2, 400, 5000),
                         (1, 0, 200, 20000), (1, 1, 100, 20000), (1, 2, 300, 5000))
    assert spec.VmSpec().hmat == () and spec.VmSpec().distance(0, 1) == 20
    with pytest.raises(SpecError, match=r"vm.tiers: 'acpi' is not one of nvdimm, hmat"):
        spec.load(write(tmp_path, "vm: {tiers: acpi}"))
    with pytest.raises(SpecError, match=r"vm.tiers: hmat describes the nodes with tier: lower .* no node has it"):
        spec.load(write(tmp_path, "vm: {tiers: hmat}"))


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "vm:\n  cpus: 4\n  numa: [unclosed\n")
    with pytest.raises(SpecError, match=r"spec.yaml, line \d+.*YAML syntax error"):
        spec.load(path)


def test_memory_that_does_not_add_up(tmp_path):
    path = write(tmp_path, "vm: {memory: 3G, numa: [{mem: 1G, cpus: 0-1}, {mem: 1G, cpus: 2-3}]}")
    with pytest.raises(SpecError, match="does not add up: 1024M \\+ 1024M = 2048M, but memory is 3072M"):
        spec.load(path)


@pytest.mark.parametrize("text, message", [
    ("vm: {cpus: 4, numa: [{mem: 1G, cpus: 0-2}, {mem: 1G, cpus: 2-3}]}", "cover 0-3 exactly once"),
    ("vm: {swap: lots}", "'lots' is not a size"),
    ("vm: {accel: xen}", "'xen' is not one of"),
    ("vm: {distances: [[10, 20]]}", "2x2 matrix"),
    ("vm: {cpus: 2, numa: [{cpus: 0-1}]}", "needs 'mem' \\(write mem: 0"),
    ("vm: {cpus: 2, numa: [{mem: 1G, cpus: 0-1}, {mem: 0}]}", "numa\\[1\\]: a node needs memory, CPUs or a DIMM"),
    ("vm: {hotplug: [{mem: 256M, node: 2}]}", "hotplug\\[0\\].node: 2 is not a node of vm.numa \\(0..1\\)"),
    ("vm: {hotplug: [{mem: 100M, node: 1}]}", "hotplug\\[0\\].mem: 100M is not a whole number of 128M"),
    ("vm: {hotplug: [{mem: 128M}]}", "each DIMM needs 'mem' and 'node'"),
    ("vm: {hotplug: {mem: 128M, node: 0}}", "expected a list of DIMMs"),
    ("vm: {movable: 2G}", "movable: 2048M leaves no memory"),
    ("vm: {cpus: 2, numa: [{mem: 1G, cpus: 0-1}, {mem: 512M, tier: far}]}", "tier: 'far' is not one of top, lower"),
    ("vm: {cpus: 2, numa: [{mem: 1G, cpus: 0}, {mem: 512M, cpus: 1, tier: lower}]}", "lower-tier node is far memory"),
    ("vm: {cpus: 2, numa: [{mem: 1G, cpus: 0-1}, {mem: 128M, tier: lower}]}", "at least 256M"),
    ("vm: {movable: 200M}", "movable: 200M is not a whole number"),
    ("vm: {cpus: 2, numa: [{mem: 0, cpus: 0}, {mem: 0, cpus: 1}]}", "at least one node needs memory"),
    ("vm: {numa: [{mem: -1G, cpus: 0-3}]}", "numa\\[0\\].mem: '-1G' is not a size"),
    ("vm: {cpus: 3, numa: [{mem: 1G, cpus: 0-2}, {mem: 1G}, {mem: 1G}], distances: [[10, 20], [20, 10]]}",
     "3x3 matrix"),
    ("kernel: {sauce: x}", "unknown key\\(s\\) sauce"),
    ("tests: [nope]", "is not a test group"),
    ("timeouts: {boot: -1}", "positive number"),
    ("[1, 2]", "expected a mapping"),
])
def test_bad_values_are_named(tmp_path, text, message):
    with pytest.raises(SpecError, match=message):
        spec.load(write(tmp_path, text))


def test_script_groups(tmp_path):
    (tmp_path / "smoke.sh").write_text("echo 'KTAP version 1'\n")
    s = spec.load(write(tmp_path, "tests: [boot, {name: smoke, script: smoke.sh, timeout: 30}]"))
    assert s.tests == ("boot", spec.ScriptGroup("smoke", tmp_path / "smoke.sh", 30))
    with pytest.raises(SpecError, match="script .*nope.sh does not exist"):
        spec.load(write(tmp_path, "tests: [{name: x, script: nope.sh}]"))
    with pytest.raises(SpecError, match="unique"):
        spec.load(write(tmp_path, "tests: [{name: x, script: smoke.sh}, {name: x, script: smoke.sh}]"))


def test_jinja_is_rendered_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setenv("SWAP_SIZE", "128M")
    assert spec.load(write(tmp_path, "vm: {swap: '{{ env.SWAP_SIZE }}'}")).vm.swap_mib == 128
    with pytest.raises(SpecError, match="template error"):
        spec.load(write(tmp_path, "vm: {swap: '{{ env.NOT_SET_ANYWHERE }}'}"))


def test_command_line_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = spec.with_overrides(spec.Spec(), source="tree", patches=[Path("p1")], configs=[Path("c1")])
    assert s.kernel.source == str(tmp_path / "tree")
    assert s.kernel.patches == (tmp_path / "p1",) and s.kernel.configs == (tmp_path / "c1",)
    assert spec.with_overrides(s, source="debian:linux-source-6.12").kernel.source == "debian:linux-source-6.12"


def test_sizes_and_cpus():
    assert spec.parse_size_mib("2G", "x") == 2048
    assert spec.parse_size_mib("512MiB", "x") == 512
    assert spec.parse_cpus("0-1,4", "x") == (0, 1, 4)
    assert spec.parse_cpus([0, "2-3"], "x") == (0, 2, 3)


def test_profiles_name_fragments_of_kernel_configs_profiles(tmp_path):
    s = spec.load(write(tmp_path, "kernel: {profiles: [debug-info], configs: [x.config]}"))
    assert s.kernel.profiles == ("debug-info",)
    assert [f.name for f in s.kernel.fragments] == ["debug-info.config", "x.config"]
    assert all(f.is_file() for f in s.kernel.fragments[:1])
    with pytest.raises(SpecError, match=r"'kasn' is not a profile; known: .*debug-info"):
        spec.load(write(tmp_path, "kernel: {profiles: [kasn]}"))
    with pytest.raises(SpecError, match="--profile: 'nope' is not a profile"):
        spec.with_overrides(spec.Spec(), profiles=["nope"])
    assert spec.with_overrides(s, profiles=["debug-info"]).kernel.profiles == ("debug-info",)


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("text", [
    "tests: [boot, workload, module, topology]",
    *(f"vm: {vm}" for vm in ("{cpus: 2, numa: [{mem: 1G, cpus: 0}, {mem: 0, cpus: 1}]}",  # memoryless node
                             "{cpus: 2, numa: [{mem: 1G, cpus: 0-1}, {mem: 512M}]}",  # CPU-less node
                             "{cpus: 2, numa: [{mem: 1G, cpus: 0-1}, {mem: 512M, tier: lower}]}",
                             "{hotplug: [{mem: 256M, node: 1}]}", "{movable: 256M}")),
    *EXAMPLES,
])
def test_every_topology_runs_on_the_default_kernel(tmp_path, text):
    """A topology is data: no spec field brings a kernel of its own (a build per topology cost 600 s)."""
    s = spec.load(text if isinstance(text, Path) else write(tmp_path, text))
    assert s.kernel.profiles == () and s.kernel.fragments == ()


def test_the_topology_options_are_default_fragments():
    from harness.kernel import config
    assert (config.FRAGMENT_DIR / "topology.config").is_file()
    assert not (config.FRAGMENT_DIR / "profiles" / "topology.config").exists()

