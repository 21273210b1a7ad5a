"""Kernel stage 1: find the kernel source and apply the patch series.

Hands on a `KernelSource`: a tree that `make O=` can build. The user's tree
is never modified: the build always uses a private tree in the cache (an
rsync copy, or a git worktree for --rev) with the patch series applied. Its
path does not depend on the series, so one build directory serves every
series and switching series recompiles only the files that differ.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import cache
from harness.commands import run
from harness.errors import PatchDoesNotApply, SourceError
from harness.progress import Progress

TAR_CHECKPOINT = 100  # tar reports every 100 records of 10 KiB (1 MB)
KEPT_OUT = ".git"  # never copied into a private tree, nor looked at for changes
TICK_S = 0.05  # longer than the coarse clock file times take (a jiffy: 10 ms at HZ=100)


@dataclass(frozen=True)
class KernelSource:
    tree: Path  # what `make -C tree O=...` builds
    origin: str  # what the user asked for: "debian:linux-source-6.1" or a path
    version: str  # from the top Makefile, e.g. "6.1.192"
    commit: str | None  # git HEAD of the tree, if it is a git checkout
    patches: tuple[Path, ...]
    generation: int = 0  # grows whenever a prepare changed a file of `tree`


def makefile_version(tree: Path) -> str:
    fields = {}
    for line in (tree / "Makefile").read_text(errors="replace").splitlines()[:12]:
        m = re.match(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(\S*)", line)
        if m:
            fields[m.group(1)] = m.group(2)
    version = ".".join(fields.get(k, "0") for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))
    return version + fields.get("EXTRAVERSION", "")


def origin_path(origin: str) -> Path:
    """Where the source lives: Debian's tarball is extracted into the cache."""
    if origin.startswith("debian:"):
        return cache.subdir("src") / origin.removeprefix("debian:")
    return Path(origin).resolve()


def debian_tree(package: str) -> Path:
    """Extract /usr/src/<package>.tar.xz once into the cache; return the tree."""
    tarball = Path("/usr/src") / f"{package}.tar.xz"
    target = origin_path(f"debian:{package}")
    extracted = cache.Stamp(target / ".extracted", "")
    if extracted.current():
        return target
    if not tarball.exists():
        raise SourceError(f"kernel source {tarball} is missing: run 'make setup' or 'apt-get install {package}'")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    partial.mkdir(parents=True)
    _extract(tarball, partial)
    (partial / package).rename(target)
    partial.rmdir()
    extracted.write()
    return target


def _extract(tarball: Path, into: Path) -> None:
    """`tar -x`, with progress in MiB of the size xz's index gives."""
    listing = run(["xz", "--robot", "--list", str(tarball)], error=SourceError, what=f"reading {tarball}")
    totals = next((line.split("\t") for line in listing.splitlines() if line.startswith("totals")), None)
    total = int(totals[4]) >> 20 if totals else None

    def checkpoint(line: str) -> None:
        if m := re.fullmatch(r"tar: (\d+)\s*", line):
            progress.update(int(m.group(1)) * 10240 >> 20)

    with Progress(f"extracting {tarball.name}", total, "MiB") as progress:
        run(["tar", "-xf", str(tarball), "-C", str(into), f"--checkpoint={TAR_CHECKPOINT}",
             "--checkpoint-action=echo=%u"], error=SourceError, what=f"extracting {tarball}", on_line=checkpoint)


def _check_tree(path: Path) -> None:
    if not path.is_dir():
        raise SourceError(f"kernel source {path} does not exist or is not a directory")
    if not (path / "Makefile").is_file() or not (path / "mm").is_dir() or not (path / "arch" / "x86").is_dir():
        raise SourceError(f"{path} is not a Linux kernel tree (no Makefile, mm/ or arch/x86/ in it)")


def git(repo: Path, *args: str) -> str:
    return run(["git", "-C", str(repo), *args], error=SourceError, what=f"git {args[0]} in {repo}").strip()


def commit_of(repo: Path, rev: str) -> str:
    """The commit `rev` names in `repo`, or a SourceError saying it does not exist."""
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except SourceError:
        raise SourceError(f"git revision '{rev}' does not exist in {repo}") from None


def worktree_path(repo: Path, kept_in: str) -> Path:
    return cache.subdir(kept_in) / f"{repo.name}-{cache.digest(str(repo))}"


def worktree(repo: Path, rev: str, kept_in: str) -> Path:
    """A private detached worktree of `repo` at `rev`, in the cache folder
    `kept_in`, reused between runs: it keeps its path, so builds stay incremental."""
    commit = commit_of(repo, rev)
    path = worktree_path(repo, kept_in)
    if not (path / ".git").exists():
        shutil.rmtree(path, ignore_errors=True)
        git(repo, "worktree", "prune")
        git(repo, "worktree", "add", "--detach", "--force", str(path), commit)
    elif git(path, "rev-parse", "HEAD") != commit or git(path, "status", "--porcelain"):
        # checkout rewrites only files that differ, so make rebuilds only those
        git(path, "checkout", "--detach", "--force", commit)
        git(path, "clean", "-fdq")
    return path


def _patch_error(patch: Path, output: str) -> PatchDoesNotApply:
    """Name the file and hunk that failed, from GNU patch's dry-run output."""
    problems, current = [], None
    for line in output.splitlines():
        if m := re.match(r"checking file (.+)", line):
            current = m.group(1)
        elif m := re.match(r"\|\+\+\+ (?:b/)?(\S+)", line):  # the header of a file patch cannot find
            current = m.group(1)
        elif m := re.match(r"Hunk #(\d+) FAILED at (\d+)", line):
            problems.append(f"{current}: hunk #{m.group(1)} failed (at line {m.group(2)})")
        elif "No file to patch" in line:
            problems.append(f"{current or 'a file it names'}: the file does not exist in the tree")
        elif "Reversed (or previously applied) patch detected" in line:
            problems.append(f"{current}: the change is already in the tree (reversed or applied before)")
        elif "Only garbage was found" in line:
            problems.append("it is not a patch (no diff found in it)")
    detail = "; ".join(problems) or "".join(output.strip().splitlines()[-1:])
    return PatchDoesNotApply(f"patch {patch} does not apply: {detail}")


def _apply(tree: Path, patch: Path) -> list[str]:
    if not patch.is_file():
        raise SourceError(f"patch {patch} does not exist")
    # --fuzz=0: a hunk whose context moved is refused rather than guessed at
    argv = ["patch", "-p1", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch",
            "-d", str(tree), "-i", str(patch)]
    try:
        checked = run(argv + ["--dry-run"], error=SourceError, what=f"patch {patch}")
    except SourceError as e:
        raise _patch_error(patch, str(e)) from None
    if "checking file " not in checked:
        raise SourceError(f"patch {patch} changes no file: it is empty or holds no diff")
    output = run(argv, error=SourceError, what=f"patch {patch}")
    return re.findall(r"^patching file (.+)$", output, re.MULTILINE)


def _series_id(patches: tuple[Path, ...]) -> str:
    for patch in patches:
        if not patch.is_file():
            raise SourceError(f"patch {patch} does not exist")
    return cache.digest(*(p.read_bytes() for p in patches))


def _private_tree(source: Path, patches: tuple[Path, ...], git_based: bool) -> tuple[Path, bool]:
    """`source` with `patches` applied: in place for our own worktree, else in a synced copy.

    A file of the tree whose content changed (a series touched it, or a sync
    rewrote it) gets a fresh mtime, newer than any object a build directory
    made from its earlier content; a sync would set it back to the source's
    older time, so a state file keeps such files out of later plain syncs
    (with their source's stamp, to see when the source itself changes). An
    unchanged series and source rebuild nothing.
    """
    tree = source if git_based else cache.subdir("trees") / f"{source.name}-{cache.digest(str(source))}"
    state_file = tree.parent / f"{tree.name}.patched.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    series = _series_id(patches)
    old = set(state.get("touched", []))
    # kept out of the sync: the fresh files whose source did not change since (without patches, an
    # edited one is simply synced again, and only it gets a fresh mtime: one object to rebuild)
    unchanged = {f for f in old if state.get("stamps", {}).get(f) == _stamp(source / f)}
    if state.get("series") == series and (unchanged == old or not patches) and tree.exists() and not git_based:
        looked = time.time()
        seen = state.get("synced_newest")
        changes = _changes(source, seen)
        if seen and not changes.entries:
            return tree, False
        newest = changes.newest()
        written, changed = _sync(source, tree, exclude=sorted(unchanged), only=changes.paths() if seen else None)
        _remember(state_file, source, series, old | set(written), newest if _settled(newest, looked) else None)
        return tree, changed
    # Files touched before differ from a plain sync: they are stamped again even
    # if this series fails half-way.
    touched: list[str] = []
    written = []
    applied = False
    try:
        if not git_based and not tree.exists():
            _first_copy(source, tree)
        elif not git_based:
            written, _ = _sync(source, tree, exclude=[])
        for patch in patches:
            touched += _apply(tree, patch)
        applied = True
    finally:
        for name in old | set(touched):
            if (tree / name).exists():
                (tree / name).touch()
        _remember(state_file, source, series if applied else None, old | set(touched) | set(written))
    return tree, True


def _stamps(source: Path, files: set[str]) -> dict[str, list[int] | None]:
    return {f: _stamp(source / f) for f in sorted(files)}


def _remember(state_file: Path, source: Path, series: str | None, fresh: set[str],
              synced_newest: str | None = None) -> None:
    """The series in the tree (None: none applied in full), the files kept fresh, and the
    source's newest change that a sync of it has seen (None: sync the next time)."""
    state_file.write_text(json.dumps({"series": series, "touched": sorted(fresh), "stamps": _stamps(source, fresh),
                                      "synced_newest": synced_newest}))


def _generation(tree: Path, changed: bool) -> int:
    """A counter of the tree's states: a build stamped with it is current
    as long as no prepare has changed a file since."""
    counter = tree.parent / f"{tree.name}.generation"
    value = int(counter.read_text()) if counter.exists() else 0
    if changed or not counter.exists():
        value += 1
        counter.write_text(str(value))
    return value


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_mtime_ns, st.st_size]


@dataclass(frozen=True)
class Changes:
    """Entries of a source (but KEPT_OUT) with their ctimes, as `find` prints them (%C@):
    every write, create, delete, rename or chmod of a file or directory sets one, and no
    tool can set it back."""

    entries: tuple[tuple[str, str], ...]  # (ctime, path relative to the source: "" for itself)

    def newest(self) -> str:
        return max((ctime for ctime, _ in self.entries), key=lambda t: (len(t), t), default="")

    def paths(self) -> list[str]:
        """What a sync of these changes covers: each file written, and each directory an
        entry was created in, deleted from or renamed into, whole (a directory renamed
        with all it holds moves its parent's ctime, not its files')."""
        return [path or "." for _, path in self.entries]


def _changes(source: Path, seen: str | None) -> Changes:
    """One walk of the source (~0.3 s for 84,000 files): the entries changed after `seen`
    (a ctime `find` printed), or all of them."""
    newer = ["-newerct", f"@{seen}"] if seen else []
    listing = run(["find", str(source), "-path", str(source / KEPT_OUT), "-prune", "-o", *newer,
                   "-printf", "%C@ %P\\0"], error=SourceError, what=f"looking for changes in {source}")
    pairs = (entry.split(" ", 1) for entry in listing.split("\0") if entry)
    return Changes(tuple((ctime, path) for ctime, path in pairs))


def _settled(newest: str, looked: float) -> bool:
    """Was that change made a clock tick or more before `find` began to look (TICK_S)? Then no
    change after the look can carry the same ctime and pass for seen (file times tick coarsely:
    a jiffy). A change closer to the look is synced again the next time."""
    return bool(newest) and float(newest) < looked - TICK_S


def _first_copy(source: Path, tree: Path) -> None:
    """A new tree: a copy with the source's mtimes, so that no file needs keeping out of
    later syncs (restamped, all 70,000 files would be: rsync then takes ~50 s to match
    them). Builds left from an earlier tree of that name are not of this one: removed."""
    for stale in cache.builds_of(tree.name):
        shutil.rmtree(stale)
    partial = tree.with_name(tree.name + ".partial")  # a copy cut short is not taken for a tree
    shutil.rmtree(partial, ignore_errors=True)
    run(["rsync", "-a", f"--exclude=/{KEPT_OUT}", f"{source}/", f"{partial}/"], error=SourceError,
        what=f"copying {source}")
    partial.rename(tree)


def _sync(source: Path, tree: Path, exclude: list[str], only: list[str] | None = None) -> tuple[list[str], bool]:
    """Make `tree` a copy of `source` but for `exclude`: the files it wrote, each
    with a fresh mtime (rsync keeps the source's, which may be older than an
    object built from the tree's earlier content), and whether anything changed.
    `only`: the paths that changed (Changes.paths), directories whole; else all
    of it (rsync's walk of both trees: ~1.1 s, against ~0.05 s for an edit)."""
    tree.mkdir(parents=True, exist_ok=True)
    # lists NUL-terminated (--from0): a name may hold any byte but NUL and /
    argv = ["rsync", "-a", "--itemize-changes", "--delete", "--from0", "--exclude-from=-"]
    with tempfile.NamedTemporaryFile("w", dir=tree.parent, prefix=f"{tree.name}.", suffix=".changed") as listed:
        if only is not None:
            listed.write("".join(f"{path}\0" for path in only))
            listed.flush()
            argv += ["--recursive", f"--files-from={listed.name}"]  # a listed directory: its whole subtree
        # on stdin: the list has no bound of its own (a long one on the command line is past the
        # kernel's limit: "Argument list too long")
        changes = run(argv + [f"{source}/", f"{tree}/"], error=SourceError, what=f"copying {source}",
                      input="".join(f"/{f}\0" for f in [KEPT_OUT, *exclude]))
    written = [line.split(" ", 1)[1] for line in changes.splitlines() if line.startswith(">f")]
    for name in written:
        (tree / name).touch()
    return written, bool(changes.strip())


def prepare(origin: str, rev: str | None, patches: tuple[Path, ...]) -> KernelSource:
    """Resolve the source, check out `rev`, apply `patches`; never touch the user's tree."""
    if origin.startswith("debian:"):
        tree = debian_tree(origin.removeprefix("debian:"))
    else:
        tree = Path(origin)
        _check_tree(tree)
    origin_tree = tree
    if rev:
        if not (tree / ".git").exists():
            raise SourceError(f"--rev needs a git checkout, and {tree} is not one")
        tree, changed = _private_tree(worktree(tree, rev, "worktrees"), patches, git_based=True)
    else:
        tree, changed = _private_tree(tree, patches, git_based=False)
    git_dir = tree if rev else origin_tree
    commit = git(git_dir, "rev-parse", "HEAD") if (git_dir / ".git").exists() else None
    return KernelSource(tree=tree, origin=origin, version=makefile_version(tree), commit=commit, patches=patches,
                        generation=_generation(tree, changed))
