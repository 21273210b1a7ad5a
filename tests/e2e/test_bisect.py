"""`harness bisect` on a real git history of the 6.1 source: 8 commits, one of
which breaks page migration (a miscounted return value of migrate_pages(),
caught by the test module) and one of which does not compile. The one that
does not compile sits where git bisect looks first (the midpoint), so every
run exercises the "build failed -> skip" path; it also adds a boot message
that a small script group reports, so that bisecting that message ends with
only skipped commits left."""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
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
MARKER = "bisect-test: marker commit"
MARKER_CODE = ("static int __init bisect_test_marker(void)\n{\n\tpr_info(\"" + MARKER + "\\n\");\n"
               "\treturn 0;\n}\nlate_initcall(bisect_test_marker);\n")
BROKEN = "#error bisect test: broken\n"
HISTORY = [  # (subject, file, old text or None to append, new text)
    ("docs: a harmless change", "Documentation/mm/page_migration.rst", None, "\n.. bisect test 1\n"),
    ("mm/migrate: comment only", MIGRATE_C, None, "/* bisect test 2 */\n"),
    ("mm/mempolicy: comment only", "mm/mempolicy.c", None, "/* bisect test 3 */\n"),
    ("mm/mempolicy: boot message; does not compile", "mm/mempolicy.c", None, BROKEN + MARKER_CODE),
    ("mm/mempolicy: fix the build", "mm/mempolicy.c", BROKEN, ""),
    ("mm/migrate: miscount the migrated pages", MIGRATE_C, COUNTED, MISCOUNTED),
    ("mm: comment only", "mm/page_alloc.c", None, "/* bisect test 7 */\n"),
    ("docs: another harmless change", "Documentation/mm/page_migration.rst", None, "\n.. bisect test 8\n"),
]
UNBUILDABLE, FIRST_BAD = 4, 6  # indices into the commits (0 is the base)
MARKER_SCRIPT = f"""#!/bin/sh
echo "KTAP version 1"
echo "1..1"
if dmesg | grep -q "{MARKER}"; then echo "# dmesg has: {MARKER}"; echo "not ok 1 marker_absent"
else echo "ok 1 marker_absent"; fi
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _caches_of(repo: Path) -> list[Path]:
    """What a bisect of `repo` puts in the cache: its worktree, the worktree's
    private tree (and that tree's state files) and build directories."""
    worktree = cache.subdir("bisect") / f"{repo.name}-{cache.digest(str(repo))}"
    tree = cache.subdir("trees") / f"{worktree.name}-{cache.digest(str(worktree))}"
    return [worktree, tree, *tree.parent.glob(f"{tree.name}.*"), *cache.subdir("build").glob(f"{tree.name}-*")]


def _entries() -> set[Path]:
    """What the cache keeps of trees, builds and bisect worktrees (ccache may grow on purpose;
    a kept build may grow when a run rebuilds it, a bisect must add no entry of its own)."""
    return {p for kind in ("bisect", "trees", "worktrees", "build", "modules") for p in cache.subdir(kind).iterdir()}


# A path of its own that stays the same from run to run: a bisect names its worktree, private
# tree and build directories after the repo's path, and ccache serves an earlier run's objects
# only to a build under the same names (else every run builds 6.1 from scratch, cold).
REPO_HOME = Path(tempfile.gettempdir()) / "migrate-harness-bisect-test"


@pytest.fixture(scope="module")
def kernel_repo() -> Iterator[tuple[Path, list[str]]]:
    REPO_HOME.mkdir(exist_ok=True)
    with cache.holding(REPO_HOME):  # one run of this module at a time on this machine
        repo = REPO_HOME / "linux"
        for leftover in [repo, *_caches_of(repo)]:  # of a run that was killed half-way
            if leftover.is_dir():
                shutil.rmtree(leftover)
            leftover.unlink(missing_ok=True)
        yield from _history(repo)


def _history(repo: Path) -> Iterator[tuple[Path, list[str]]]:
    """The repo: Debian's 6.1 source, then HISTORY, a commit each."""
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
    before = _entries()
    yield repo, commits
    # each bisect removed its worktree, private tree and builds itself (no --keep)
    left = [p for p in _caches_of(repo) if p.exists()]
    assert not left, left
    assert _entries() <= before, sorted(map(str, _entries() - before))
    shutil.rmtree(repo, ignore_errors=True)


def repo_state(repo: Path) -> tuple[str, str, str]:
    return git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD"), git(repo, "branch", "--show-current")


def _verdicts(stdout: str) -> list[tuple[str, str]]:
    return re.findall(r"^\d+\s+([0-9a-f]{12})\s+(good|bad|skip)\s", stdout, re.MULTILINE)


def test_bisect_names_the_bad_commit_and_skips_the_broken_one(kernel_repo, tmp_path):
    repo, commits = kernel_repo
    before = repo_state(repo)
    spec = tmp_path / "spec.yaml"
    spec.write_text("tests: [boot, module]\n")
    result = harness("bisect", "--source", str(repo), "--good", commits[0], "--bad", commits[-1],
                     "--spec", str(spec), "--test", "module", "--out", str(tmp_path / "out"), "--keep",
                     timeout=3600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert f"first bad commit: {commits[FIRST_BAD]} mm/migrate: miscount the migrated pages" in result.stdout
    verdicts = _verdicts(result.stdout)
    assert verdicts[0] == (commits[UNBUILDABLE][:12], "skip"), verdicts  # git looks at the midpoint first
    decided = [v for _, v in verdicts if v != "skip"]
    # a plain binary search, plus at most one step for the skip: which commit git tries after a
    # skip depends on the commits' hashes, which differ on every run of this test
    assert len(decided) <= math.ceil(math.log2(len(HISTORY))) + 1
    assert len(list((tmp_path / "out").glob("step-*"))) == len(verdicts)
    assert repo_state(repo) == before
    worktree, tree, *_ = _caches_of(repo)
    assert worktree.is_dir() and tree.is_dir()  # --keep: for a second bisect of the same history (the next test)


def test_only_skipped_commits_left_is_said_and_exits_1(kernel_repo, tmp_path):
    """The boot message came with the commit that does not compile: no single
    first bad commit can be named, and the bisect says so."""
    repo, commits = kernel_repo
    kept = any(p.name.startswith(_caches_of(repo)[1].name) for p in cache.subdir("build").iterdir())
    script = tmp_path / "marker-absent.sh"
    script.write_text(MARKER_SCRIPT)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"tests: [boot, {{name: marker, script: {script}}}]\n")
    result = harness("bisect", "--source", str(repo), "--good", commits[UNBUILDABLE - 1],
                     "--bad", commits[UNBUILDABLE + 1], "--spec", str(spec), "--test", "marker",
                     "--out", str(tmp_path / "out"), timeout=3600)
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert _verdicts(result.stdout) == [(commits[UNBUILDABLE][:12], "skip")]
    assert "no single first bad commit" in result.stdout
    assert "does not compile" in result.stdout  # the table names the skipped commit's subject
    assert not re.search(r"^first bad commit:", result.stdout, re.MULTILINE)
    if kept:  # after the bisect above (--keep): its build directory served this one
        build_log = next((tmp_path / "out").glob("step-1-*/build.log")).read_text()
        assert len(re.findall(r"^\s+CC\s", build_log, re.MULTILINE)) < 100, build_log[-3000:]
    assert not [p for p in _caches_of(repo) if p.exists()]  # no --keep: removed when the bisect ended


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
    assert "broken on purpose" in result.stderr
    assert "bisect step 1:" in result.stderr and "build:" not in result.stderr  # said before any build
    assert repo_state(repo) == before
