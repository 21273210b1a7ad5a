"""`make bench`: the edit-build-test cycle against its budgets (issue 16), on this machine, in one run.

Writes bench/results.json (medians in seconds) and prints each budget, then
where the time of the warm cycle and of the clean run goes:
  cold_build_s           minimal config (our fragments on allnoconfig), no ccache
  defconfig_build_s      defconfig + kvm_guest.config, no ccache (its baseline)
  warm_cycle_s           touch mm/migrate.c (ccache off) -> build -> boot -> full default run -> results,
                         less the time the run waited for another run's lock on the source (other
                         users of the machine; `wait` in warm_stages_s)
  clean_run_s            the same run again, nothing changed (less its lock wait too)
  warm_objects_compiled  objects the warm cycle's make compiled (median): 1 (mm/migrate.o) unless
                         another run changed the shared tree in between
  boot_to_first_result_s QEMU start -> the first KTAP result on the console (of the clean runs)
  floor_boot_s           the same kernel and QEMU topology, a busybox-only initramfs that powers off
  make_noop_s            kbuild's walk of the built tree with nothing to do (the build's make line): what
                         every edit pays before its compile and the vmlinux links (a clean run skips make)
  warm_stages_s, clean_stages_s  metadata.timings_s of those runs (median per stage), with
                         `outside`: the command's wall clock less the run's own total
                         (Python start-up, reading the spec, writing nothing else)
  workload_cases_s       each workload case's duration in the warm runs (median), slowest first
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import cache, pipeline  # noqa: E402
from harness.commands import need_tool  # noqa: E402
from harness.guest import cpio, disks  # noqa: E402
from harness.kernel import build as kbuild  # noqa: E402
from harness.kernel import config as kconfig  # noqa: E402
from harness.kernel import source as ksource  # noqa: E402
from harness.spec import Spec  # noqa: E402
from harness.vm import qemu  # noqa: E402

RESULTS = REPO / "bench" / "results.json"


def timed(action) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def cold_minimal_build(src: ksource.KernelSource, scratch: Path) -> float:
    out = scratch / "cold"
    out.mkdir()
    return timed(lambda: kbuild.build(src, (), out, 3600, build_dir=scratch / "cold-build", use_ccache=False))


def defconfig_build(src: ksource.KernelSource, scratch: Path) -> float:
    build_dir = scratch / "defconfig-build"
    make = ["make", "-C", str(src.tree), f"O={build_dir}", f"-j{os.cpu_count()}"]
    env = {**os.environ, **kbuild.BUILD_ENV, "CCACHE_DISABLE": "1"}

    def go():
        subprocess.run(make + ["defconfig", "kvm_guest.config"], check=True, env=env, capture_output=True)
        subprocess.run(make + ["all"], check=True, env=env, capture_output=True)
    return timed(go)


def harness_run(out: Path, env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    """The default run: its wall-clock seconds and its results.json."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    took = time.monotonic() - start
    if done.returncode not in (0, 1):  # 1: a test failed; its timings still count, and it is said
        raise SystemExit(f"bench: the run failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    if done.returncode == 1:
        print(f"bench: a test failed in {out.name}: " + " ".join(
            line for line in done.stdout.splitlines() if line.startswith("FAIL")), flush=True)
    return took, json.loads((out / "results.json").read_text())


def warm_cycle(scratch: Path) -> tuple[float, dict[str, Any]]:
    """A developer's cycle: mm/migrate.c changed in the source, then the full run.

    ccache is off here: a touched file would hit it, an edited one would not."""
    (ksource.debian_tree("linux-source-6.1") / "mm" / "migrate.c").touch()
    return harness_run(scratch / "warm", env={"CCACHE_DISABLE": "1"})


def stages(wall: float, results: dict[str, Any]) -> dict[str, float]:
    """A run's timings_s, flat (groups as group:NAME), with the time outside the run
    and `cycle`: the wall clock less the lock wait."""
    t = results["metadata"]["timings_s"]
    flat = {k: v for k, v in t.items() if k != "groups"} | {f"group:{k}": v for k, v in t.get("groups", {}).items()}
    return flat | {"outside": wall - t["total"], "cycle": wall - t["wait"]}


def objects_compiled(out: Path) -> int:
    return sum(1 for line in (out / "build.log").read_text().splitlines() if line.startswith("  CC "))


def case_times(results: dict[str, Any]) -> dict[str, float]:
    workload = next(g for g in results["groups"] if g["name"] == "workload")
    return {t["name"]: t["duration_s"] for t in workload.get("subtests", []) if t.get("duration_s") is not None}


def medians(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in samples if k in s) for k in samples[0]}


def floor_boot(kernel: Path, lpj: int | None, scratch: Path) -> float:
    """Same topology and devices, an init that powers off at once: what no harness can beat."""
    busybox = Path(need_tool("busybox")).read_bytes()
    initrd = scratch / "floor.cpio"
    initrd.write_bytes(cpio.archive([
        cpio.directory("bin"), cpio.regular("bin/busybox", busybox, 0o755),
        cpio.directory("dev"), cpio.char_device("dev/console", 5, 1),
        cpio.regular("init", b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n", 0o755)]))
    argv = qemu.command_line(Spec().vm, kernel=kernel, initrd=initrd,
                             swap_disk=disks.sparse(scratch / "floor-swap.img", Spec().vm.swap_mib),
                             scratch_disk=disks.scratch_disk(scratch / "floor-scratch.img"),
                             accel="tcg" if qemu.kvm_unavailable() else "kvm",
                             ssh_port=None, lpj=lpj)
    return timed(lambda: subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120))


def make_noop(kb: kbuild.KernelBuild) -> float:
    env = {**os.environ, **kbuild.BUILD_ENV, "CCACHE_DISABLE": "1"}
    with pipeline.source_lock(Spec()):  # no run may sync the tree meanwhile
        return timed(lambda: subprocess.run(kbuild.make_argv(kb.source, kb.build_dir), check=True, env=env,
                                            capture_output=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds of the warm, clean and floor measurements (median)")
    parser.add_argument("--skip-cold", action="store_true",
                        help="keep the cold build figures of the last bench/results.json")
    args = parser.parse_args()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=cache.subdir("scratch")) as tmp:
        scratch = Path(tmp)
        harness_run(scratch / "prime")  # the warm cycle starts from a built, booted state
        kb = pipeline.build_kernel(Spec(), scratch)  # nothing left to build: where it is
        kernel = Path(shutil.copy2(kb.vmlinux, scratch / "vmlinux"))  # the floor boots what the runs boot
        lpj = qemu.preset_lpj(kconfig.read_config(kb.config_path))  # and with their command line
        warm, clean, cases, floor, noop = [], [], [], [], []
        for i in range(args.runs):
            print(f"bench: warm cycle, clean run and floor boot, round {i + 1} of {args.runs} ...", flush=True)
            wall, results = warm_cycle(scratch)
            warm.append(stages(wall, results) | {"objects": objects_compiled(scratch / "warm")})
            cases.append(case_times(results))
            wall, results = harness_run(scratch / "clean")
            clean.append(stages(wall, results))
            floor.append(floor_boot(kernel, lpj, scratch))
            noop.append(make_noop(kb))
        warm_s, clean_s = medians(warm), medians(clean)
        figures["warm_cycle_s"], figures["clean_run_s"] = warm_s.pop("cycle"), clean_s.pop("cycle")
        figures["warm_objects_compiled"] = warm_s.pop("objects")
        figures["boot_to_first_result_s"] = clean_s["boot_to_first_result"]
        figures["floor_boot_s"] = statistics.median(floor)
        figures["make_noop_s"] = statistics.median(noop)
        figures["warm_stages_s"], figures["clean_stages_s"] = warm_s, clean_s
        figures["workload_cases_s"] = dict(sorted(medians(cases).items(), key=lambda kv: -kv[1]))
        if args.skip_cold and "cold_build_s" in previous:
            figures.update({k: previous[k] for k in ("cold_build_s", "defconfig_build_s")})
            figures["cold_from"] = previous.get("cold_from", "an earlier bench run")
        else:  # last: it is long, and the other figures are worth having if it is interrupted
            with pipeline.source_lock(Spec()):  # no run may sync the tree while it builds
                print("bench: cold minimal build (no ccache) ...", flush=True)
                figures["cold_build_s"] = cold_minimal_build(kb.source, scratch)
                print("bench: defconfig + kvm_guest.config build (no ccache) ...", flush=True)
                figures["defconfig_build_s"] = defconfig_build(kb.source, scratch)
            figures["cold_from"] = f"measured {date.today()}, load average {os.getloadavg()[0]:.1f} at the end"
    figures = rounded(figures)
    figures["runs"] = args.runs
    figures["load_average"] = [round(x, 1) for x in os.getloadavg()]
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(table(figures))
    return 0


def rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 2) if isinstance(value, float) else value


# (what, figure, budget, baseline figure or None: the budget is then in seconds, else a ratio to it)
BUDGETS = (
    ("warm cycle (edit mm/migrate.c, full run)", "warm_cycle_s", 8.0, None),
    ("boot to first result", "boot_to_first_result_s", 1.1, "floor_boot_s"),
    ("cold minimal build", "cold_build_s", 0.30, "defconfig_build_s"),
    ("clean run (nothing changed)", "clean_run_s", 5.0, None),
)
SHOWN_STAGES = ("wait", "source", "build", "assets", "image", "boot", "tests", "overhead", "outside")


def table(f: dict[str, Any]) -> str:
    width = max(len(b[0]) for b in BUDGETS)
    lines = [f"{'budget':<{width}}  {'median':>8}  target: verdict"]
    for what, key, budget, base in BUDGETS:
        value = f[key]
        if base is None:
            target, ok = f"<= {budget:g} s: {value - budget:+.1f} s", value <= budget
        else:
            ratio = value / f[base]
            target, ok = f"<= {budget:g} x {base} ({f[base]:.2f} s): {ratio:.2f} x", ratio <= budget
        lines.append(f"{what:<{width}}  {value:>7.2f}s  {target}: {'within' if ok else 'OVER'}")
    for name, wall in (("warm cycle", "warm_cycle_s"), ("clean run", "clean_run_s")):
        s = f[wall.replace("cycle_s", "stages_s").replace("run_s", "stages_s")]
        parts = [f"{k} {s[k]:.2f}" for k in SHOWN_STAGES if k in s]
        groups = [f"{k.removeprefix('group:')} {v:.2f}" for k, v in s.items() if k.startswith("group:")]
        lines += ["", f"{name}, median s per stage ({f[wall]:.2f} s): " + ", ".join(parts),
                  "  of which tests, per group: " + ", ".join(groups)]
    cases = f["workload_cases_s"]
    lines += ["", f"workload cases (warm runs, median; {len(cases)} cases, {sum(cases.values()):.2f} s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in list(cases.items())[:8]) + ", ..."]
    build = f["warm_stages_s"]["build"]
    lines.append(f"warm cycle, kbuild and QEMU alone (no harness, no test): make's walk with nothing to do "
                 f"{f['make_noop_s']:.2f} + compile and vmlinux links {build - f['make_noop_s']:.2f} + floor boot "
                 f"{f['floor_boot_s']:.2f} = {build + f['floor_boot_s']:.2f} s")
    lines.append(f"warm cycle: {f['warm_objects_compiled']:g} object(s) compiled (median); cold builds: "
                 f"{f.get('cold_from', 'in this run')}; load average at the end {f['load_average']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
