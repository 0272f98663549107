"""Markdown table of several runs' results side by side.

    python -m eval.compare runs/*/summary.json [probe_output.json ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jepa.report import markdown_table, read_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.compare", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="summary.json files or files holding a probe's JSON line")
    args = parser.parse_args(argv)
    try:
        results = [read_result(path) for path in args.results]
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    names = [Path(path).parent.name if Path(path).name == "summary.json" else Path(path).stem for path in args.results]
    print(markdown_table(results, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
