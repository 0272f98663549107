"""Side-by-side tables of evaluation results (summary.json files or probe JSON lines)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

METRIC_SUFFIXES = ("accuracy", "top1", "top5")


def read_result(path: str | Path) -> dict[str, Any]:
    """A summary.json, or the last JSON line of a probe's output saved to a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    text = path.read_text().strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"{path} is empty") from None
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is neither a JSON file nor ends with a JSON line: {err}") from None


def metric_columns(results: list[dict[str, Any]]) -> list[str]:
    """Top-level numeric keys that are metrics, in first-seen order."""
    columns: list[str] = []
    for result in results:
        for key, value in result.items():
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if is_number and key.endswith(METRIC_SUFFIXES) and key not in columns:
                columns.append(key)
    return columns


def markdown_table(results: list[dict[str, Any]], names: list[str]) -> str:
    """One row per result, one column per metric (blank where a result lacks it), plus steps and wall time."""
    if len(results) != len(names):
        raise ValueError(f"{len(results)} results but {len(names)} names")
    columns = metric_columns(results)
    extra = [key for key in ("steps", "wall_time_s") if any(key in r for r in results)]
    header = ["run", *columns, *extra]

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float) and not math.isnan(value):
            return f"{value:.4f}" if abs(value) <= 1 else f"{value:.1f}"
        return str(value)

    rows = [[name, *(cell(r.get(key)) for key in header[1:])] for name, r in zip(names, results)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
