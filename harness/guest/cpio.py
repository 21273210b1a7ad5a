"""A writer for the newc cpio format the kernel unpacks as its initramfs.

Written in Python so that entries get root ownership, fixed mtimes and
device nodes without running as root or calling mknod.
"""
from __future__ import annotations

import stat
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    path: str  # inside the archive, no leading slash
    mode: int  # including the file type bits (stat.S_IFREG | 0o755, ...)
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes


def regular(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _record(ino: int, entry: Entry) -> bytes:
    name = entry.path.encode() + b"\0"
    fields = [ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, entry.rdev[0], entry.rdev[1], len(name), 0]
    header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    head = header + name
    return head + _pad4(len(head)) + entry.data + _pad4(len(entry.data))


def archive(entries: list[Entry]) -> bytes:
    """Serialize entries (parents before children) into one newc archive."""
    parts = [_record(ino, e) for ino, e in enumerate(entries, 1)]
    parts.append(_record(0, Entry("TRAILER!!!", 0)))
    return b"".join(parts)
