"""Guest assets: the initramfs.

Two newc archives, concatenated (the kernel unpacks both):
- a base part, cached by content: busybox, dropbear and the shared libraries
  its binary names (read with ldd, not kept by hand), /init rendered from
  guest-tools/init/init.j2, the boot checks;
- a run part, a few KiB: what the spec expects (topology, swap) and the
  run's SSH keys, so that every run has keys of its own.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import jinja2

from harness import cache
from harness.commands import need_tool, run
from harness.errors import GuestError
from harness.guest import GUEST_TOOLS, cpio, disks
from harness.guest.keys import RunKeys
from harness.spec import VmSpec, cpu_ranges

MARKER = "harness-guest"  # prefix of the lines init prints for the harness to wait on
PRELOAD_DIR = "usr/lib/harness/preload"  # the groups' assets, in the run part: no copy over SSH at run time
MEM_TOLERANCE_PCT = 12  # the kernel keeps some of each node's memory for itself

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(GUEST_TOOLS / "init"),
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
)

ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/shells": "/bin/sh\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\n",
}


def shared_libraries(binary: str) -> list[Path]:
    """The loader and libraries `binary` needs, as ldd resolves them."""
    output = run(["ldd", binary], error=GuestError, what=f"ldd {binary}")
    libs = re.findall(r"(?:=>\s*)?(/\S+)\s+\(0x", output)
    return [Path(p) for p in libs]


def _ssh_binaries() -> dict[str, str]:
    """Guest path -> host path of the SSH server and the SFTP server dropbear execs."""
    sftp = Path("/usr/lib/sftp-server")
    if not sftp.exists():
        raise GuestError("the SFTP server is missing: run 'make setup' or 'apt-get install openssh-sftp-server'")
    return {"usr/sbin/dropbear": need_tool("dropbear"), "usr/lib/sftp-server": str(sftp.resolve())}


def _add_file(entries: list[cpio.Entry], seen: set[str], path: str, data: bytes, perm: int) -> None:
    """Add a file and any parent directories not added yet."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        if parent not in seen:
            seen.add(parent)
            entries.append(cpio.directory(parent))
    seen.add(path)
    entries.append(cpio.regular(path, data, perm))


def _base_entries() -> list[cpio.Entry]:
    entries: list[cpio.Entry] = [cpio.directory("dev"), cpio.char_device("dev/console", 5, 1),
                                 cpio.directory("root", 0o700)]
    seen = {"dev", "dev/console", "root"}
    busybox = need_tool("busybox")
    _add_file(entries, seen, "bin/busybox", Path(busybox).read_bytes(), 0o755)
    init = _templates.get_template("init.j2").render(marker=MARKER, hostname="guest")
    _add_file(entries, seen, "init", init.encode(), 0o755)
    for script in ("boot-checks.sh", "tiers.sh"):
        _add_file(entries, seen, f"usr/lib/harness/{script}", (GUEST_TOOLS / "init" / script).read_bytes(), 0o755)
    for name, text in ETC_FILES.items():
        _add_file(entries, seen, name, text.encode(), 0o644)
    for inside, host in _ssh_binaries().items():
        _add_file(entries, seen, inside, Path(host).read_bytes(), 0o755)
        for lib in shared_libraries(host):
            if str(lib).lstrip("/") not in seen:
                _add_file(entries, seen, str(lib).lstrip("/"), lib.resolve().read_bytes(), 0o755)
    return entries


def base_image() -> Path:
    """The cached base archive; rebuilt only when one of its inputs changed."""
    data = cpio.archive(_base_entries())
    return cache.publish(cache.subdir("guest") / f"base-{cache.digest(data)}.cpio", lambda tmp: tmp.write_bytes(data))


def run_entries(vm: VmSpec, keys: RunKeys, reserved_mib: int = 0) -> list[cpio.Entry]:
    """`reserved_mib`: memory the kernel takes from the first node beyond the usual (KASAN's shadow)."""
    nodes = [{"mem_mib": vm.node_mib(i), "cpulist": ",".join(cpu_ranges(n.cpus)),
              "reserved_mib": reserved_mib * (i == 0), "hotplug_mib": sum(d.mem_mib for d in vm.hotplug if d.node == i),
              "distance": " ".join(map(str, vm.distances[i])) if vm.distances else "",
              "hmat": next((f"{lat} {bw}" for ini, t, lat, bw in vm.hmat if t == i and ini == vm.initiator(i)), "")}
             for i, n in enumerate(vm.numa)]
    expect = _templates.get_template("expect.j2").render(
        nodes=nodes, movable_mib=vm.movable_mib + sum(d.mem_mib for d in vm.hotplug),
        lower_tier_nodes=" ".join(map(str, vm.lower_tier_nodes)), tiers=vm.tiers,
        swap_mib=vm.swap_mib, mem_tolerance_pct=MEM_TOLERANCE_PCT,
        swap_dev=disks.SWAP_DEV, scratch_dev=disks.SCRATCH_DEV, scratch_mount=disks.SCRATCH_MOUNT)
    return [
        cpio.directory("etc"), cpio.directory("etc/harness"), cpio.regular("etc/harness/expect", expect.encode()),
        cpio.directory("root", 0o700), cpio.directory("root/.ssh", 0o700),
        cpio.regular("root/.ssh/authorized_keys", (keys.authorized_key + "\n").encode(), 0o600),
        cpio.directory("etc/dropbear", 0o700),
        cpio.regular("etc/dropbear/dropbear_ed25519_host_key", keys.host_key.read_bytes(), 0o600),
    ]


@dataclass(frozen=True)
class GuestImage:
    initramfs: Path
    swap_disk: Path  # /dev/vda; one unused MiB when the spec asks for no swap, so vdb stays vdb
    scratch_disk: Path
    keys: RunKeys
    preloaded: dict[Path, str]  # host file -> where the initramfs put it in the guest


def preload_entries(files: tuple[Path, ...]) -> tuple[list[cpio.Entry], dict[Path, str]]:
    """Host files as initramfs entries in PRELOAD_DIR (executable), and where each lands."""
    entries = [cpio.directory("/".join(PRELOAD_DIR.split("/")[:i])) for i in range(1, PRELOAD_DIR.count("/") + 2)]
    entries += [cpio.regular(f"{PRELOAD_DIR}/{f.name}", f.read_bytes(), 0o755) for f in files]
    return entries, {f: f"/{PRELOAD_DIR}/{f.name}" for f in files}


def assemble(vm: VmSpec, keys: RunKeys, scratch: Path, reserved_mib: int = 0,
             preload: tuple[Path, ...] = ()) -> GuestImage:
    """Write the run's initramfs and disks into `scratch`; `preload`: files the groups will push."""
    initramfs = scratch / "initramfs.cpio"
    preloaded, where = preload_entries(preload)
    with initramfs.open("wb") as out, base_image().open("rb") as base:
        shutil.copyfileobj(base, out)
        out.write(cpio.archive(run_entries(vm, keys, reserved_mib) + preloaded))
    swap = disks.sparse(scratch / "swap.img", vm.swap_mib or 1)
    return GuestImage(initramfs, swap, disks.scratch_disk(scratch / "scratch.img"), keys, where)
