"""The benchmarks' figures against their budgets: written to a JSON file and printed as a table."""
from __future__ import annotations

import json
from pathlib import Path


def report(figures: dict[str, float], budgets: dict[str, float], unit: str, results: Path,
           extra: dict[str, float] | None = None) -> int:
    """Round, write `results`, print each figure with its budget; 0 if every budget holds, else 1."""
    figures = {k: round(v, 1) for k, v in figures.items()}
    results.write_text(json.dumps({**figures, **(extra or {})}, indent=2) + "\n")
    for name, value in figures.items():
        limit = budgets.get(name)
        verdict = f"  budget <= {limit} {unit}: {'ok' if value <= limit else 'OVER'}" if limit else ""
        print(f"{name:<22} {value:>7.1f} {unit}{verdict}")
    return 0 if all(figures[k] <= b for k, b in budgets.items()) else 1
