"""What the benchmarks' JSON reports share."""

from __future__ import annotations

import platform

import torch


def device_name(device: torch.device) -> str:
    """The CUDA device's name, or the CPU model and how many threads torch uses on it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({torch.get_num_threads()} threads)"
