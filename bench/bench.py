"""`make bench`: the edit-build-test cycle, measured on this machine in one run.

Writes bench/results.json (medians in seconds) and prints a table with each
figure beside its target:
  cold_build_s           minimal config (our fragments on allnoconfig), no ccache
  defconfig_build_s      defconfig + kvm_guest.config, no ccache (the baseline)
  warm_cycle_s           touch mm/migrate.c -> build -> boot -> full suite -> results
  boot_to_first_result_s QEMU start -> the first KTAP result on the console
  floor_boot_s           the same QEMU topology, busybox-only initramfs that powers off
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import cache  # noqa: E402
from harness.guest import cpio, disks  # noqa: E402
from harness.commands import need_tool  # noqa: E402
from harness.kernel import build as kbuild  # noqa: E402
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


def harness_run(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", "--out", str(out), *args],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})


def warm_cycle(src: ksource.KernelSource, scratch: Path) -> float:
    """A developer's cycle: mm/migrate.c changed in the source, then the full run.

    ccache is off here: a touched file would hit it, an edited one would not."""
    origin = ksource.debian_tree("linux-source-6.1") / "mm" / "migrate.c"

    def go():
        origin.touch()
        done = harness_run(scratch / "warm", env={"CCACHE_DISABLE": "1"})
        if done.returncode != 0:
            raise SystemExit(f"bench: the warm run failed:\n{done.stdout}\n{done.stderr[-2000:]}")
    return timed(go)


def first_result(scratch: Path) -> float:
    out = scratch / "first"
    done = harness_run(out)
    if done.returncode != 0:
        raise SystemExit(f"bench: the run failed:\n{done.stderr[-2000:]}")
    return json.loads((out / "results.json").read_text())["metadata"]["timings_s"]["boot_to_first_result"]


def floor_boot(kernel: Path, scratch: Path) -> float:
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
                             ssh_port=None)
    return timed(lambda: subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each warm measurement (median)")
    parser.add_argument("--skip-cold", action="store_true",
                        help="keep the cold build figures of the last bench/results.json")
    args = parser.parse_args()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    src = ksource.prepare(Spec().kernel.source, None, ())
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=cache.subdir("scratch")) as tmp:
        scratch = Path(tmp)
        if args.skip_cold and "cold_build_s" in previous:
            figures.update({k: previous[k] for k in ("cold_build_s", "defconfig_build_s")})
        else:
            print("bench: cold minimal build (no ccache) ...", flush=True)
            figures["cold_build_s"] = cold_minimal_build(src, scratch)
            print("bench: defconfig + kvm_guest.config build (no ccache) ...", flush=True)
            figures["defconfig_build_s"] = defconfig_build(src, scratch)
        harness_run(scratch / "prime")  # the warm cycle starts from a built, booted state
        kernel = kbuild.build_dir_for(src, kbuild.kconfig.default_fragments()) / "arch/x86/boot/bzImage"
        warm, first, floor = [], [], []
        for i in range(args.runs):
            print(f"bench: warm cycle, boot and floor, round {i + 1} of {args.runs} ...", flush=True)
            warm.append(warm_cycle(src, scratch))
            first.append(first_result(scratch))
            floor.append(floor_boot(kernel, scratch))
        figures["warm_cycle_s"] = statistics.median(warm)
        figures["boot_to_first_result_s"] = statistics.median(first)
        figures["floor_boot_s"] = statistics.median(floor)
    figures = {k: round(v, 2) for k, v in figures.items()}
    figures["runs"] = args.runs
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(table(figures))
    return 0


def table(f: dict) -> str:
    rows = [
        ("cold minimal build", f"{f['cold_build_s']:.0f} s",
         f"<= 35% of defconfig ({f['defconfig_build_s']:.0f} s): {f['cold_build_s'] / f['defconfig_build_s']:.0%}"),
        ("warm cycle (touch mm/migrate.c, full run)", f"{f['warm_cycle_s']:.1f} s", "<= 90 s"),
        ("boot to first result", f"{f['boot_to_first_result_s']:.2f} s",
         f"<= 1.5 x floor ({f['floor_boot_s']:.2f} s): {f['boot_to_first_result_s'] / f['floor_boot_s']:.2f} x"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'measure':<{width}}  {'median':>8}  target"]
    lines += [f"{name:<{width}}  {value:>8}  {target}" for name, value, target in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
