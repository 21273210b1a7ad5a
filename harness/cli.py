"""Command line: argument parsing only, and the one place errors become exit codes.

Exit codes (harness/exits.py): 0 all passed; 1 a test failed or the kernel
crashed; 2 the harness could not do its job (bad input, build failure, QEMU
would not start).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from harness import spec as specs
from harness.errors import HarnessError, host_error
from harness.exits import BisectExit, Exit

if TYPE_CHECKING:
    from harness.groups import Guest


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=Path, help="YAML run spec (default: built-in defaults)")
    p.add_argument("--source", help="kernel tree or git checkout (default: Debian's linux-source-6.1)")
    p.add_argument("--rev", help="git revision of --source to build")
    p.add_argument("--patch", action="append", default=[], type=Path, help="patch to apply (repeatable, in order)")
    p.add_argument("--config", action="append", default=[], type=Path, help="extra config fragment (repeatable)")
    p.add_argument("--profile", action="append", default=[], metavar="NAME",
                   help="config profile: debug-info, kasan, ... (kernel-configs/profiles; repeatable)")
    p.add_argument("--out", type=Path, help="artifacts directory (default: out/run-TIMESTAMP)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description="Build, boot and test a kernel's page migration.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="build, boot, run the tests, report (the main job)")
    _spec_args(run)
    run.add_argument("--bisect-exit-codes", action="store_true",
                     help="exit 0 good, 1 bad, 125 skip (no build/boot), 255 harness failure: for `git bisect run`")
    run.add_argument("--test", action="append", default=[], metavar="NAME",
                     help="with --bisect-exit-codes: judge only these tests (group or group.path)")
    bis = sub.add_parser("bisect", help="find the commit that broke the tests (git bisect in a private worktree)")
    _spec_args(bis)
    bis.add_argument("--good", required=True, help="a revision where the tests pass")
    bis.add_argument("--bad", required=True, help="a revision where they fail")
    bis.add_argument("--test", action="append", default=[], metavar="NAME",
                     help="judge only these tests (group or group.path); repeatable")
    bis.add_argument("--retries", type=int, default=0, help="run a step N more times before calling it good")
    bis.add_argument("--keep", action="store_true",
                     help="keep the bisect's worktree and builds in the cache (removed at the end otherwise)")
    _spec_args(sub.add_parser("build", help="prepare the source and build the kernel only"))
    boot = sub.add_parser("boot", help="boot the kernel; run --exec CMD over SSH, or stay up until Ctrl-C")
    _spec_args(boot)
    boot.add_argument("--exec", dest="exec_cmd", metavar="CMD",
                      help="command to run in the guest; exit with its status")
    boot.add_argument("--push", action="append", default=[], type=Path, metavar="FILE",
                      help="copy FILE to the guest's /tmp/harness/ first (repeatable)")
    rep = sub.add_parser("report", help="print the summary of an earlier run (or merge several)")
    rep.add_argument("dirs", type=Path, nargs="+", metavar="DIR")
    rep.add_argument("--merge", action="store_true", help="merge runs or shard directories into one report")
    rep.add_argument("--out", type=Path, help="with --merge: write results.json, junit.xml, summary.txt here")
    cache = sub.add_parser("cache", help="list what the cache holds; `cache clean` frees space")
    cache.add_argument("action", nargs="?", choices=["clean"], help="clean: remove entries no run is using")
    cache.add_argument("--older-than", type=float, metavar="DAYS", help="with clean: entries not used for DAYS")
    cache.add_argument("--all", action="store_true", help="with clean: every entry not in use")
    mat = sub.add_parser("matrix", help="run the entries of a spec's matrix (one shard of them)")
    mat.add_argument("spec", type=Path)
    mat.add_argument("--shard", default="1/1", help="I/N: run the I-th of N round-robin shards (default 1/1)")
    mat.add_argument("--list", action="store_true", help="print the shard's entries and exit")
    mat.add_argument("--out", type=Path, help="artifacts: one subdirectory per entry (default out/matrix-TIMESTAMP)")
    return p


def _load_spec(args: argparse.Namespace) -> specs.Spec:
    spec = specs.load(args.spec)
    return specs.with_overrides(spec, source=args.source, rev=args.rev, patches=args.patch, configs=args.config,
                                profiles=args.profile)


def _out_dir(args: argparse.Namespace) -> Path:
    """The run's artifacts directory, made, without an earlier run's verdict."""
    from harness.results import report

    out: Path = args.out or Path("out") / time.strftime("run-%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--out {out}: exists and is not a directory (give a directory for the artifacts)")
    out.mkdir(parents=True, exist_ok=True)
    report.forget(out)
    return out


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds through every `finally` (which stops QEMU);
    the pipeline writes the reports of what finished on the way."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def execute(args: argparse.Namespace) -> int:
    from harness import pipeline
    from harness.results import report

    if args.command == "report":
        if not args.merge and len(args.dirs) > 1:
            raise HarnessError("give one DIR, or --merge with several")
        earlier = report.merge(report.load_many(args.dirs)) if args.merge else report.load(args.dirs[0])
        if args.out:
            report.write_all(earlier, args.out)
        print(report.summary(earlier))
        return Exit.PASS if earlier.ok else Exit.FAIL
    if args.command == "matrix":
        return run_matrix(args)
    if args.command == "cache":
        return cache_command(args)
    out = _out_dir(args)
    spec = _load_spec(args)
    if args.command == "build":
        kb = pipeline.build_kernel(spec, out)
        print(kb.vmlinux)
        return Exit.PASS
    if args.command == "boot":
        return boot(spec, out, args.exec_cmd, args.push)
    if args.command == "bisect":
        return run_bisect(args, spec, out)
    if args.bisect_exit_codes:
        return run_for_git_bisect(spec, out, tuple(args.test))
    result = pipeline.run(spec, out)
    print(report.summary(result))
    print(f"artifacts: {out}")
    return Exit.PASS if result.ok else Exit.FAIL


def cache_command(args: argparse.Namespace) -> int:
    """`harness cache [clean]`: list the cache, or free what no run is using."""
    from harness import cache_admin

    if args.action is None:
        if args.older_than is not None or args.all:
            raise HarnessError("--older-than and --all go with `harness cache clean`")
        print(cache_admin.table(cache_admin.inventory()))
        return Exit.PASS
    removed, kept = cache_admin.clean(args.older_than, args.all)
    for entry, freed in removed:
        print(f"removed  {entry.kind.name.lower():<9}{cache_admin.human(freed):>11}  {entry.path}")
    for entry in kept:
        print(f"in use   {entry.kind.name.lower():<9}{cache_admin.human(entry.size):>11}  {entry.path} (kept)")
    print(f"freed {cache_admin.human(sum(freed for _, freed in removed))}")
    return Exit.PASS


def run_for_git_bisect(spec: specs.Spec, out: Path, tests: tuple[str, ...]) -> int:
    """`harness run --bisect-exit-codes`: one step of `git bisect run`."""
    from harness import bisect, pipeline
    from harness.results import report

    try:
        result = pipeline.run(spec, out)
    except (HarnessError, OSError) as error:
        e = host_error(error) if isinstance(error, OSError) else error
        kind = bisect.verdict_of_error(e)
        print(f"harness: error ({e.stage}): {e}", file=sys.stderr)
        if kind is None:
            print("harness: not a verdict on this commit: stopping the bisect", file=sys.stderr)
            return BisectExit.STOP
        print(f"harness: bisect verdict: {kind.value}", file=sys.stderr)
        return kind.exit_code
    kind = bisect.verdict(result, tests)
    print(report.summary(result))
    print(f"bisect verdict: {kind.value}")
    return kind.exit_code


def run_bisect(args: argparse.Namespace, spec: specs.Spec, out: Path) -> int:
    from harness import bisect
    from harness.kernel.source import git

    if not args.source:
        raise HarnessError("bisect needs --source: the git checkout to bisect")
    steps, first_bad = bisect.bisect(Path(args.source).resolve(), args.good, args.bad, spec,
                                     tuple(args.test), args.retries, out, keep=args.keep)
    print(bisect.table(steps))
    if first_bad is None:
        print("no single first bad commit: the commits left were all skipped (see the table)")
        return Exit.FAIL
    subject = git(Path(args.source).resolve(), "log", "-1", "--format=%s", first_bad)
    print(f"first bad commit: {first_bad} {subject}")
    print(f"artifacts: {out}")
    return Exit.PASS


def run_matrix(args: argparse.Namespace) -> int:
    """`harness matrix`: this shard's entries one after another, then one merged report."""
    from harness import matrix, pipeline
    from harness.results import report

    index, total = matrix.parse_shard(args.shard)
    entries = matrix.shard(matrix.expand(args.spec), index, total)
    if args.list or not entries:
        print("\n".join(entry.name for entry in entries) or f"shard {args.shard} has no entries")
        return Exit.PASS
    out = args.out or Path("out") / time.strftime("matrix-%Y%m%d-%H%M%S")
    results, broken = {}, []
    for entry in entries:
        logging.getLogger("harness").info("matrix entry %s (shard %s)", entry.name, args.shard)
        try:
            results[entry.name] = pipeline.run(entry.spec, out / entry.name)
        except HarnessError as e:
            print(f"harness: error ({e.stage}) in {entry.name}: {e}", file=sys.stderr)
            broken.append(entry.name)
    merged = report.merge(results)
    report.write_all(merged, out)
    print(report.summary(merged))
    print(f"artifacts: {out}" + (f"; entries that could not run: {', '.join(broken)}" if broken else ""))
    return Exit.HARNESS if broken else Exit.PASS if merged.ok else Exit.FAIL


def boot(spec: specs.Spec, out: Path, command: str | None, push: list[Path]) -> int:
    """`harness boot`: like `vng --exec`, or an SSH-able guest until Ctrl-C."""
    from harness import pipeline

    for path in push:
        if not path.is_file():
            raise HarnessError(f"--push {path}: no such file")
    (out / "console.log").unlink(missing_ok=True)
    with pipeline.scratch_dir() as scratch:
        kb, _ = pipeline.prepare(spec, out, scratch, with_assets=False)
        with pipeline.booted(spec, kb, out, scratch) as vm, pipeline.guest(spec, vm, out) as guest:
            _ = guest.shell  # connect now: a guest that cannot be reached is an error before anything else
            return _in_guest(guest, command, push)


def _in_guest(guest: Guest, command: str | None, push: list[Path]) -> int:
    from harness.groups.guest import Ended, qemu_crash_error, qemu_killed, run_watched

    for path in push:
        guest.push(path, mode=path.stat().st_mode & 0o777)
    vm, timeout = guest.vm, guest.spec.timeouts.test
    if command is not None:
        watched = run_watched(guest, command, timeout)
        sys.stdout.write(watched.command.stdout)
        sys.stderr.write(watched.command.stderr)
        if (killed := vm.console.killed_by()) is not None:
            raise qemu_killed(killed, repr(command))
        if watched.ended is Ended.QEMU_CRASHED:
            raise qemu_crash_error(watched.qemu_note, repr(command))
        if watched.ended is Ended.CRASHED:
            titles = [c.title for c in watched.crashes]
            print(f"harness: the kernel crashed: {'; '.join(titles) or 'QEMU exited'} "
                  f"(console: {vm.console.log_path})", file=sys.stderr)
            return Exit.FAIL
        if watched.ended is Ended.HUNG:
            print(f"harness: '{command}' timed out after {timeout:.0f} s", file=sys.stderr)
            return Exit.EXEC_TIMEOUT
        return watched.command.status if watched.command.status is not None else Exit.FAIL
    known_hosts = vm.image.keys.client_key.with_name("known_hosts")
    known_hosts.write_text(f"[127.0.0.1]:{vm.ssh_port} {vm.image.keys.host_public}\n")
    print(f"guest is up (Ctrl-C stops it): ssh -i {vm.image.keys.client_key} -p {vm.ssh_port} "
          f"-o UserKnownHostsFile={known_hosts} root@127.0.0.1", flush=True)
    while vm.console.alive:
        vm.console.drain(1.0)
    print("harness: the guest stopped", file=sys.stderr)
    return Exit.FAIL


class _StderrHandler(logging.StreamHandler[IO[str]]):
    """Progress lines to whatever sys.stderr is when they are written."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    logger = logging.getLogger("harness")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("harness: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    # paramiko logs its own tracebacks (e.g. a banner cut off by Ctrl-C); ours are the messages that count
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    for sig in (signal.SIGINT, signal.SIGTERM):  # explicitly: a background job inherits SIGINT ignored
        signal.signal(sig, _interrupt)
    args = parser().parse_args(argv)
    try:
        try:
            return execute(args)
        except OSError as e:  # the harness's own files: a full disk, a read-only or missing directory
            raise host_error(e) from None
    except HarnessError as e:
        print(f"harness: error ({e.stage}): {e}", file=sys.stderr)
        return BisectExit.STOP if getattr(args, "bisect_exit_codes", False) else Exit.HARNESS
    except KeyboardInterrupt as e:
        signum: int = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"
        print(f"harness: {what}; QEMU stopped, artifacts kept", file=sys.stderr)
        return Exit.INTERRUPTED + signum


if __name__ == "__main__":
    sys.exit(main())
