"""Guest assets and the QEMU command line, checked with real tools (cpio, dropbearkey,
readelf) and golden files (data/golden/qemu/*.txt; UPDATE_GOLDEN=1 rewrites them)."""
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from harness import matrix
from harness.guest import cpio, initramfs, keys
from harness.spec import NumaNode, Spec, VmSpec
from harness.vm import qemu

REPO = Path(__file__).resolve().parents[2]
GOLDEN_QEMU = Path(__file__).parent / "data" / "golden" / "qemu"
LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu")

pytestmark = pytest.mark.unit


def test_cpio_archive_is_read_back_by_gnu_cpio(tmp_path):
    data = cpio.archive([cpio.directory("etc"), cpio.regular("etc/hello", b"hi\n", 0o600),
                         cpio.symlink("link", "etc/hello"), cpio.char_device("console", 5, 1)])
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=data, capture_output=True, check=True).stdout.decode()
    assert "etc/hello" in listing and "link -> etc/hello" in listing
    assert any(line.startswith("crw-------") and "5,   1" in line for line in listing.splitlines())
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=tmp_path, check=True)
    assert (tmp_path / "etc/hello").read_text() == "hi\n"


def test_initramfs_has_busybox_dropbear_and_its_libraries(tmp_path):
    run_keys = keys.make(tmp_path / "keys")
    image = initramfs.assemble(Spec().vm, run_keys, tmp_path)
    data = image.initramfs.read_bytes()
    base_size = initramfs.base_image().stat().st_size
    listing = []  # two archives back to back, as the kernel unpacks them
    for part in (data[:base_size], data[base_size:]):
        listing += subprocess.run(["cpio", "-it", "--quiet"], input=part,
                                  capture_output=True, check=True).stdout.decode().split()
    for needed in ("init", "bin/busybox", "usr/sbin/dropbear", "usr/lib/sftp-server",
                   "lib64/ld-linux-x86-64.so.2", "root/.ssh/authorized_keys", "etc/harness/expect"):
        assert needed in listing
    for binary in ("/usr/sbin/dropbear", "/usr/lib/sftp-server"):
        for lib in needed_libraries(binary):  # found by readelf, not by the code under test
            assert any(f"{d}/{lib}".lstrip("/") in listing for d in LIB_DIRS), f"{binary} needs {lib}"
    assert image.swap_disk.stat().st_size == 512 * 1024 * 1024
    assert image.swap_disk.stat().st_blocks == 0  # sparse
    assert subprocess.run(["blkid", "-o", "value", "-s", "TYPE", str(image.scratch_disk)],
                          capture_output=True, text=True).stdout.strip() == "ext4"


def needed_libraries(binary: str) -> set[str]:
    """The DT_NEEDED names of `binary` and, transitively, of its libraries (found in LIB_DIRS);
    the loader, which they name too, is its PT_INTERP path (checked on its own)."""
    headers = subprocess.run(["readelf", "-l", binary], capture_output=True, text=True, check=True).stdout
    loader = Path(re.search(r"program interpreter: (\S+)\]", headers).group(1)).name
    found: set[str] = set()
    todo = [binary]
    while todo:
        dynamic = subprocess.run(["readelf", "-d", todo.pop()], capture_output=True, text=True, check=True).stdout
        for name in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic):
            if name not in found and name != loader:
                found.add(name)
                todo.append(next(f"{d}/{name}" for d in LIB_DIRS if Path(d, name).exists()))
    return found


def test_needed_libraries_reads_the_dynamic_section():
    assert {"libc.so.6", "libz.so.1", "libcrypt.so.1"} <= needed_libraries("/usr/sbin/dropbear")


def test_base_image_is_cached_by_content(monkeypatch):
    image = initramfs.base_image()
    assert initramfs.base_image() == image and image.exists()
    assert initramfs.base_image(with_ssh=False) != image
    changed = {**initramfs.ETC_FILES, "etc/shells": "/bin/sh\n/bin/ash\n"}  # one input byte changed
    monkeypatch.setattr(initramfs, "ETC_FILES", changed)
    other = initramfs.base_image()
    assert other != image and other.exists()
    monkeypatch.undo()
    assert initramfs.base_image() == image


def test_expectations_follow_the_topology():
    vm = VmSpec(cpus=3, numa=(NumaNode(768, (0, 2)), NumaNode(256, (1,))), swap_mib=0)
    entries = {e.path: e for e in initramfs.run_entries(vm, None)}
    expect = entries["etc/harness/expect"].data.decode()
    assert "NODES=2" in expect and "NODE0_MEM_MIB=768" in expect and "NODE0_CPUS=0,2" in expect
    assert "SWAP_MIB=0" in expect
    assert "root/.ssh/authorized_keys" not in entries


def test_host_key_public_half_matches_dropbear(tmp_path):
    run_keys = keys.make(tmp_path)
    assert run_keys.host_public.startswith("ssh-ed25519 ")
    assert keys.host_key_object(run_keys.host_public).get_name() == "ssh-ed25519"
    assert (tmp_path / "id_ecdsa").stat().st_mode & 0o777 == 0o600


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
    """The README's default run and every entry of ci/nightly.yaml."""
    examples = {"default": Spec()}
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
