"""Guest assets: the disks. A sparse raw swap disk (mkswap runs in the guest)
and a scratch disk with an ext4 filesystem made on the host, for tests of
file-backed pages on a real block filesystem."""
from __future__ import annotations

from pathlib import Path

from harness.commands import run
from harness.errors import GuestError

SWAP_DEV = "/dev/vda"
SCRATCH_DEV = "/dev/vdb"
SCRATCH_MOUNT = "/mnt/scratch"
SCRATCH_MIB = 256


def sparse(path: Path, mib: int) -> Path:
    """A file of `mib` MiB that costs no disk space until the guest writes to it."""
    with path.open("wb") as f:
        f.truncate(mib * 1024 * 1024)
    return path


def scratch_disk(path: Path) -> Path:
    sparse(path, SCRATCH_MIB)
    run(["mkfs.ext4", "-q", "-F", "-L", "scratch", str(path)], error=GuestError, what="mkfs.ext4 for the scratch disk")
    return path
