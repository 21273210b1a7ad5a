"""Bisect driver: `git bisect` in a worktree of its own, one harness run per step.

Step verdicts: the chosen tests pass -> good; they fail or the kernel
crashes -> bad; the kernel does not build or boot -> skip; the harness itself
cannot work (QEMU missing, disk full, bad spec) -> the bisect stops, since an
infrastructure fault must never mark a commit bad. The user's checkout is
never touched: the worktree lives in the cache and keeps its path, so every
step builds incrementally in the same build directory.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness import cache, cache_admin, pipeline
from harness.commands import run as run_command
from harness.errors import BuildError, ConfigError, DiskFull, HarnessError, PatchDoesNotApply, SourceError
from harness.exits import BisectExit
from harness.kernel.source import commit_of, git, worktree, worktree_path
from harness.results.model import RunResult, Status, TestResult
from harness.spec import Spec

log = logging.getLogger("harness")


class Verdict(enum.Enum):
    """A step's verdict, spelled as `git bisect` takes it."""

    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"

    @property
    def exit_code(self) -> BisectExit:
        return BisectExit[self.name]


def _selected(result: RunResult, tests: tuple[str, ...]) -> list[TestResult]:
    """Leaves named by `tests` ("group", "group.path" or a prefix of one); all if none."""
    leaves = []
    for group in result.groups:
        for names, leaf in group.paths():
            path = ".".join((group.name, *names))
            if not tests or any(path == t or path.startswith(t + ".") for t in tests):
                leaves.append(leaf)
    return leaves


def verdict(result: RunResult, tests: tuple[str, ...] = ()) -> Verdict:
    """good, bad or skip for one finished run.

    A failed or crashed test is bad. A kernel that never got ready, or tests
    that could not run (an earlier crash elsewhere, a module that does not
    build at this commit), decide nothing: skip."""
    boot = next((g for g in result.groups if g.name == "boot"), None)
    if boot is None or boot.status is Status.ERROR:
        return Verdict.SKIP
    chosen = _selected(result, tests)
    if tests and not chosen:
        return Verdict.SKIP  # the chosen tests do not exist at this commit
    if any(leaf.status is Status.FAIL or leaf.crash for leaf in chosen) or (not tests and result.crashes):
        return Verdict.BAD
    if any(leaf.status is Status.ERROR for leaf in chosen):
        return Verdict.SKIP
    return Verdict.GOOD


def verdict_of_error(error: HarnessError) -> Verdict | None:
    """skip for a commit that does not build (or a patch that does not apply
    to it); None, meaning stop, for a fault of the machine or the harness."""
    if isinstance(error, DiskFull):
        return None
    if isinstance(error, (BuildError, ConfigError, PatchDoesNotApply)):
        return Verdict.SKIP  # a build that timed out is a BuildError too: skipped, as a build that hangs
    return None


@dataclass
class Step:
    commit: str
    subject: str
    verdict: Verdict
    seconds: float
    failing: list[str]


BISECT_TREES = "bisect"  # the cache folder of the bisect worktrees


def _worktree(repo: Path, bad: str) -> Path:
    """The bisect's own worktree, at `bad`."""
    if (worktree_path(repo, BISECT_TREES) / ".git").exists():
        git(worktree_path(repo, BISECT_TREES), "bisect", "reset")  # an earlier bisect may have stopped half-way
    return worktree(repo, bad, BISECT_TREES)


def _step(spec: Spec, tree: Path, out: Path, tests: tuple[str, ...], retries: int) -> tuple[Verdict, list[str]]:
    """Run the harness on the checked-out commit; repeat a good verdict `retries` times."""
    step_spec = dataclasses.replace(spec, kernel=dataclasses.replace(spec.kernel, source=str(tree), rev=None))
    for attempt in range(retries + 1):
        try:
            result = pipeline.run(step_spec, out / f"try-{attempt}" if retries else out)
        except HarnessError as e:
            kind = verdict_of_error(e)
            if kind is None:
                raise
            return kind, [f"{e.stage}: {str(e).splitlines()[0]}"]
        kind = verdict(result, tests)
        failing = [leaf.name for leaf in _selected(result, tests) if leaf.status.is_failure]
        if kind is not Verdict.GOOD:
            return kind, failing + [c.title for c in result.crashes]
    return Verdict.GOOD, []


def bisect(repo: Path, good: str, bad: str, spec: Spec, tests: tuple[str, ...], retries: int,
           out: Path, keep: bool = False) -> tuple[list[Step], str | None]:
    """Find the first bad commit. Returns the steps and that commit (None if undecided).

    The worktree, its private tree and build directories are removed at the
    end unless `keep` (then `harness cache clean` removes them later)."""
    if not (repo / ".git").exists():
        raise SourceError(f"{repo} is not a git checkout")
    for rev in (good, bad):
        commit_of(repo, rev)
    with cache.locked(f"bisect-{cache.digest(str(repo))}"):  # one bisect per repository at a time
        try:
            return _bisect(_worktree(repo, bad), good, bad, spec, tests, retries, out)
        finally:
            if not keep:
                forget(repo)


def forget(repo: Path) -> None:
    """Remove the bisect worktree of `repo` and what its steps built from it."""
    tree = worktree_path(repo, BISECT_TREES)
    if tree.exists():
        cache_admin.forget_source(tree)
        git(repo, "worktree", "remove", "--force", str(tree))
        log.info("bisect: removed its worktree and builds from the cache (--keep keeps them)")


def _bisect(tree: Path, good: str, bad: str, spec: Spec, tests: tuple[str, ...], retries: int,
            out: Path) -> tuple[list[Step], str | None]:
    steps: list[Step] = []
    try:
        output = git(tree, "bisect", "start", bad, good)
        while True:
            commit = git(tree, "rev-parse", "HEAD")
            subject = git(tree, "log", "-1", "--format=%s", commit)
            log.info("bisect step %d: %s %s", len(steps) + 1, commit[:12], subject)
            start = time.monotonic()
            kind, failing = _step(spec, tree, out / f"step-{len(steps) + 1}-{commit[:12]}", tests, retries)
            steps.append(Step(commit, subject, kind, time.monotonic() - start, failing))
            # exit 2: "only 'skip'ped commits left ... We cannot bisect more!", an outcome, not a fault
            output = run_command(["git", "-C", str(tree), "bisect", kind.value], error=SourceError,
                                 what=f"git bisect {kind.value}", ok=(0, 2))
            if m := re.search(r"^([0-9a-f]{40}) is the first bad commit", output, re.MULTILINE):
                return steps, m.group(1)
            if "only 'skip'ped commits left" in output:
                return steps, None
    finally:
        git(tree, "bisect", "reset")


def table(steps: list[Step]) -> str:
    lines = [f"{'STEP':<5}{'COMMIT':<14}{'VERDICT':<9}{'TIME':>8}  SUBJECT / FAILING"]
    for i, s in enumerate(steps, 1):
        lines.append(f"{i:<5}{s.commit[:12]:<14}{s.verdict.value:<9}{s.seconds:>7.0f}s  {s.subject[:60]}")
        if s.failing:
            lines.append(f"{'':<36}{', '.join(s.failing)[:64]}")
    return "\n".join(lines)
