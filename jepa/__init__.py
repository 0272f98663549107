"""JEPA representation learning: pretraining, probes and pretrained backbones.

``jepa.load_encoder`` is imported on first use, so ``import jepa.config`` and the CLI stay light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_encoder"]


def __getattr__(name: str) -> Any:
    if name == "load_encoder":
        from jepa.hub import load_encoder

        return load_encoder
    raise AttributeError(f"module 'jepa' has no attribute {name!r}")
