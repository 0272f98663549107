"""Where training metrics go: ``metrics.jsonl`` in the run folder, wandb, and a loss-curve PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jepa.config import WandbConfig


class MetricsWriter:
    """Appends one JSON line per log step and mirrors it to wandb unless disabled."""

    def __init__(self, run_dir: Path, wandb_cfg: WandbConfig, config: dict[str, Any]) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.run = None
        mode = wandb_cfg.mode
        if mode == "auto":
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        if mode != "disabled":
            import wandb

            self.run = wandb.init(
                project=wandb_cfg.project,
                name=wandb_cfg.name or run_dir.name,
                id=run_dir.name.replace(".", "-"),
                resume="allow",
                dir=str(run_dir),
                mode=mode,
                config=config,
            )

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.run is not None:
            self.run.log(record, step=record["step"])

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(records: list[dict[str, Any]], png: Path) -> None:
    """Loss terms, collapse diagnostics and learning rate against step, in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    panels = [
        ("loss", [k for k in ("loss", "pred_loss", "var_loss", "cov_loss") if k in records[0]], "log"),
        ("target feature std", ["target_std"], "linear"),
        ("effective rank (RankMe)", ["effective_rank"], "linear"),
        ("learning rate", ["lr"], "linear"),
    ]
    if any("monitor_knn_top1" in r for r in records):
        panels.insert(3, ("online k-NN top-1 (train split)", ["monitor_knn_top1"], "linear"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, keys, scale) in zip(axes, panels):
        for key in keys:
            logged = [r for r in records if key in r]  # e.g. the monitor logs only every monitor_every steps
            ax.plot([r["step"] for r in logged], [r[key] for r in logged], marker="." if len(logged) < 30 else None,
                    label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_yscale(scale)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
