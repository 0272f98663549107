"""Shared test set-up: small thread counts and offline wandb so tests are fast and hermetic."""

import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
