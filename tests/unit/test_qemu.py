"""harness/vm/qemu.py: the QEMU command line rendered from the topology, and
golden files of the example specs' command lines (data/golden/qemu/*.txt;
UPDATE_GOLDEN=1 rewrites them)."""
import contextlib
import os
import re
import shlex
import signal
from pathlib import Path

import pytest

from harness import matrix
from harness.spec import Dimm, NumaNode, Spec, VmSpec, load
from harness.vm import qemu
from harness.vm.console import Console, CrashWatch

REPO = Path(__file__).resolve().parents[2]
GOLDEN_QEMU = Path(__file__).parent / "data" / "golden" / "qemu"

pytestmark = pytest.mark.unit


def test_qemu_command_line_from_topology():
    vm = VmSpec(cpus=4, numa=(NumaNode(1024, (0, 1)), NumaNode(512, (2, 3))), distances=((10, 20), (20, 10)))
    argv = qemu.command_line(vm, kernel=Path("/k"), initrd=Path("/i"), swap_disk=Path("/s.img"), scratch_disk=Path("/x.img"),
                             accel="tcg", ssh_port=2222)
    joined = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64"
    assert "-m 1536M" in joined and "-smp 4,sockets=4,cores=1,threads=1" in joined
    assert "-numa node,nodeid=1,memdev=mem1,cpus=2-3" in joined
    assert "-object memory-backend-ram,id=mem1,size=512M" in joined
    assert "-numa dist,src=0,dst=1,val=20" in joined
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in joined and "restrict=on" in joined
    assert argv[argv.index("-append") + 1].startswith("console=ttyS0 panic=-1")
    assert "-no-reboot" in argv and "-accel" not in argv  # one way to choose it: -machine's accel=
    assert option(argv, "-machine") == ["q35,accel=tcg"] and option(argv, "-cpu") == ["max"]


def test_qemu_noncontiguous_cpus_and_no_ssh():
    vm = VmSpec(cpus=3, numa=(NumaNode(512, (0, 2)), NumaNode(512, (1,))), swap_mib=0)
    joined = " ".join(qemu.command_line(vm, kernel=Path("/k"), initrd=Path("/i"), swap_disk=Path("/s"), scratch_disk=Path("/x"),
                                        accel="kvm", ssh_port=None))
    assert "nodeid=0,memdev=mem0,cpus=0,cpus=2" in joined
    assert "hostfwd" not in joined and "-cpu host" in joined


def test_qemu_memoryless_and_cpuless_nodes():
    vm = VmSpec(cpus=3, numa=(NumaNode(512, (0, 1)), NumaNode(0, (2,)), NumaNode(256, ())),
                distances=((10, 20, 30), (20, 10, 30), (30, 30, 10)))
    argv = qemu.command_line(vm, kernel=Path("/k"), initrd=Path("/i"), swap_disk=Path("/s"), scratch_disk=Path("/x"),
                             accel="tcg", ssh_port=None)
    numa = [argv[i + 1] for i, a in enumerate(argv) if a == "-numa"]
    assert numa[:3] == ["node,nodeid=0,memdev=mem0,cpus=0-1", "node,nodeid=1,cpus=2", "node,nodeid=2,memdev=mem2"]
    assert "dist,src=2,dst=1,val=30" in numa and len(numa) == 3 + 6
    assert "id=mem1" not in " ".join(argv) and argv[argv.index("-m") + 1] == "768M"


def test_qemu_hotplugged_dimms_and_movable_memory():
    vm = VmSpec(cpus=2, numa=(NumaNode(512, (0,)), NumaNode(512, (1,))), hotplug=(Dimm(256, 1), Dimm(128, 0)),
                movable_mib=128)
    argv = qemu.command_line(vm, kernel=Path("/k"), initrd=Path("/i"), swap_disk=Path("/s"), scratch_disk=Path("/x"),
                             accel="tcg", ssh_port=None)
    assert argv[argv.index("-m") + 1] == "1024M,slots=2,maxmem=1408M"
    assert "memory-backend-ram,id=dimm0,size=256M" in argv and "pc-dimm,id=dimm1,memdev=dimm1,node=0" in argv
    assert argv[argv.index("-append") + 1].endswith(" memhp_default_state=online_movable movablecore=128M")


def test_qemu_lower_tier_node_is_an_nvdimm():
    vm = VmSpec(cpus=2, numa=(NumaNode(512, (0, 1)), NumaNode(512, (), True)), hotplug=(Dimm(128, 0),))
    argv = qemu.command_line(vm, kernel=Path("/k"), initrd=Path("/i"), swap_disk=Path("/s"), scratch_disk=Path("/x"),
                             accel="tcg", ssh_port=None)
    assert argv[argv.index("-machine") + 1] == "q35,accel=tcg,nvdimm=on"
    assert argv[argv.index("-m") + 1] == "512M,slots=2,maxmem=1152M"
    assert "node,nodeid=1" in argv and "nvdimm,id=nvdimm0,memdev=nv0,node=1" in argv
    assert argv.index("nvdimm,id=nvdimm0,memdev=nv0,node=1") < argv.index("pc-dimm,id=dimm0,memdev=dimm0,node=0")
def test_qemu_lower_tier_node_from_hmat():
    vm = VmSpec(cpus=2, numa=(NumaNode(512, (0, 1)), NumaNode(512, (), True)), tiers="hmat")
    argv = qemu.command_line(vm, kernel=Path("/k"), initrd=Path("/i"), swap_disk=Path("/s"), scratch_disk=Path("/x"),
                             accel="tcg", ssh_port=None)
    assert option(argv, "-machine") == ["q35,accel=tcg,hmat=on"] and option(argv, "-m") == ["1024M"]
    numa = option(argv, "-numa")
    assert numa[:2] == ["node,nodeid=0,memdev=mem0,cpus=0-1", "node,nodeid=1,memdev=mem1,initiator=0"]
    assert "hmat-lb,initiator=0,target=1,hierarchy=memory,data-type=access-latency,latency=200" in numa
    assert "hmat-lb,initiator=0,target=1,hierarchy=memory,data-type=access-bandwidth,bandwidth=5000M" in numa
    assert len(numa) == 2 + 4 and "nvdimm" not in " ".join(argv)


def option(argv: list[str], name: str) -> list[str]:
    """Every value `name` is given in argv."""
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


@pytest.mark.parametrize("accel, cpu", [("kvm", "host"), ("tcg", "max")])
def test_the_accelerator_asked_for_is_the_one_qemu_gets(accel, cpu):
    argv = qemu.command_line(Spec().vm, kernel=Path("/k"), initrd=Path("/i"), swap_disk=Path("/s"),
                             scratch_disk=Path("/x"), accel=accel, ssh_port=None)
    assert option(argv, "-machine") == [f"q35,accel={accel}"] and option(argv, "-cpu") == [cpu]
    assert "-accel" not in argv and "-enable-kvm" not in argv  # no second, contradicting choice


def example_specs() -> dict[str, Spec]:
    """The README's default run, every spec under examples/ and every entry of ci/nightly.yaml
    (each machine once, under its first name)."""
    examples = {"default": Spec()}
    for path in sorted((REPO / "examples").glob("*.yaml")):
        examples[f"example-{path.stem}"] = load(path)
    for entry in matrix.expand(REPO / "ci" / "nightly.yaml"):  # the kernel is no part of the command line
        if entry.spec.vm not in [spec.vm for spec in examples.values()]:
            examples[f"nightly-{entry.name}"] = entry.spec
    return examples


def one_option_per_line(argv: list[str]) -> str:
    lines = [argv[0]]
    for arg in argv[1:]:
        if arg.startswith("-"):
            lines.append(arg)
        else:
            lines[-1] += " " + shlex.quote(arg)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name, accel", [(n, a) for n in example_specs() for a in ("kvm", "tcg")])
def test_qemu_command_line_of_each_example_spec_is_golden(name, accel):
    argv = qemu.command_line(example_specs()[name].vm, kernel=Path("/cache/bzImage"), initrd=Path("/run/initramfs.cpio"),
                             swap_disk=Path("/run/swap.img"), scratch_disk=Path("/run/scratch.img"), accel=accel,
                             ssh_port=2222)
    golden = GOLDEN_QEMU / f"{name}-{accel}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(one_option_per_line(argv))
    assert one_option_per_line(argv) == golden.read_text(), \
        f"{golden} differs; if the change is intended, rerun with UPDATE_GOLDEN=1 and review the diff"


@contextlib.contextmanager
def fake_qemu(tmp_path, argv):
    """A real process run as QEMU by a Console (no crash table); closed afterwards."""
    console = Console(argv, tmp_path / "console.log", CrashWatch(re.compile("(?!)"), lambda lines: []))
    try:
        yield console
    finally:
        console.close()


@contextlib.contextmanager
def ended_console(tmp_path, argv, kill, before):
    """fake_qemu, killed -9 from outside when `kill` (`before` holds while it runs), read until it ends."""
    with fake_qemu(tmp_path, argv) as console:
        assert before(console) or not kill
        if kill:
            os.kill(console.pid, signal.SIGKILL)
        console.wait_for(None, timeout=10)
        yield console


@pytest.mark.parametrize("argv, kill, signum", [
    (["sleep", "60"], True, 9),  # kill -9 from outside
    (["sh", "-c", "echo 'qemu-system-x86_64: terminating on signal 15 from pid 42 (kill)'"], False, 15),
    (["sh", "-c", "echo 'Kernel panic - not syncing: x'"], False, None),  # -no-reboot: QEMU ends by itself
    (["sh", "-c", "kill -ABRT $$"], False, None),  # QEMU's own failed assertion (KVM here): a crash, no kill
])
def test_a_qemu_killed_from_outside_says_by_which_signal(tmp_path, argv, kill, signum):
    """A real process as QEMU: the signal that ended it, or the one it caught and named."""
    with ended_console(tmp_path, argv, kill, before=lambda c: c.killed_by() is None) as console:
        assert console.killed_by() == signum


@pytest.mark.parametrize("argv, kill, note", [
    (["sh", "-c", "exit 3"], False, "exit status 3"),
    (["sleep", "60"], True, "signal 9, SIGKILL"),
])
def test_how_qemu_ended_is_said(tmp_path, argv, kill, note):
    """A real process as QEMU: its exit status or the signal it died of, for a boot that never got ready."""
    with ended_console(tmp_path, argv, kill, before=lambda c: c.exit_note() == "") as console:
        assert console.exit_note() == note


@pytest.mark.parametrize("script, stalled", [
    ("echo 'Linux version'; sleep 60", True),  # silent after its first line: a stall, booted again
    ("while :; do echo 'INFO: task blocked for more than 20 seconds.'; sleep 0.2; done", False),  # a hung kernel that speaks
])
def test_a_boot_that_times_out_stalled_only_if_the_console_went_silent(tmp_path, script, stalled):
    """A real process as QEMU, never ready within 2 s: booted again only if it printed nothing for half of that."""
    with fake_qemu(tmp_path, ["sh", "-c", script]) as console:
        ready = console.wait_for(qemu.READY, timeout=2)
        why = qemu._why_boot_again(console, ready, "tcg", boot_timeout=2)
    assert ready.how is qemu.Waited.TIMEOUT
    assert (why is not None) == stalled, why
    assert why is None or why.startswith("the guest stalled while booting under TCG: not ready within 2 s")
