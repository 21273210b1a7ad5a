"""Kernel stage 2: make the .config.

Our fragments (kernel-configs/*.config) and the user's are merged by the
kernel's own scripts/kconfig/merge_config.sh onto allnoconfig (`-n`): what no
fragment asks for stays off, which keeps the build a few minutes long.
Every symbol a fragment asks for is then checked in the final .config: a
symbol the kernel dropped or that a dependency turned off stops the run and
is named. Hands on the path of the checked .config.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness import cache
from harness.commands import run
from harness.errors import ConfigError

FRAGMENT_DIR = Path(__file__).resolve().parents[2] / "kernel-configs"
PROFILE_DIR = FRAGMENT_DIR / "profiles"  # fragments a spec turns on by name: `kernel: {profiles: [kasan]}`


@dataclass(frozen=True)
class Request:
    """One line of a fragment: CONFIG_X=value, or `# CONFIG_X is not set` (value 'n')."""

    symbol: str
    value: str
    fragment: Path
    line: int
    optional: bool = False  # under a `# harness: optional ...` line: a kernel without the option is fine


_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
OPTIONAL = "# harness: optional"  # a comment line that makes the next option optional


def default_fragments() -> list[Path]:
    return sorted(FRAGMENT_DIR.glob("*.config"))


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.config"))


def profile_fragments(names: tuple[str, ...]) -> tuple[Path, ...]:
    return tuple(PROFILE_DIR / f"{name}.config" for name in names)


def read_fragment(path: Path) -> list[Request]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config fragment {path}: {e.strerror}") from None
    requests, optional = [], False
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if m := _SET.match(line) or _UNSET.match(line):
            value = m.group(2) if m.re is _SET else "n"
            requests.append(Request(m.group(1), value, path, number, optional))
            optional = False
        elif line.startswith(OPTIONAL):
            optional = True
        elif line and not line.startswith("#"):
            raise ConfigError(f"{path}, line {number}: not a config line: {line!r} (write CONFIG_FOO=y)")
    return requests


def read_config(path: Path) -> dict[str, str]:
    """Final .config as {symbol: value}; unset symbols are absent."""
    values = {}
    for line in path.read_text().splitlines():
        if m := _SET.match(line):
            values[m.group(1)] = m.group(2)
    return values


def _kconfig_defines(tree: Path, symbol: str) -> bool:
    name = symbol.removeprefix("CONFIG_")
    pattern = re.compile(rf"^\s*(menu)?config\s+{re.escape(name)}\s*$", re.MULTILINE)
    return any(pattern.search(p.read_text(errors="replace")) for p in tree.rglob("Kconfig*") if p.is_file())


def check(config: Path, requests: list[Request], tree: Path) -> None:
    """Raise ConfigError naming each requested symbol the final .config lacks."""
    final = read_config(config)
    problems = []
    for r in requests:
        got = final.get(r.symbol, "n")
        if got == r.value:
            continue
        where = f"{r.symbol}={r.value} ({r.fragment.name}, line {r.line})"
        overriding = [o for o in requests if o.symbol == r.symbol and o.value == got and o.fragment != r.fragment]
        if overriding:  # a later fragment (the user's) asked for the opposite, and merge_config.sh let it win
            o = overriding[-1]
            problems.append(f"{o.fragment}, line {o.line}: {o.symbol}={o.value} undoes {where}, "
                            "which the harness needs")
        elif not _kconfig_defines(tree, r.symbol):
            if not r.optional:
                problems.append(f"{where}: this kernel has no such option (dropped or misspelled)")
        else:
            problems.append(f"{where}: the final .config has {r.symbol}={got} "
                            "(a dependency is off or it is not selectable)")
    if problems:
        raise ConfigError("config fragments asked for what the final .config lacks:\n  " + "\n  ".join(problems))


def configure(tree: Path, build_dir: Path, fragments: list[Path], log: IO[str]) -> Path:
    """Write a checked build_dir/.config; skip all work when nothing changed."""
    requests = [r for f in fragments for r in read_fragment(f)]
    config = build_dir / ".config"
    stamp = cache.Stamp(build_dir / ".harness-config-stamp",
                        cache.digest(str(tree), "allnoconfig", *(f.read_bytes() for f in fragments)))
    if stamp.current(config):
        return config
    run([str(tree / "scripts/kconfig/merge_config.sh"), "-n", "-O", str(build_dir), *map(str, fragments)],
        error=ConfigError, what="merge_config.sh", cwd=tree, log=log)
    check(config, requests, tree)
    stamp.write()
    return config
