"""Speed switches applied to a built model: attention kernels, CPU linear layers, checkpointing, compilation.

Each one leaves the function the model computes unchanged (up to floating-point
reordering), which tests check; which ones pay off depends on the device, so
the choice is a config value (``perf``) and README "Performance" gives the
measurements behind the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.distributed._composable import checkpoint

from jepa.config import PerfConfig
from jepa.models.predictor import SharedContextPredictor
from jepa.onednn_linear import resolve_onednn_linear, use_onednn_linear


# Above this many tokens per input, fused attention wins on CPU even under bf16 (README "Performance").
MATH_ATTENTION_MAX_TOKENS = 512


def fused_attention_for(choice: str, device: torch.device, autocast_dtype: torch.dtype | None, tokens: int) -> bool:
    """Whether attention should run as fused SDPA. 'auto': yes on GPU; on CPU unless bf16 on short sequences.

    On CPU under bf16 the flash kernel's backward is slower than plain matmul +
    softmax at a few hundred tokens: the ViT-Tiny reference step (196 tokens) runs
    1.25x faster with math attention. At video lengths it is the other way round
    (1568 tokens: fused 1.9x faster), and in fp32 the two are equally fast while
    the fused kernel keeps no attention matrix, so those stay fused.
    """
    if choice not in ("auto", "fused", "math"):
        raise ValueError(f"attention must be 'auto', 'fused' or 'math', got {choice!r}")
    if choice != "auto":
        return choice == "fused"
    return device.type == "cuda" or autocast_dtype != torch.bfloat16 or tokens > MATH_ATTENTION_MAX_TOKENS


def input_tokens(model: nn.Module) -> int:
    """Tokens per input of the model's encoder (the longest sequence its attention sees, up to mask tokens)."""
    return max((int(m.num_tokens) for m in model.modules() if isinstance(getattr(m, "num_tokens", None), int)),
               default=0)


def set_fused_attention(model: nn.Module, fused: bool) -> int:
    """Switch every timm attention layer in ``model`` to fused SDPA or explicit math; returns how many."""
    layers = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for layer in layers:
        layer.fused_attn = fused
    return len(layers)


def split_attention_for(choice: bool | Literal["auto"], device: torch.device,
                        autocast_dtype: torch.dtype | None) -> bool:
    """Whether the shared-context predictor splits its attention by stream. 'auto': yes, except under bf16 on a
    CPU with AMX.

    Splitting halves the attention's work but runs more, smaller operations. On an AMD EPYC (AVX512-BF16)
    the split bf16 step took 0.88x the masked pass's time; on an Intel Xeon with AMX, where bf16 matmuls
    run about 3x faster, the masked pass was 1.06-1.10x faster (about 12 % more memory); in fp32 and on
    GPU the two were within the run-to-run spread (README "Performance").
    """
    if choice not in (True, False, "auto"):
        raise ValueError(f"split_attention must be true, false or 'auto', got {choice!r}")
    if choice != "auto":
        return choice
    amx = device.type == "cpu" and bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return not (amx and autocast_dtype == torch.bfloat16)


def set_split_attention(model: nn.Module, split: bool) -> int:
    """Switch every shared-context predictor in ``model`` to block-by-block or masked attention; returns how many."""
    predictors = [m for m in model.modules() if isinstance(m, SharedContextPredictor)]
    for predictor in predictors:
        predictor.split_attention = split
    return len(predictors)


def block_lists(model: nn.Module) -> list[nn.ModuleList]:
    """The transformer block lists of a JEPA-style model (encoder ``blocks``, predictor ``predictor_blocks``)."""
    return [m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and name.split(".")[-1]
            in ("blocks", "predictor_blocks")]


def checkpoint_activations(model: nn.Module) -> int:
    """Recompute each block's activations in backward instead of storing them; parameter names are unchanged."""
    count = 0
    for blocks in block_lists(model):
        for block in blocks:
            checkpoint(block)
            count += 1
    return count


def skip_coalescing_analysis() -> None:
    """Switch off inductor's memory-coalescing analysis where this torch has it.

    With dynamic shapes it fails an assertion (pytorch/pytorch#170550): seen on torch 2.11
    compiling our predictor on an H100. The analysis only picks tile shapes for
    pointwise kernels; with it off the compiled ViT-L step ran in 128-138 ms (200 ms eager).
    """
    import torch._inductor.config as inductor_config

    if hasattr(inductor_config.triton, "coalesce_tiling_analysis"):
        inductor_config.triton.coalesce_tiling_analysis = False


COMPILE_CACHE = "compile_cache"


def keep_compiled_kernels(run_dir: Path) -> Path:
    """Make the run folder's ``compile_cache`` inductor's on-disk cache, unless ``TORCHINDUCTOR_CACHE_DIR``
    names a folder of the user's; returns the folder in use.

    Inductor reuses kernels it finds there, so a resumed run (a requeued SLURM job, perhaps on a node whose
    ``/tmp`` never saw this run) loads them instead of compiling again: resuming the embedded default for 20
    steps took 30 s with its kernels there against 95 s from an empty cache (README "Performance"). Importing
    ``torch._dynamo`` already writes torch's default (``/tmp/torchinductor_$USER``) into the variable, so
    that value counts as unset; inductor reads the variable each time it looks up a kernel.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is None or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(run_dir).resolve() / COMPILE_CACHE)
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


class StaticShapes(NamedTuple):
    """Which token counts are the same in every step, so that ``torch.compile`` can build static graphs."""

    context: bool = False  # the context encoder's (the target encoder always sees whole inputs)
    targets: bool = False  # the predictor's: the context plus the target tokens


def compile_modules(model: nn.Module, static: StaticShapes) -> None:
    """``torch.compile`` the encoders and the predictor, each with static shapes where its token counts are fixed.

    With a fixed context (``masks.context_tokens``) the context encoder sees one token count per mask set
    and the target encoder always whole inputs, so static graphs fit both (one per count, no symbolic
    sizes). Otherwise the context's size changes every step and both compile for dynamic shapes, which on
    the Intel Xeon with AMX ran as fast as a static target encoder (947-1030 against 983-1049 ms). The
    predictor is static only where the target counts are fixed too (clips with fixed counts, tube masks):
    image target blocks vary in size.
    """
    skip_coalescing_analysis()
    dynamic = {"encoder": not static.context, "target_encoder": not static.context, "predictor": not static.targets}
    for name, is_dynamic in dynamic.items():
        module = getattr(model, name, None)
        if module is not None:
            module.compile(dynamic=is_dynamic)


def apply_perf(model: nn.Module, perf: PerfConfig, device: torch.device, autocast_dtype: torch.dtype | None,
               *, static: StaticShapes = StaticShapes()) -> None:
    """Apply the model-side switches of ``perf`` (the optimizer's is read by ``build_optimizer``).

    ``static``: which of the step's token counts never change (compiled with static shapes).
    """
    set_fused_attention(model, fused_attention_for(perf.attention, device, autocast_dtype, input_tokens(model)))
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(perf.cudnn_attention)
    set_split_attention(model, split_attention_for(perf.split_attention, device, autocast_dtype))
    if resolve_onednn_linear(perf.onednn_linear, device):
        use_onednn_linear(model)
    if perf.activation_checkpointing:
        checkpoint_activations(model)
    if perf.compile:
        compile_modules(model, static)
