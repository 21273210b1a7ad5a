"""Spec stage: load and validate a YAML run spec; hand on a frozen `Spec`.

Every field has a default, so an empty spec (or none) is a valid run on the
default kernel source. A spec may use Jinja2 expressions (`{{ env.HOME }}`);
it is rendered before it is parsed. Relative paths are taken from the spec
file's own directory. Errors name the file and line.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
import yaml

from harness.errors import SpecError
from harness.kernel import config as kconfig

DEFAULT_SOURCE = "debian:linux-source-6.1"


@dataclass(frozen=True)
class NumaNode:
    mem_mib: int  # 0: a memoryless node (CPUs only)
    cpus: tuple[int, ...]  # (): a CPU-less node (memory only)
    lower_tier: bool = False  # tier: lower: its memory in a lower memory tier (made as vm.tiers says)


TIERS = ("top", "lower")
# How a tier: lower node's memory reaches a lower memory tier (vm.tiers): an nvdimm the guest
# onlines through dax/kmem (6.1 and 6.12), or plain memory that ACPI HMAT describes as slower
# (kernels that tier CPU-less nodes by HMAT: 6.10 and later).
TIER_SOURCES = ("nvdimm", "hmat")
HMAT_LATENCY_NS_PER_DISTANCE = 10  # a node's HMAT latency from an initiator: its distance (10 local) x 10 ns
HMAT_BANDWIDTH_MBPS = {False: 20000, True: 5000}  # a target's HMAT bandwidth: top tier, lower tier


@dataclass(frozen=True)
class Dimm:
    """A pc-dimm plugged in at boot; the guest onlines it as ZONE_MOVABLE (removable)."""

    mem_mib: int
    node: int


BLOCK_MIB = 128  # x86_64's memory block: the unit memory goes on- and offline in


@dataclass(frozen=True)
class KernelSpec:
    source: str = DEFAULT_SOURCE  # "debian:<package>", a kernel tree, or a git checkout
    rev: str | None = None  # a git revision of `source`
    patches: tuple[Path, ...] = ()
    configs: tuple[Path, ...] = ()  # extra config fragments, merged after ours
    profiles: tuple[str, ...] = ()  # kernel-configs/profiles/NAME.config, merged before `configs`

    @property
    def fragments(self) -> tuple[Path, ...]:
        """The fragments merged after kernel-configs/*.config: the profiles', then the user's."""
        return kconfig.profile_fragments(self.profiles) + self.configs


@dataclass(frozen=True)
class VmSpec:
    cpus: int = 4
    numa: tuple[NumaNode, ...] = (NumaNode(1024, (0, 1)), NumaNode(1024, (2, 3)))
    distances: tuple[tuple[int, ...], ...] | None = None
    swap_mib: int = 512
    accel: str = "auto"  # auto | kvm | tcg
    append: str = ""  # extra kernel command line
    hotplug: tuple[Dimm, ...] = ()  # DIMMs onlined movable (memhp_default_state=online_movable)
    movable_mib: int = 0  # boot memory reserved for ZONE_MOVABLE (movablecore=)
    tiers: str = "nvdimm"  # TIER_SOURCES: how the lower-tier nodes get their tier

    def on_nvdimm(self, node: NumaNode) -> bool:
        """Is this node's memory an nvdimm (a lower-tier node, tiers: nvdimm)?"""
        return node.lower_tier and self.tiers == "nvdimm"

    @property
    def memory_mib(self) -> int:
        """Boot memory (QEMU's -m): the nodes' memory, without the DIMMs and nvdimms."""
        return sum(node.mem_mib for node in self.numa if not self.on_nvdimm(node))

    @property
    def nvdimms(self) -> tuple[Dimm, ...]:
        """The lower-tier nodes' memory, as nvdimms."""
        return tuple(Dimm(n.mem_mib, i) for i, n in enumerate(self.numa) if self.on_nvdimm(n))

    @property
    def lower_tier_nodes(self) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(self.numa) if n.lower_tier)

    def distance(self, i: int, j: int) -> int:
        """The SLIT distance, the kernel's default (10 local, 20 remote) without a table."""
        return self.distances[i][j] if self.distances else 10 if i == j else 20

    def initiator(self, node: int) -> int:
        """The node with CPUs nearest to `node` (itself if it has CPUs): its HMAT initiator."""
        return min((i for i, n in enumerate(self.numa) if n.cpus), key=lambda i: (self.distance(i, node), i))

    @property
    def hmat(self) -> tuple[tuple[int, int, int, int], ...]:
        """tiers: hmat: (initiator, target, latency ns, bandwidth MB/s) for every node with CPUs and every
        node with memory: latency from the distance, bandwidth lower for a lower-tier target."""
        if self.tiers != "hmat":
            return ()
        return tuple((i, t, self.distance(i, t) * HMAT_LATENCY_NS_PER_DISTANCE, HMAT_BANDWIDTH_MBPS[target.lower_tier])
                     for i, initiator in enumerate(self.numa) if initiator.cpus
                     for t, target in enumerate(self.numa) if target.mem_mib)

    def node_mib(self, node: int) -> int:
        """What node `node` holds once the guest is up: its memory and its DIMMs (of an
        nvdimm, dax/kmem onlines whole memory blocks after the device's info block: one less)."""
        mem = self.numa[node].mem_mib - (BLOCK_MIB if self.on_nvdimm(self.numa[node]) else 0)
        return mem + sum(d.mem_mib for d in self.hotplug if d.node == node)

    @property
    def kernel_args(self) -> str:
        """The kernel command line the topology needs."""
        args = ["memhp_default_state=online_movable"] if self.hotplug else []
        args += [f"movablecore={self.movable_mib}M"] if self.movable_mib else []
        return " ".join(args)


@dataclass(frozen=True)
class ScriptGroup:
    """A test group of your own: a guest program that prints KTAP on stdout."""

    name: str
    script: Path
    timeout: float | None = None  # default: timeouts.test


@dataclass(frozen=True)
class ChosenTests:
    """A built-in group with its tests chosen by name: {kselftest-mm: [migration, hmm]}."""

    name: str  # the group kind's
    tests: tuple[str, ...]


# a built-in group kind by name (harness/groups), with chosen tests, or your own
GroupEntry = str | ChosenTests | ScriptGroup


def group_name(entry: GroupEntry) -> str:
    return entry if isinstance(entry, str) else entry.name


def _named_groups(default_only: bool = False, choosing: bool = False) -> tuple[str, ...]:
    """The group kinds a spec names (or chooses tests of), from the table in
    harness/groups (which imports this module: hence the import here)."""
    from harness import groups

    return tuple(kind.name for kind in groups.KINDS if kind.by_name and (kind.default or not default_only)
                 and (kind.chooses or not choosing))


def default_groups() -> tuple[GroupEntry, ...]:
    return _named_groups(default_only=True)


@dataclass(frozen=True)
class Timeouts:
    build: float = 3600
    boot: float = 120  # kernel start to the guest saying it is ready
    test: float = 600  # one test group


@dataclass(frozen=True)
class Spec:
    kernel: KernelSpec = field(default_factory=KernelSpec)
    vm: VmSpec = field(default_factory=VmSpec)
    tests: tuple[GroupEntry, ...] = field(default_factory=default_groups)
    timeouts: Timeouts = field(default_factory=Timeouts)
    after_crash: str = "stop"  # stop | reboot: what to do with the groups left after a crash or hang


_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_SCALE_MIB = {"": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_size_mib(value: object, where: str) -> int:
    """'1G', '512M', '512MiB' or a number of MiB -> MiB."""
    m = _SIZE.match(str(value))
    if isinstance(value, int) and not isinstance(value, bool):
        mib: float = value
    elif m:
        mib = int(m.group(1)) * _SCALE_MIB[m.group(2).upper()]
    else:
        raise SpecError(f"{where}: '{value}' is not a size (write e.g. 512M or 1G)")
    if mib != int(mib) or mib <= 0:
        raise SpecError(f"{where}: '{value}' is not a positive whole number of MiB")
    return int(mib)


def cpu_ranges(cpus: tuple[int, ...]) -> list[str]:
    """(0, 1, 3) -> ['0-1', '3']: the inverse of parse_cpus, joined with ','
    it is a kernel cpulist; QEMU's -numa takes one cpus= per range."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges]


def parse_cpus(value: object, where: str) -> tuple[int, ...]:
    """'0-1', '0,2-3', 3 or [0, 1] -> (0, 1, ...)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list):
        return tuple(c for item in value for c in parse_cpus(item, where))
    cpus: list[int] = []
    for part in str(value).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", part)
        if not m:
            raise SpecError(f"{where}: '{value}' is not a CPU list (write e.g. 0-1 or 0,2)")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        cpus.extend(range(first, last + 1))
    return tuple(cpus)


def _check_keys(data: object, allowed: set[str], where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    return data


def _paths(values: object, base: Path, where: str) -> tuple[Path, ...]:
    if values is None:
        return ()
    if not isinstance(values, list):
        raise SpecError(f"{where}: expected a list of paths")
    return tuple((base / str(v)).resolve() for v in values)


def _profiles(values: object, where: str) -> tuple[str, ...]:
    known = kconfig.profiles()
    names = values if isinstance(values, list) else [values] if values else []
    for name in names:
        if name not in known:
            raise SpecError(f"{where}: '{name}' is not a profile; known: {', '.join(known)} "
                            f"(kernel-configs/profiles/NAME.config)")
    return tuple(dict.fromkeys(map(str, names)))


def _kernel(data: object, base: Path, where: str) -> KernelSpec:
    d = _check_keys(data, {"source", "rev", "patches", "configs", "profiles"}, where)
    source = str(d.get("source", DEFAULT_SOURCE))
    if not source.startswith("debian:"):
        source = str((base / source).resolve())
    return KernelSpec(
        source=source,
        rev=None if d.get("rev") is None else str(d["rev"]),
        patches=_paths(d.get("patches"), base, f"{where}.patches"),
        configs=_paths(d.get("configs"), base, f"{where}.configs"),
        profiles=_profiles(d.get("profiles"), f"{where}.profiles"),
    )


def _vm(data: object, where: str) -> VmSpec:
    d = _check_keys(data, {"memory", "cpus", "numa", "distances", "swap", "accel", "append", "hotplug", "movable",
                           "tiers"}, where)
    default = VmSpec()
    cpus = d.get("cpus", default.cpus)
    if not isinstance(cpus, int) or cpus < 1:
        raise SpecError(f"{where}.cpus: expected a positive number, got {cpus!r}")
    numa = default.numa
    if "numa" in d:
        if not isinstance(d["numa"], list) or not d["numa"]:
            raise SpecError(f"{where}.numa: expected a non-empty list of nodes")
        nodes = []
        for i, node in enumerate(d["numa"]):
            nodes.append(_node(node, f"{where}.numa[{i}]"))
        numa = tuple(nodes)
    vm = VmSpec(
        cpus=cpus,
        numa=numa,
        distances=_distances(d.get("distances"), len(numa), f"{where}.distances"),
        swap_mib=0 if d.get("swap") in (0, False) else parse_size_mib(d.get("swap", "512M"), f"{where}.swap"),
        accel=str(d.get("accel", "auto")),
        append=str(d.get("append", "")),
        hotplug=_hotplug(d.get("hotplug"), len(numa), f"{where}.hotplug"),
        movable_mib=_blocks(d["movable"], f"{where}.movable") if d.get("movable") not in (None, 0) else 0,
        tiers=str(d.get("tiers", "nvdimm")),
    )
    _check_topology(vm, d.get("memory"), where)
    return vm


def _node(data: object, where: str) -> NumaNode:
    """A node: `mem` (0 for a memoryless node) and `cpus` ([] or omitted for a CPU-less node)."""
    n = _check_keys(data, {"mem", "cpus", "tier"}, where)
    if "mem" not in n:
        raise SpecError(f"{where}: each node needs 'mem' (write mem: 0 for a memoryless node)")
    mem = 0 if n["mem"] in (0, "0") else parse_size_mib(n["mem"], f"{where}.mem")
    cpus = parse_cpus([] if n.get("cpus") is None else n["cpus"], f"{where}.cpus")
    tier = str(n.get("tier", "top"))
    if tier not in TIERS:
        raise SpecError(f"{where}.tier: '{tier}' is not one of {', '.join(TIERS)}")
    if tier == "lower" and (cpus or _blocks(n["mem"], f"{where}.mem") < 2 * BLOCK_MIB):
        raise SpecError(f"{where}: a lower-tier node is far memory: no cpus, and mem of at least "
                        f"{2 * BLOCK_MIB}M in whole {BLOCK_MIB}M blocks (dax/kmem loses the first block)")
    return NumaNode(mem, cpus, tier == "lower")


def _blocks(value: object, where: str) -> int:
    """A size in whole memory blocks (what the kernel can offline), in MiB."""
    mib = parse_size_mib(value, where)
    if mib % BLOCK_MIB:
        raise SpecError(f"{where}: {mib}M is not a whole number of {BLOCK_MIB}M memory blocks")
    return mib


def _hotplug(value: object, nodes: int, where: str) -> tuple[Dimm, ...]:
    """`hotplug: [{mem: 256M, node: 1}, ...]`: DIMMs plugged in at boot."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError(f"{where}: expected a list of DIMMs such as [{{mem: 256M, node: 1}}]")
    dimms = []
    for i, item in enumerate(value):
        d = _check_keys(item, {"mem", "node"}, f"{where}[{i}]")
        if "mem" not in d or "node" not in d:
            raise SpecError(f"{where}[{i}]: each DIMM needs 'mem' and 'node'")
        node = d["node"]
        if not isinstance(node, int) or isinstance(node, bool) or not 0 <= node < nodes:
            raise SpecError(f"{where}[{i}].node: {node!r} is not a node of vm.numa (0..{nodes - 1})")
        dimms.append(Dimm(_blocks(d["mem"], f"{where}[{i}].mem"), node))
    return tuple(dimms)


def _distances(value: object, nodes: int, where: str) -> tuple[tuple[int, ...], ...] | None:
    if value is None:
        return None
    rows = value if isinstance(value, list) else []
    if len(rows) != nodes or any(not isinstance(r, list) or len(r) != nodes for r in rows):
        raise SpecError(f"{where}: expected a {nodes}x{nodes} matrix, one row per NUMA node")
    for i, row in enumerate(rows):
        if row[i] != 10 or any(not isinstance(v, int) or not 10 <= v <= 255 for v in row):
            raise SpecError(f"{where}: row {i} must have 10 on the diagonal and values in 10..255")
    return tuple(tuple(r) for r in rows)


def _check_topology(vm: VmSpec, memory: object, where: str) -> None:
    if not vm.memory_mib:
        raise SpecError(f"{where}.numa: every node has mem: 0; at least one node needs memory")
    for i, node in enumerate(vm.numa):
        if not vm.node_mib(i) and not node.cpus:
            raise SpecError(f"{where}.numa[{i}]: a node needs memory, CPUs or a DIMM (vm.hotplug); "
                            "this one has none")
    if memory is not None:
        total = parse_size_mib(memory, f"{where}.memory")
        if total != vm.memory_mib:
            sizes = " + ".join(f"{n.mem_mib}M" for n in vm.numa)
            raise SpecError(
                f"{where}: the NUMA nodes' memory does not add up: {sizes} = {vm.memory_mib}M, "
                f"but memory is {total}M"
            )
    assigned = sorted(c for n in vm.numa for c in n.cpus)
    if assigned != list(range(vm.cpus)):
        raise SpecError(
            f"{where}: the NUMA nodes' cpus must cover 0-{vm.cpus - 1} exactly once each; "
            f"they list {assigned}"
        )
    if vm.movable_mib >= vm.memory_mib:
        raise SpecError(f"{where}.movable: {vm.movable_mib}M leaves no memory for the kernel "
                        f"(the nodes have {vm.memory_mib}M)")
    if vm.tiers not in TIER_SOURCES:
        raise SpecError(f"{where}.tiers: '{vm.tiers}' is not one of {', '.join(TIER_SOURCES)}")
    if vm.tiers == "hmat" and not vm.lower_tier_nodes:
        raise SpecError(f"{where}.tiers: hmat describes the nodes with tier: lower in ACPI HMAT; no node has it")
    if vm.accel not in ("auto", "kvm", "tcg"):
        raise SpecError(f"{where}.accel: '{vm.accel}' is not one of auto, kvm, tcg")


def _timeouts(data: object, where: str) -> Timeouts:
    d = _check_keys(data, {"build", "boot", "test"}, where)
    for key, value in d.items():
        if not isinstance(value, (int, float)) or value <= 0:
            raise SpecError(f"{where}.{key}: expected a positive number of seconds, got {value!r}")
    return Timeouts(**d)


def _chosen(name: str, value: object, where: str) -> ChosenTests:
    """{kselftest-mm: [migration, hmm]}: tests by name; whether the tree has
    them is known once it is built."""
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: expected a non-empty list of test names, e.g. [migration, hmm]")
    for i, test in enumerate(value):
        if not isinstance(test, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", test):
            raise SpecError(f"{where}[{i}]: {test!r} is not a test name (letters, digits, _ . - only)")
    if len(set(value)) != len(value):
        raise SpecError(f"{where}: a test is named twice in {value}")
    return ChosenTests(name, tuple(value))


def _tests(value: object, base: Path, where: str) -> tuple[GroupEntry, ...]:
    if value is None:
        return default_groups()
    if not isinstance(value, list):
        raise SpecError(f"{where}: expected a list of test groups")
    known = _named_groups()
    groups: list[GroupEntry] = []
    for i, item in enumerate(value):
        if isinstance(item, str) and item in known:
            groups.append(item)
            continue
        if isinstance(item, dict) and len(item) == 1 and next(iter(item)) in _named_groups(choosing=True):
            name, tests = next(iter(item.items()))
            groups.append(_chosen(name, tests, f"{where}[{i}].{name}"))
            continue
        if not isinstance(item, dict):
            choose = "".join(f"{{{name}: [TEST, ...]}}, " for name in _named_groups(choosing=True))
            raise SpecError(f"{where}[{i}]: '{item}' is not a test group; use one of "
                            f"{', '.join(known)}, {choose}or {{name: NAME, script: FILE}}")
        d = _check_keys(item, {"name", "script", "timeout"}, f"{where}[{i}]")
        if "name" not in d or "script" not in d:
            raise SpecError(f"{where}[{i}]: a script group needs 'name' and 'script'")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(d["name"])) or d["name"] in known:
            raise SpecError(f"{where}[{i}]: '{d['name']}' cannot name a group (letters, digits, _ . - only)")
        script = (base / str(d["script"])).resolve()
        if not script.is_file():
            raise SpecError(f"{where}[{i}]: script {script} does not exist")
        timeout = d.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise SpecError(f"{where}[{i}].timeout: expected a positive number of seconds")
        groups.append(ScriptGroup(str(d["name"]), script, timeout))
    names = [group_name(g) for g in groups]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: group names must be unique, got {names}")
    return tuple(groups)


def from_dict(data: object, base: Path, where: str = "spec") -> Spec:
    d = _check_keys(data, {"kernel", "vm", "tests", "timeouts", "after_crash"}, where)
    if d.get("after_crash", "stop") not in ("stop", "reboot"):
        raise SpecError(f"{where}: after_crash: '{d['after_crash']}' is not one of stop, reboot")
    return Spec(
        kernel=_kernel(d.get("kernel"), base, f"{where}: kernel"),
        vm=_vm(d.get("vm"), f"{where}: vm"),
        tests=_tests(d.get("tests"), base, f"{where}: tests"),
        timeouts=_timeouts(d.get("timeouts"), f"{where}: timeouts"),
        after_crash=d.get("after_crash", "stop"),
    )


def read(path: Path) -> object:
    """A spec file rendered with Jinja2 and parsed, not yet validated."""
    try:
        raw = path.read_bytes()
        text = raw.decode()
    except OSError as e:
        raise SpecError(f"cannot read spec {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise SpecError(f"{path}, line {line}: byte 0x{raw[e.start]:02x} is not UTF-8 "
                        "(save the spec as UTF-8)") from None
    try:
        text = jinja2.Template(text, undefined=jinja2.StrictUndefined).render(env=os.environ)
    except jinja2.TemplateSyntaxError as e:
        raise SpecError(f"{path}, line {e.lineno}: template error: {e.message}") from None
    except jinja2.UndefinedError as e:
        raise SpecError(f"{path}: template error: {e.message}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = ""
        if e.context and e.context_mark and e.context_mark is not mark:
            context = f" ({e.context} that starts at line {e.context_mark.line + 1})"
        raise SpecError(f"{path}{where}: YAML syntax error: {e.problem or e.context}{context}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: YAML error: {e}") from None
    return data


def load(path: Path | None) -> Spec:
    """Read, render and validate a spec file; None gives the default spec."""
    if path is None:
        return Spec()
    data = read(path)
    if isinstance(data, dict) and "matrix" in data:
        raise SpecError(f"{path} declares a matrix: run it with 'harness matrix {path}'")
    return from_dict(data, path.parent.resolve(), where=str(path))


def with_overrides(spec: Spec, *, source: str | None = None, rev: str | None = None,
                   patches: Sequence[Path] = (), configs: Sequence[Path] = (),
                   profiles: Sequence[str] = ()) -> Spec:
    """Command-line flags win over the spec; paths are taken from the cwd."""
    kernel = spec.kernel
    if source:
        kernel = replace(kernel, source=source if source.startswith("debian:") else str(Path(source).resolve()))
    if rev:
        kernel = replace(kernel, rev=rev)
    if patches:
        kernel = replace(kernel, patches=kernel.patches + tuple(Path(p).resolve() for p in patches))
    if configs:
        kernel = replace(kernel, configs=kernel.configs + tuple(Path(c).resolve() for c in configs))
    if profiles:
        kernel = replace(kernel, profiles=_profiles(list(kernel.profiles) + list(profiles), "--profile"))
    return replace(spec, kernel=kernel)
