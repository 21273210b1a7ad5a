"""`harness cache` and `harness cache clean` on a real cache directory: real
files, real locks held by another process, sizes compared with du."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from harness import bisect, cache, cache_admin
from harness.cache_admin import Kind
from harness.cli import main

pytestmark = pytest.mark.unit

DAY = 86400
SRC = "linux-source-6.1"


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("MIGRATE_HARNESS_CACHE", str(path))
    return path


def fill(path: Path, kib: int, files: int = 3) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (path / f"f{i}.o").write_bytes(os.urandom(kib * 1024 // files))
    return path


def age(path: Path, days: float) -> None:
    """Make path, its top-level contents and (if given) look unused for `days`."""
    when = time.time() - days * DAY
    for p in [*path.iterdir(), path] if path.is_dir() else [path]:
        os.utime(p, (when, when), follow_symlinks=False)


def layout(root: Path) -> dict[str, Path]:
    """A cache as runs leave it: Debian's source, its private tree and two builds, a
    module, a user tree's copy, a kept bisect worktree, a killed run's scratch, guest images."""
    source = root / "src" / SRC
    d = cache.digest(str(source))
    user = cache.digest("/home/u/linux")
    paths = {
        "source": fill(source, 64),
        "tree": fill(root / "trees" / f"{SRC}-{d}", 64),
        "build": fill(root / "build" / f"{SRC}-{d}-aaaaaaaaaaaa", 128, files=5),
        "old_build": fill(root / "build" / f"{SRC}-{d}-bbbbbbbbbbbb", 32),
        "user_tree": fill(root / "trees" / f"linux-{user}", 16),
        "bisect": fill(root / "bisect" / f"linux-{cache.digest('/home/u/repo')}", 16),
        "scratch": fill(root / "scratch" / "run-killed", 8),
        "guest": fill(root / "guest", 8, files=1) / "f0.o",
        "ccache": fill(root / "ccache" / "0", 8).parent,
    }
    paths["module"] = fill(root / "modules" / f"migrate_test-{cache.digest(str(paths['build']))}", 4)
    for suffix in (".patched.json", ".generation"):
        (root / "trees" / f"{SRC}-{d}{suffix}").write_text("1")
    (root / "locks").mkdir()
    (root / "locks" / f"source-{d}.lock").touch()
    return paths


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-s", "-B1", str(path)], check=True, capture_output=True,
                              text=True).stdout.split()[0])


class Holder:
    """Another process holding a lock (a lock file or a run's scratch directory), as a run would."""

    def __init__(self, path: Path):
        code = ("import sys, time\nfrom harness import cache\nfrom pathlib import Path\n"
                "with cache.holding(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(120)\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                                     cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert self.proc.stdout.readline().strip() == "held"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def test_listing_names_every_kind_with_du_sizes(root, capsys):
    paths = layout(root)
    entries = {e.path: e for e in cache_admin.inventory()}
    assert {e.kind for e in entries.values()} == set(Kind) - {Kind.WORKTREE, Kind.ACCEL}
    for name in ("source", "tree", "build", "module", "bisect", "scratch", "ccache"):
        assert entries[paths[name]].size == du(paths[name]), name
    assert entries[paths["guest"]].size == du(paths["guest"])
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    for name, kind in (("source", "source"), ("build", "build"), ("bisect", "bisect"), ("ccache", "ccache")):
        assert any(line.split()[0] == kind and line.endswith(str(paths[name].relative_to(root)))
                   for line in out.splitlines()), (name, out)
    total = sum(e.size for e in entries.values())
    assert out.splitlines()[-1].split()[1:] == cache_admin.human(total).split()


def test_last_use_is_the_latest_of_the_entry_and_its_lock(root):
    paths = layout(root)
    age(paths["tree"], 10)
    age(paths["build"], 10)
    lock = root / "locks" / f"source-{cache.digest(str(paths['source']))}.lock"
    age(lock, 10)
    entries = {e.path: e for e in cache_admin.inventory()}
    assert entries[paths["tree"]].last_use < time.time() - 9 * DAY
    with cache.locked(f"source-{cache.digest(str(paths['source']))}"):  # a run takes it: used now
        pass
    entries = {e.path: e for e in cache_admin.inventory()}
    assert entries[paths["tree"]].last_use > time.time() - 60
    assert entries[paths["build"]].last_use < time.time() - 9 * DAY  # builds age on their own


def test_clean_all_removes_what_no_run_holds_and_says_in_use_for_the_rest(root, capsys):
    paths = layout(root)
    source_lock = root / "locks" / f"source-{cache.digest(str(paths['source']))}.lock"
    before = du(root) - du(root / "ccache")  # ccache --clear leaves its directory skeleton
    with Holder(source_lock), Holder(paths["scratch"]):
        assert main(["cache", "clean", "--all"]) == 0
        out = capsys.readouterr().out
        # a run holds the source: its source, tree, builds and module stay; so do guest images
        for name in ("source", "tree", "build", "old_build", "module", "scratch", "guest"):
            assert paths[name].exists(), name
            assert "in use" in out and str(paths[name]) in out
        for name in ("user_tree", "bisect"):
            assert not paths[name].exists(), name
        assert "removed  ccache" in out
    freed = out.splitlines()[-1]
    assert freed.startswith("freed ") and du(root) - du(root / "ccache") < before
    # the runs are over: now everything goes (lock files stay; they are what runs share)
    assert main(["cache", "clean", "--all"]) == 0
    left = {p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file()}
    assert left <= {"locks", "ccache"}, left


def test_clean_older_than_keeps_what_was_used_lately(root, capsys):
    paths = layout(root)
    for name in ("old_build", "user_tree", "scratch", "guest"):
        age(paths[name], 30)
    age(root / "locks" / f"source-{cache.digest(str(paths['source']))}.lock", 1)
    assert main(["cache", "clean", "--older-than", "7"]) == 0
    out = capsys.readouterr().out
    for name in ("old_build", "user_tree", "scratch", "guest"):
        assert not paths[name].exists(), (name, out)
    for name in ("source", "tree", "build", "module", "bisect"):
        assert paths[name].exists(), name


def test_a_tree_keeps_its_state_while_a_build_of_it_is_left(root):
    paths = layout(root)
    for name in ("tree", "old_build"):
        age(paths[name], 30)
    age(root / "locks" / f"source-{cache.digest(str(paths['source']))}.lock", 30)
    age(paths["source"], 30)
    cache_admin.clean(7, False)
    assert not paths["tree"].exists() and paths["build"].exists()
    # the build that stays must never look current for a tree made again from scratch
    assert paths["tree"].with_name(paths["tree"].name + ".generation").exists()
    cache_admin.clean(None, True)
    assert not paths["tree"].with_name(paths["tree"].name + ".generation").exists()


@pytest.mark.parametrize("argv, culprit", [(["cache", "clean"], "--older-than DAYS or --all"),
                                           (["cache", "--all"], "cache clean"),
                                           (["cache", "clean", "--older-than", "-1"], "0 or more")])
def test_bad_clean_arguments_exit_2_naming_them(root, capsys, argv, culprit):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert culprit in err and "Traceback" not in err


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def test_a_bisect_forgets_its_worktree_tree_and_builds(root, tmp_path):
    """What bisect() does when it ends without --keep, on a real git worktree."""
    repo = tmp_path / "linux"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "Makefile").write_text("VERSION = 6\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    worktree = bisect._worktree(repo, "HEAD")
    copy = fill(root / "trees" / f"{worktree.name}-{cache.digest(str(worktree))}", 16)
    build = fill(root / "build" / f"{copy.name}-cccccccccccc", 16)
    module = fill(root / "modules" / f"migrate_test-{cache.digest(str(build))}", 4)
    (copy.parent / f"{copy.name}.generation").write_text("3")
    unrelated = fill(root / "build" / f"{SRC}-{cache.digest('x')}-dddddddddddd", 8)
    before = du(root)
    bisect.forget(repo)
    for path in (worktree, copy, build, module, copy.parent / f"{copy.name}.generation"):
        assert not path.exists(), path
    assert unrelated.exists()
    assert du(root) < before
    assert str(worktree) not in git(repo, "worktree", "list")  # git forgot it too


def test_ccache_is_emptied_by_ccache_itself(root, tmp_path, capsys):
    """A real ccache entry (one compile through ccache) is gone after clean --all."""
    source = tmp_path / "x.c"
    source.write_text("int x(void) { return 42; }\n")
    env = {**os.environ, "CCACHE_DIR": str(root / "ccache")}
    subprocess.run(["ccache", "gcc", "-c", str(source), "-o", str(tmp_path / "x.o")], check=True, env=env)
    stats = ["ccache", "--print-stats"]
    def files():
        return int(dict(line.split("\t") for line in subprocess.run(
            stats, check=True, capture_output=True, text=True, env=env).stdout.splitlines())["files_in_cache"])
    assert files() > 0
    assert main(["cache", "clean", "--older-than", "1"]) == 0  # just compiled: kept
    assert files() > 0
    assert main(["cache", "clean", "--all"]) == 0
    assert files() == 0
    assert "freed" in capsys.readouterr().out


@pytest.mark.parametrize("ours, xdg, where", [
    ("", "{tmp}/xdg", "{tmp}/xdg/migrate-harness"),  # `MIGRATE_HARNESS_CACHE= make ...`: unset, not "."
    ("", "", "{tmp}/home/.cache/migrate-harness"),
    ("", "relative", "{tmp}/home/.cache/migrate-harness"),  # the XDG spec: a relative path is ignored
    ("mine", "{tmp}/xdg", "{tmp}/cwd/mine"),  # ours, relative: made absolute (commands run elsewhere)
])
def test_where_the_cache_is(tmp_path, monkeypatch, ours, xdg, where):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MIGRATE_HARNESS_CACHE", ours)
    monkeypatch.setenv("XDG_CACHE_HOME", xdg.format(tmp=tmp_path))
    assert cache.root() == Path(where.format(tmp=tmp_path)) and cache.root().is_dir()
