"""Writing one benchmark's results: benchmarks/results/STEM.{md,json,png}, rewritten after every run so an
interrupted benchmark still leaves its partial table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(stem: str, markdown: str, payload: dict, plot: Callable[[Path], None]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(markdown.rstrip("\n") + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    plot(RESULTS / f"{stem}.png")
