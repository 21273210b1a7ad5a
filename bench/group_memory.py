"""`make bench`, part 3: the harness's own memory while a group prints a lot.

Runs the harness (6.1) with one script group that prints CHATTY_MB of
comment lines (a guest program gone verbose), and writes bench/group_memory.json:
  peak_rss_quiet_mib   the harness's peak RSS with a script that prints 2 lines
  peak_rss_chatty_mib  the same with CHATTY_MB of output
  growth_mib           the difference (budget: well under the output's size)
The peak is the harness process's own (getrusage RUSAGE_SELF in the process
itself, see `peak_rss`), never QEMU's.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from budgets import report

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "group_memory.json"
CHATTY_MB = 50
BUDGETS = {"growth_mib": 40}
# Runs the command line in this process, then prints the process's own peak RSS.
PEAK_RSS = ("import resource, sys; from harness import cli; code = cli.main(sys.argv[1:]); "
            "print(f'peak rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KiB', file=sys.stderr); "
            "sys.exit(code)")


def chatty_script(megabytes: int) -> str:
    """A KTAP program whose first test prints `megabytes` MB of diagnostics and
    fails (so that the reports carry them: a run exits 1)."""
    return ("#!/bin/sh\necho 'KTAP version 1'\necho '1..2'\necho '# Subtest: chatty'\n"
            f"yes '# a diagnostic line the guest prints again and again, sixty-four' | head -c {megabytes}000000\n"
            "echo\necho 'not ok 1 chatty'\necho 'ok 2 after'\n")


def peak_rss(tmp: Path, megabytes: int, timeout: float = 1800) -> tuple[subprocess.CompletedProcess, float]:
    """Run the harness on the chatty script into tmp/out; its result and peak RSS in MiB."""
    (tmp / "chatty.sh").write_text(chatty_script(megabytes))
    (tmp / "spec.yaml").write_text("tests: [{name: chatty, script: chatty.sh, timeout: 600}]\n")
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, "run", "--spec", str(tmp / "spec.yaml"),
                           "--out", str(tmp / "out")], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    found = re.search(r"peak rss: (\d+) KiB", done.stderr)
    if found is None:
        raise AssertionError(f"no peak RSS from the run into {tmp}:\n{done.stderr[-2000:]}")
    return done, int(found[1]) / 1024


def main() -> int:
    figures: dict[str, float] = {}
    for name, megabytes in (("quiet", 0), ("chatty", CHATTY_MB)):
        print(f"bench: a script group printing {megabytes} MB ...", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"bench-memory-{name}-") as tmp:
            done, figures[f"peak_rss_{name}_mib"] = peak_rss(Path(tmp), megabytes)
            if done.returncode != 1:
                raise SystemExit(f"bench: the {name} run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    figures["growth_mib"] = figures["peak_rss_chatty_mib"] - figures["peak_rss_quiet_mib"]
    return report(figures, BUDGETS, "MiB", RESULTS, {"chatty_mb": CHATTY_MB})

if __name__ == "__main__":
    sys.exit(main())
