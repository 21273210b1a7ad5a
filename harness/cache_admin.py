"""`harness cache`: what the cache holds, and freeing space without breaking a run.

Every entry has the lock its users hold while they use it: a source, its
private tree and its build directories the run's per-source lock
(locks/source-D.lock, D the digest in their names), a bisect worktree the
bisect's lock, a run's scratch directory the directory itself. `clean` takes
that lock without waiting before it removes an entry, and keeps the entry
("in use") when someone holds it. Guest images and KVM verdicts have no owner
of their own: they are kept while any run is in progress. ccache is cleaned
by ccache itself, which is safe under concurrent builds.

A private tree's state files (which series it holds, its generation) stay as
long as a build directory of it does: a build must never look current for a
tree that was made again from scratch.
"""
from __future__ import annotations

import enum
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from harness import cache
from harness.commands import run
from harness.errors import HarnessError

STATE_SUFFIXES = (".patched.json", ".generation")  # a private tree's state, next to it
MODULE_PREFIX = "migrate_test-"  # modules/migrate_test-DIGEST(build dir)


class Kind(str, enum.Enum):
    """What an entry is; the value is the subdirectory of the cache it lives in.
    Listed and cleaned in this order: builds before the trees they belong to."""

    BUILD = "build"  # an O= build directory
    MODULE = "modules"  # the test module built against one build directory
    TREE = "trees"  # a private copy of a source with the patch series applied
    WORKTREE = "worktrees"  # a git worktree for --rev (patched in place)
    SOURCE = "src"  # an extracted Debian source
    BISECT = "bisect"  # a bisect's worktree (kept by `bisect --keep`)
    SCRATCH = "scratch"  # a run's scratch space; left behind only by a killed run
    GUEST = "guest"  # base initramfs archives, workload binaries
    ACCEL = "accel"  # KVM verdicts, one per host boot
    CCACHE = "ccache"


WHOLE = {Kind.CCACHE}  # one entry for the whole directory
RUN_SCOPED = {Kind.GUEST, Kind.ACCEL}  # kept while any run is in progress
LOCK_STAMPED = {Kind.SOURCE, Kind.TREE, Kind.WORKTREE, Kind.BISECT}  # last use: their lock's mtime too


@dataclass(frozen=True)
class Entry:
    kind: Kind
    path: Path
    size: int  # bytes on disk, counted like du
    last_use: float  # epoch seconds
    lock: Path | None  # what its users flock while they use it


def disk_usage(path: Path) -> int:
    """Bytes allocated to path and everything below it; a hard-linked file counts once (du -s -B1)."""
    st = os.lstat(path)
    seen, total = {(st.st_dev, st.st_ino)}, st.st_blocks * 512
    for directory, dirs, files in os.walk(path) if stat.S_ISDIR(st.st_mode) else ():
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:  # removed while we looked
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _source_digest(name: str, parts_after: int) -> str:
    """D of a tree NAME-D (parts_after=0) or a build NAME-D-KEY (parts_after=1)."""
    return name.rsplit("-", parts_after + 1)[1]


def _lock_of(kind: Kind, path: Path, modules_of: dict[str, Path]) -> Path | None:
    if kind is Kind.SOURCE:
        return cache.lock_file(f"source-{cache.digest(str(path))}")
    if kind in (Kind.TREE, Kind.WORKTREE):
        return cache.lock_file(f"source-{_source_digest(path.name, 0)}")
    if kind is Kind.BUILD:
        return cache.lock_file(f"source-{_source_digest(path.name, 1)}")
    if kind is Kind.MODULE:
        build = modules_of.get(path.name)
        return _lock_of(Kind.BUILD, build, modules_of) if build else None
    if kind is Kind.BISECT:
        return cache.lock_file(f"bisect-{_source_digest(path.name, 0)}")
    if kind is Kind.SCRATCH:
        return path
    return None


def _last_use(kind: Kind, path: Path, lock: Path | None) -> float:
    """The newest mtime of the entry and its top-level contents; for what a
    lock guards as a whole (a source, a tree, a bisect), of the lock file too,
    which every run stamps when it takes the lock. A build directory is
    stamped by the build itself, so each of a source's builds ages on its own."""
    times = [os.lstat(path).st_mtime]
    if path.is_dir() and not path.is_symlink():
        times += [e.stat(follow_symlinks=False).st_mtime for e in os.scandir(path)]
    if kind in LOCK_STAMPED and lock is not None and lock.exists():
        times.append(lock.stat().st_mtime)
    return max(times)


def _paths(kind: Kind) -> list[Path]:
    directory = cache.root() / kind.value
    if not directory.is_dir():
        return []
    if kind in WHOLE:
        return [directory]
    return sorted(p for p in directory.iterdir() if not p.name.endswith(STATE_SUFFIXES))


def inventory() -> list[Entry]:
    """Every entry of the cache, in the order of Kind."""
    modules_of = {f"{MODULE_PREFIX}{cache.digest(str(b))}": b for b in _paths(Kind.BUILD)}
    entries = []
    for kind in Kind:
        for path in _paths(kind):
            lock = _lock_of(kind, path, modules_of)
            entries.append(Entry(kind, path, disk_usage(path), _last_use(kind, path, lock), lock))
    return entries


def in_use(entry: Entry) -> bool:
    """Someone holds the entry's lock now (looked at without taking it for long)."""
    if entry.lock is None or not entry.lock.exists():
        return False
    with cache.holding(entry.lock, wait=False) as got:
        return not got


def runs_in_progress(entries: list[Entry]) -> bool:
    return any(in_use(e) for e in entries if e.kind is Kind.SCRATCH)


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def table(entries: list[Entry]) -> str:
    root = cache.root()
    busy = runs_in_progress(entries)
    lines = [f"{'KIND':<11}{'SIZE':>11}  {'LAST USE':<17} {'STATE':<7} PATH (under {root})"]
    for e in entries:
        state = "in use" if in_use(e) or (e.kind in RUN_SCOPED and busy) else ""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_use))
        lines.append(f"{e.kind.name.lower():<11}{human(e.size):>11}  {when:<17} {state:<7} "
                     f"{e.path.relative_to(root)}")
    lines.append(f"{'total':<11}{human(sum(e.size for e in entries)):>11}")
    return "\n".join(lines)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _drop_state_if_unused(tree: Path) -> None:
    """Remove a private tree's state files once neither it nor a build directory of it is left."""
    builds = cache.root() / Kind.BUILD.value
    if tree.exists() or builds.is_dir() and any(b.name[:-13] == tree.name for b in builds.iterdir()):
        return
    for suffix in STATE_SUFFIXES:
        tree.with_name(tree.name + suffix).unlink(missing_ok=True)


def _ccache_clean(path: Path, older_than_days: float | None) -> None:
    """ccache's own eviction, safe while builds use it; without ccache, --all removes the directory."""
    if shutil.which("ccache") is None:
        if older_than_days is None:
            _remove(path)
        return
    age = ["--clear"] if older_than_days is None else ["--evict-older-than", f"{int(older_than_days * 86400)}s"]
    run(["ccache", *age], error=HarnessError, what="ccache", env={"CCACHE_DIR": str(path)})


def remove_entry(entry: Entry, older_than_days: float | None = None) -> int | None:
    """Remove one entry under its lock, without waiting for it. Returns the
    bytes freed, or None if someone holds the lock (the entry is in use)."""
    if entry.kind is Kind.CCACHE:
        _ccache_clean(entry.path, older_than_days)
        return max(entry.size - (disk_usage(entry.path) if entry.path.exists() else 0), 0)
    if entry.lock is None:
        _remove(entry.path)
        return entry.size
    if entry.lock != entry.path:  # a lock file: made if missing, so a run starting now waits for us
        os.close(os.open(entry.lock, os.O_WRONLY | os.O_CREAT, 0o644))
    with cache.holding(entry.lock, wait=False) as got:
        if not got:
            return None
        _remove(entry.path)
        if entry.kind in (Kind.TREE, Kind.WORKTREE):
            _drop_state_if_unused(entry.path)
        if entry.kind is Kind.BUILD:
            _remove(cache.root() / Kind.MODULE.value / f"{MODULE_PREFIX}{cache.digest(str(entry.path))}")
            for kind in (Kind.TREE, Kind.WORKTREE):  # the tree may have gone in an earlier clean
                _drop_state_if_unused(cache.root() / kind.value / entry.path.name[:-13])
    return entry.size


def clean(older_than_days: float | None, everything: bool) -> tuple[list[tuple[Entry, int]], list[Entry]]:
    """Remove entries not used for older_than_days (or all of them, with
    everything). Returns (entry, bytes freed) of those removed, and those
    kept because they are in use."""
    if older_than_days is None and not everything:
        raise HarnessError("cache clean needs --older-than DAYS or --all (`harness cache` lists what is there)")
    if older_than_days is not None and older_than_days < 0:
        raise HarnessError(f"--older-than {older_than_days:g}: give a number of days, 0 or more")
    entries = inventory()
    cutoff = time.time() - (older_than_days or 0) * 86400
    busy = runs_in_progress(entries)
    removed, kept = [], []
    for entry in entries:
        if not everything and entry.last_use >= cutoff and entry.kind is not Kind.CCACHE:
            continue  # ccache ages its own files
        freed = None if entry.kind in RUN_SCOPED and busy else \
            remove_entry(entry, None if everything else older_than_days)
        if freed is None:
            kept.append(entry)
        else:
            removed.append((entry, freed))
    return removed, kept


def forget_source(tree: Path) -> None:
    """Remove what runs on the kernel tree `tree` left in the cache: its private
    copy, the copy's state and build directories, their modules (used by a
    bisect for its own worktree, under the same lock its steps took)."""
    with cache.locked(f"source-{cache.digest(str(tree))}"):
        copy = cache.subdir(Kind.TREE.value) / f"{tree.name}-{cache.digest(str(tree))}"
        for build in cache.builds_of(copy.name):
            _remove(build)
            _remove(cache.subdir(Kind.MODULE.value) / f"{MODULE_PREFIX}{cache.digest(str(build))}")
        _remove(copy)
        _drop_state_if_unused(copy)
