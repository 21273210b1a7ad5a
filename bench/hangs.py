"""`make bench`, part 2: how long a hang and a panic in the kernel take to a verdict.

Runs the harness (6.1, default groups) twice, watching its stderr and
console.log with the host's clock, and writes bench/hangs.json:
  hang_to_exit_s      move_pages(2) sleeps forever in the kernel
                      (tests/integration/data/move-pages-sleeps-forever.patch):
                      the stuck case starts (its `running` line) -> the harness exits
  hang_after_deadline_s  the same, less the stuck case's own deadline (budget <= 60 s)
  panic_to_exit_s     BUG_ON in migration (tests/e2e/mutants/11-bug-on-in-migration.patch,
                      oops=panic): the console's `Kernel panic` line -> the harness exits
                      (budget <= 10 s)
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "hangs.json"
HANG_PATCH = REPO / "tests" / "integration" / "data" / "move-pages-sleeps-forever.patch"
PANIC_PATCH = REPO / "tests" / "e2e" / "mutants" / "11-bug-on-in-migration.patch"
DEADLINE_RE = re.compile(r"did not finish within (\d+) s")
BUDGETS = {"hang_after_deadline_s": 60, "panic_to_exit_s": 10}


def watched_run(out: Path, patch: Path, markers: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Run the harness; the host time each marker (name -> (file, text)) first showed, and its exit."""
    stderr = out.with_suffix(".stderr")
    with stderr.open("w") as err:
        child = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--patch", str(patch),
                                  "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        seen: dict[str, float] = {}
        files = {"stderr": stderr, "console": out / "console.log"}
        while child.poll() is None:
            now = time.monotonic()
            for name, (where, text) in markers.items():
                path = files[where]
                if name not in seen and path.exists() and text in path.read_text(errors="replace"):
                    seen[name] = now
            time.sleep(0.05)
        seen["exit"] = time.monotonic()
    if child.returncode != 1 or set(markers) - set(seen):
        raise SystemExit(f"bench: the run into {out} ended with {child.returncode}, saw only {sorted(seen)}:\n"
                         + stderr.read_text()[-2000:])
    return seen


def main() -> int:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-hangs-") as tmp:
        print("bench: move_pages(2) hang ...", flush=True)
        hang = watched_run(Path(tmp) / "hang", HANG_PATCH,
                           {"start": ("stderr", "running anon_move_pages")})
        deadline = int(DEADLINE_RE.search((Path(tmp) / "hang" / "workload.ktap").read_text())[1])
        figures["hang_to_exit_s"] = hang["exit"] - hang["start"]
        figures["hang_after_deadline_s"] = figures["hang_to_exit_s"] - deadline
        print("bench: BUG_ON in migration (oops=panic) ...", flush=True)
        panic = watched_run(Path(tmp) / "panic", PANIC_PATCH,
                            {"panic": ("console", "Kernel panic - not syncing")})
        figures["panic_to_exit_s"] = panic["exit"] - panic["panic"]
    figures = {k: round(v, 1) for k, v in figures.items()}
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    for name, value in figures.items():
        limit = BUDGETS.get(name)
        verdict = f"  budget <= {limit} s: {'ok' if value <= limit else 'OVER'}" if limit else ""
        print(f"{name:<22} {value:>6.1f} s{verdict}")
    return 0 if all(figures[k] <= b for k, b in BUDGETS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
