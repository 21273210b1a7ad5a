"""harness/guest: the initramfs, keys and guest programs, checked with real tools (cpio, dropbearkey, gcc)."""
import io
import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.errors import GuestError
from harness.guest import compile as compiler
from harness.guest import cpio, initramfs, keys
from harness.spec import Dimm, NumaNode, Spec, VmSpec

pytestmark = pytest.mark.unit

LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu")


def test_cpio_archive_is_read_back_by_gnu_cpio(tmp_path):
    data = cpio.archive([cpio.directory("etc"), cpio.regular("etc/hello", b"hi\n", 0o600),
                         cpio.char_device("console", 5, 1)])
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=data, capture_output=True, check=True).stdout.decode()
    assert "etc/hello" in listing
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


def test_preloaded_files_are_in_the_run_part_executable(tmp_path):
    """What the groups push rides in the initramfs: GNU cpio unpacks it with its content and mode."""
    program = tmp_path / "migrate_suite-abc"
    program.write_bytes(b"\x7fELF payload")
    image = initramfs.assemble(Spec().vm, keys.make(tmp_path / "keys"), tmp_path, preload=(program,))
    assert image.preloaded == {program: f"/{initramfs.PRELOAD_DIR}/migrate_suite-abc"}
    run_part = image.initramfs.read_bytes()[initramfs.base_image().stat().st_size:]
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=run_part, cwd=unpacked, check=True)
    landed = unpacked / initramfs.PRELOAD_DIR / "migrate_suite-abc"
    assert landed.read_bytes() == b"\x7fELF payload" and landed.stat().st_mode & 0o777 == 0o755


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
    assert initramfs.base_image() == image
    monkeypatch.setattr(initramfs, "_ssh_binaries", lambda: {})  # an image without dropbear
    assert initramfs.base_image() != image


def test_expectations_follow_the_topology(tmp_path):
    vm = VmSpec(cpus=3, numa=(NumaNode(768, (0, 2)), NumaNode(256, (1,))), swap_mib=0)
    entries = {e.path: e for e in initramfs.run_entries(vm, keys.make(tmp_path))}
    expect = entries["etc/harness/expect"].data.decode()
    assert "NODES=2" in expect and "NODE0_MEM_MIB=768" in expect and "NODE0_CPUS=0,2" in expect
    assert "SWAP_MIB=0" in expect and 'NODE1_DISTANCE=""' in expect
    assert "NODE0_RESERVED_MIB=0" in expect and "NODE1_RESERVED_MIB=0" in expect
    kasan = {e.path: e for e in initramfs.run_entries(vm, keys.make(tmp_path / "k"), reserved_mib=128)}
    expect = kasan["etc/harness/expect"].data.decode()
    assert "NODE0_RESERVED_MIB=128" in expect and "NODE1_RESERVED_MIB=0" in expect  # the shadow is on node 0


def test_expectations_of_cpuless_and_memoryless_nodes(tmp_path):
    vm = VmSpec(cpus=2, numa=(NumaNode(512, (0,)), NumaNode(0, (1,)), NumaNode(256, ())),
                distances=((10, 20, 30), (20, 10, 30), (30, 30, 10)))
    entries = {e.path: e for e in initramfs.run_entries(vm, keys.make(tmp_path))}
    expect = entries["etc/harness/expect"].data.decode()
    assert "NODE1_MEM_MIB=0" in expect and "NODE2_CPUS=\n" in expect
    assert 'NODE2_DISTANCE="30 30 10"' in expect


def test_expectations_of_hotplugged_and_movable_memory(tmp_path):
    vm = VmSpec(cpus=2, numa=(NumaNode(512, (0,)), NumaNode(0, (1,))), hotplug=(Dimm(256, 1),), movable_mib=128)
    expect = {e.path: e for e in initramfs.run_entries(vm, keys.make(tmp_path))}["etc/harness/expect"].data.decode()
    assert "NODE1_MEM_MIB=256" in expect and "NODE1_HOTPLUG_MIB=256" in expect and "NODE0_HOTPLUG_MIB=0" in expect
    assert "MOVABLE_MIB=384" in expect and 'LOWER_TIER_NODES=""' in expect


def test_expectations_of_a_lower_tier_node(tmp_path):
    vm = VmSpec(cpus=2, numa=(NumaNode(512, (0, 1)), NumaNode(512, (), True)))
    entries = {e.path: e for e in initramfs.run_entries(vm, keys.make(tmp_path))}
    expect = entries["etc/harness/expect"].data.decode()
    assert 'LOWER_TIER_NODES="1"' in expect and "NODE1_MEM_MIB=384" in expect and "NODE1_CPUS=\n" in expect


def test_expectations_of_a_lower_tier_node_from_hmat(tmp_path):
    vm = VmSpec(cpus=2, numa=(NumaNode(512, (0, 1)), NumaNode(512, (), True)), tiers="hmat")
    expect = {e.path: e for e in initramfs.run_entries(vm, keys.make(tmp_path))}["etc/harness/expect"].data.decode()
    assert 'LOWER_TIER_NODES="1"' in expect and "TIERS=hmat" in expect and "NODE1_MEM_MIB=512" in expect
    assert 'NODE0_HMAT="100 20000"' in expect and 'NODE1_HMAT="200 5000"' in expect  # from node 1's initiator, 0


def test_host_key_public_half_matches_dropbear(tmp_path):
    run_keys = keys.make(tmp_path)
    assert run_keys.host_public.startswith("ssh-ed25519 ")
    assert keys.host_key_object(run_keys.host_public).get_name() == "ssh-ed25519"
    assert (tmp_path / "id_ecdsa").stat().st_mode & 0o777 == 0o600


def test_workload_is_compiled_static_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MIGRATE_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compiler, "WORKLOAD_DIR", tmp_path)
    (tmp_path / "hello.c").write_text('#include <stdio.h>\nint main(void){puts("KTAP version 1");return 0;}\n')
    log = io.StringIO()
    binary = compiler.workload(log)
    assert b"libc.so" not in subprocess.run(["ldd", str(binary)], capture_output=True).stdout  # static
    assert subprocess.run([str(binary)], capture_output=True, text=True).stdout == "KTAP version 1\n"
    assert compiler.workload(log) == binary and log.getvalue().count("$ gcc") == 1
    (tmp_path / "hello.c").write_text("int main(void){return nope;}\n")
    with pytest.raises(GuestError, match="compiling the guest workload failed"):
        compiler.workload(log)


def test_module_is_rebuilt_only_when_a_header_it_includes_or_the_exports_change(tmp_path):
    """An edit of a kernel .c file leaves migrate_test.ko's inputs unchanged; a header
    its .cmd files list, Module.symvers or the .config do not."""
    from harness.kernel.build import KernelBuild
    from harness.kernel.source import KernelSource

    build, work, tree = tmp_path / "build", tmp_path / "work", tmp_path / "tree"
    for d in (build / "include/generated", work, tree / "include/linux", tree / "mm"):
        d.mkdir(parents=True)
    header, generated, other = tree / "include/linux/migrate.h", build / "include/generated/autoconf.h", tree / "mm/migrate.c"
    for f in (header, generated, other, build / "Module.symvers", build / ".config"):
        f.write_text("x\n")
    (work / ".migrate_test.o.cmd").write_text(
        f"deps_migrate_test.o := \\\n    $(wildcard include/config/NUMA) \\\n  {header} \\\n"
        "  include/generated/autoconf.h \\\n\nmigrate_test.o: $(deps_migrate_test.o)\n")
    kb = KernelBuild(build, build / ".config", "6.1", KernelSource(tree, "", "6.1", None, ()),
                     build / "vmlinux")
    sources = [tmp_path / "migrate_test.c"]
    sources[0].write_text("int x;\n")
    before = compiler._built_from(kb, work, sources)
    os.utime(other, ns=(1, 1))
    assert compiler._built_from(kb, work, sources) == before  # a .c file of the kernel: no rebuild
    for changed in (header, generated):
        os.utime(changed, ns=(2, 2))
        assert compiler._built_from(kb, work, sources) != before, changed
        before = compiler._built_from(kb, work, sources)
    (build / "Module.symvers").write_text("0x0\tmigrate_pages\tvmlinux\tEXPORT_SYMBOL\t\n")
    assert compiler._built_from(kb, work, sources) != before
