"""`harness bisect` on a real git history of the 6.1 source: 8 commits, one of
which breaks page migration (a miscounted return value of migrate_pages(),
caught by the test module) and one of which does not compile."""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import harness

from harness import cache
from harness.kernel.source import debian_tree

pytestmark = pytest.mark.e2e

MIGRATE_C = "mm/migrate.c"
COUNTED = "\t\t*ret_succeeded = stats.nr_succeeded;\n"
MISCOUNTED = "\t\t*ret_succeeded = stats.nr_succeeded - 1;\n"
HISTORY = [  # (subject, file, old text or None to append, new text)
    ("docs: a harmless change", "Documentation/mm/page_migration.rst", None, "\n.. bisect test 1\n"),
    ("mm/migrate: comment only", MIGRATE_C, None, "/* bisect test 2 */\n"),
    ("mm/mempolicy: comment only", "mm/mempolicy.c", None, "/* bisect test 3 */\n"),
    ("mm/migrate: miscount the migrated pages", MIGRATE_C, COUNTED, MISCOUNTED),
    ("mm: comment only", "mm/page_alloc.c", None, "/* bisect test 5 */\n"),
    ("mm/mempolicy: a change that does not compile", "mm/mempolicy.c", None, "#error bisect test: broken\n"),
    ("mm/mempolicy: fix the build", "mm/mempolicy.c", "#error bisect test: broken\n", ""),
    ("docs: another harmless change", "Documentation/mm/page_migration.rst", None, "\n.. bisect test 8\n"),
]


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _forget_caches_of(repo: Path) -> None:
    """The bisect worktree, its private tree and build live in the cache: a
    repository made for one test run must not leave gigabytes behind."""
    worktree = cache.subdir("bisect") / f"{repo.name}-{cache.digest(str(repo))}"
    tree = cache.subdir("trees") / f"{worktree.name}-{cache.digest(str(worktree))}"
    for path in [worktree, tree, *cache.subdir("build").glob(f"{tree.name}-*")]:
        shutil.rmtree(path, ignore_errors=True)
    for path in tree.parent.glob(f"{tree.name}.*"):
        path.unlink()


@pytest.fixture(scope="module")
def kernel_repo(tmp_path_factory) -> Iterator[tuple[Path, list[str]]]:
    repo = tmp_path_factory.mktemp("bisect") / "linux"
    subprocess.run(["rsync", "-a", "--exclude=/.extracted", f"{debian_tree('linux-source-6.1')}/", f"{repo}/"],
                   check=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A", "--force")  # Debian's .gitignore ignores the whole top level
    git(repo, "commit", "-qm", "base: Debian's 6.1 source")
    commits = [git(repo, "rev-parse", "HEAD")]
    for subject, name, old, new in HISTORY:
        path = repo / name
        text = path.read_text()
        assert old is None or old in text, (name, old)
        path.write_text(text + new if old is None else text.replace(old, new, 1))
        git(repo, "commit", "-qam", subject)
        commits.append(git(repo, "rev-parse", "HEAD"))
    yield repo, commits
    _forget_caches_of(repo)
    shutil.rmtree(repo, ignore_errors=True)


def repo_state(repo: Path) -> tuple[str, str, str]:
    return git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD"), git(repo, "branch", "--show-current")


def test_bisect_names_the_bad_commit_and_skips_the_broken_one(kernel_repo, tmp_path):
    repo, commits = kernel_repo
    before = repo_state(repo)
    spec = tmp_path / "spec.yaml"
    spec.write_text("tests: [boot, module]\n")
    result = harness("bisect", "--source", str(repo), "--good", commits[0], "--bad", commits[-1],
                     "--spec", str(spec), "--out", str(tmp_path / "out"), timeout=3600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert f"first bad commit: {commits[4]} mm/migrate: miscount the migrated pages" in result.stdout
    verdicts = re.findall(r"^\d+\s+([0-9a-f]{12})\s+(good|bad|skip)\s", result.stdout, re.MULTILINE)
    decided = [v for _, v in verdicts if v != "skip"]
    assert len(decided) <= math.ceil(math.log2(len(HISTORY)))  # no more than a plain binary search
    for sha, verdict in verdicts:
        if sha == commits[6][:12]:
            assert verdict == "skip"  # the commit that does not compile
    assert len(list((tmp_path / "out").glob("step-*"))) == len(verdicts)
    assert repo_state(repo) == before


def test_an_infrastructure_fault_stops_the_bisect_and_leaves_the_repo_alone(kernel_repo, tmp_path):
    repo, commits = kernel_repo
    before = repo_state(repo)
    fake = tmp_path / "bin"
    fake.mkdir()
    qemu = fake / "qemu-system-x86_64"  # a QEMU that cannot start anything
    qemu.write_text("#!/bin/sh\necho 'qemu-system-x86_64: cannot start: broken on purpose' >&2\nexit 1\n")
    qemu.chmod(0o755)
    result = harness("bisect", "--source", str(repo), "--good", commits[0], "--bad", commits[-1],
                     "--out", str(tmp_path / "out"), timeout=3600,
                     env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert result.returncode == 2, result.stdout + result.stderr[-3000:]
    assert "QEMU would not start" in result.stderr and "Traceback" not in result.stderr
    assert repo_state(repo) == before
