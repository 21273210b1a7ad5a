"""Spec stage, for CI: a spec that declares a matrix expands to many runs.

    matrix:
      kernel.source: [debian:linux-source-6.1, debian:linux-source-6.12]
      vm.numa: [[{mem: 1G, cpus: 0-1}, {mem: 1G, cpus: 2-3}], ...]
      include: [{kernel.profiles: [kasan]}]

Each matrix key is a dotted path into the spec; the entries are the
cartesian product of the values, in a fixed order, then one entry per
`include` item (dotted keys set on the spec, as GitHub Actions' include). `shard(entries, i, n)`
deals them round-robin, so N runners together run every entry exactly once.
"""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import spec as specs
from harness.errors import SpecError


@dataclass(frozen=True)
class Entry:
    name: str  # a directory-safe label, e.g. "source=linux-source-6.12,numa=1"
    spec: specs.Spec


def _label(key: str, value: object, index: int) -> str:
    short = key.rsplit(".", 1)[-1]
    text = str(value).removeprefix("debian:") if isinstance(value, (str, int, float)) else str(index)
    return f"{short}={re.sub(r'[^A-Za-z0-9_.-]+', '_', text)}"


def _set(data: dict[str, Any], dotted: str, value: object, where: str) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"{where}: matrix key '{dotted}' goes through '{part}', which is not a mapping")
    node[last] = value


def expand(path: Path) -> list[Entry]:
    data = specs.read(path)
    if not isinstance(data, dict) or not isinstance(data.get("matrix"), dict) or not data["matrix"]:
        raise SpecError(f"{path}: no matrix (a mapping of dotted spec keys to lists of values)")
    axes = data.pop("matrix")
    include = axes.pop("include", [])
    if not isinstance(include, list) or not all(isinstance(item, dict) and item for item in include):
        raise SpecError(f"{path}: matrix include needs a list of mappings of dotted spec keys to values")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{path}: matrix key '{key}' needs a non-empty list of values")
    entries = []
    for combo in itertools.product(*(list(enumerate(v)) for v in axes.values())):
        variant = copy.deepcopy(data)
        for key, (_, value) in zip(axes, combo, strict=True):
            _set(variant, key, value, str(path))
        name = ",".join(_label(key, value, i) for key, (i, value) in zip(axes, combo, strict=True))
        entries.append(Entry(name, specs.from_dict(variant, path.parent.resolve(), where=f"{path} [{name}]")))
    for item in include:
        variant = copy.deepcopy(data)
        for key, value in item.items():
            _set(variant, key, value, str(path))
        name = ",".join(_label(key, "-".join(map(str, v)) if isinstance(v, list) else v, 0) for key, v in item.items())
        entries.append(Entry(name, specs.from_dict(variant, path.parent.resolve(), where=f"{path} [{name}]")))
    return entries


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise SpecError(f"--shard {text}: write I/N with 1 <= I <= N, e.g. 2/4")
    return int(m.group(1)), int(m.group(2))


def shard(entries: list[Entry], index: int, total: int) -> list[Entry]:
    """The index-th (1-based) of `total` round-robin shards."""
    return entries[index - 1::total]
