"""`make test-mutants`: prove the suite can fail. Each patch in tests/e2e/mutants/
injects one realistic bug into mm/ of the default 6.1 source; the full suite
(boot, workload, module) must report every one as a failure or a crash.

Writes the table to tests/e2e/MUTANTS.md and exits 1 if a mutant survived.
Each mutant costs an incremental rebuild (one file) and a run. `make test`
runs a few of them (tests/e2e/test_mutants.py), one on 6.12. A mutant whose
header has `Profiles: kasan ...` is a bug only a sanitizer sees: it runs under
those config profiles (after a baseline under them) and once without them. A
mutant whose header has `Spec: examples/X.yaml` runs on that spec (after its
baseline): its case needs that machine.

`tests/e2e/mutants.py 51 52` runs only those mutants (by number or name) and
prints their verdicts; the table is left alone (copy a verdict in by hand).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MUTANTS = sorted((HERE / "mutants").glob("*.patch"))
TABLE = HERE / "MUTANTS.md"
SPEC = "tests: [boot, workload, module]\n"


def harness_run(out: Path, *extra: str, spec: Path | None = None) -> tuple[int, dict | None]:
    if spec is None:
        spec = out.parent / "spec.yaml"
        spec.write_text(SPEC)
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--spec", str(spec), "--out", str(out),
                           *extra], cwd=REPO, capture_output=True, text=True)
    results = out / "results.json"
    return done.returncode, json.loads(results.read_text()) if results.exists() else None


def failing(results: dict) -> list[str]:
    """Failed leaves as group.path, then crash titles."""
    names: list[str] = []

    def walk(test: dict, path: str) -> None:
        if not test["subtests"] and test["status"] in ("fail", "error"):
            names.append(path)
        for sub in test["subtests"]:
            walk(sub, f"{path}.{sub['name']}")
    for group in results["groups"]:
        walk(group, group["name"])
    return names + [f"crash: {c['title']}" for c in results["crashes"]]


def profiles(patch: Path) -> list[str]:
    """The config profiles a mutant needs, from its `Profiles:` header line."""
    header = patch.read_text().split("\n---\n", 1)[0]
    return next((line.split(":", 1)[1].split() for line in header.splitlines() if line.startswith("Profiles:")), [])


def with_profiles(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--profile", name)]


def why(patch: Path) -> str:
    lines = patch.read_text().splitlines()
    return lines[2] if len(lines) > 2 else ""


def spec_of(patch: Path) -> Path | None:
    """A mutant that needs a machine other than the default names its spec: `Spec: examples/X.yaml`."""
    for line in patch.read_text().splitlines():
        if line == "---":
            break
        if line.startswith("Spec: "):
            return REPO / line.removeprefix("Spec: ").strip()
    return None


def main(names: list[str]) -> int:
    out = REPO / "out" / "mutants"
    out.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in MUTANTS if not names or p.stem in names or p.stem.split("-")[0] in names]
    if not chosen:
        print(f"test-mutants: no mutant named {', '.join(names)} in {HERE / 'mutants'}")
        return 2
    baselines: dict[tuple[Path | None, tuple[str, ...]], int] = {}  # (spec, profiles) -> exit
    if not names:
        status, baseline = harness_run(out / "baseline")
        if status != 0:
            print(f"test-mutants: the unmodified kernel does not pass (exit {status}); see {out / 'baseline'}")
            return 2
        baselines[(None, ())] = status
    rows, survivors = [], 0
    for patch in chosen:
        start = time.monotonic()
        spec, needs = spec_of(patch), profiles(patch)
        key = (spec, tuple(needs))
        if key not in baselines:
            label = "-".join(([spec.stem] if spec else []) + needs) or "default"
            baselines[key], _ = harness_run(out / f"baseline-{label}", *with_profiles(needs), spec=spec)
        if baselines[key] != 0:
            under = ", ".join(([spec.name] if spec else []) + needs)
            rows.append((patch.stem, why(patch), f"baseline under {under} fails", []))
            survivors += 1
            continue
        status, results = harness_run(out / patch.stem, "--patch", str(patch), *with_profiles(needs), spec=spec)
        caught_by = failing(results) if results else []
        caught = status == 1 and bool(caught_by)
        survivors += not caught
        verdict = "caught" if caught else "NOT CAUGHT" if status == 0 else f"harness exit {status}"
        if needs:
            plain, _ = harness_run(out / f"{patch.stem}-without", "--patch", str(patch), spec=spec)
            verdict += f" under {', '.join(needs)}; without: " + ("not caught" if plain == 0 else f"exit {plain}")
        rows.append((patch.stem, why(patch), verdict, caught_by))
        print(f"{patch.stem}: {verdict} in {time.monotonic() - start:.0f} s: {', '.join(caught_by[:4])}", flush=True)
    if names:
        return 1 if survivors else 0
    lines = ["# Mutants", "",
             "Bugs injected on purpose into mm/ of Debian's 6.1 source (`tests/e2e/mutants/*.patch`);",
             "`make test-mutants` runs the full suite (boot, workload, module) on each and fills in this table;",
             "`make test` runs the subset in `tests/e2e/test_mutants.py` (one of them on 6.12).",
             f"Baseline (no mutant): {sum(1 for _ in failing(baseline))} failures. Last run: "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "| mutant | the bug | verdict | caught by |", "|---|---|---|---|"]
    for name, text, verdict, by in rows:
        shown = ", ".join(f"`{b}`" for b in by[:6]) + (f" (+{len(by) - 6} more)" if len(by) > 6 else "")
        lines.append(f"| {name} | {text} | {verdict} | {shown} |")
    TABLE.write_text("\n".join(lines) + "\n")
    print(f"{len(rows) - survivors} of {len(rows)} mutants caught; table in {TABLE}")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
