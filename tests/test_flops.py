import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from jepa.build import build_jepa, build_masks
from jepa.config import load_config
from jepa.data.pretrain import MaskCollator
from jepa.flops import StepShape, TransformerShape, blocks_forward_flops, peak_flops, step_flops, step_shape
from jepa.masks import MaskSet
from jepa.models.vit import make_blocks
from jepa.perf import set_split_attention


def counted(fn) -> int:
    """FLOPs torch's own counter sees for ``fn()`` (the independent reference)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_block_flops_match_torch_flop_counter():
    blocks = make_blocks(48, 3, 4, 4.0)
    x = torch.randn(5, 37, 48)

    def run():
        y = x
        for block in blocks:
            y = block(y)

    assert blocks_forward_flops(TransformerShape(48, 3), sequences=5, tokens=37) == counted(run)


@pytest.mark.parametrize("shared, split", [(False, False), (True, False), (True, True)])
def test_step_flops_match_torch_flop_counter_part_by_part(shared, split):
    cfg = load_config(None, ["data.img_size=32", "encoder.in_chans=3", f"predictor.shared_context={shared}",
                             f"perf.split_attention={split}"])
    model = build_jepa(cfg)
    set_split_attention(model, split)
    batch = MaskCollator(build_masks(cfg), seed=0, global_batch=4)([(torch.randn(3, 32, 32), 0, i) for i in range(4)])
    mask = batch["masks"][0]
    flops = step_flops(step_shape(cfg, split_attention=split), batch["masks"])
    context = model.encoder(batch["inputs"], keep=mask.context)
    assert flops["target_forward"] == counted(lambda: model.target_encoder(batch["inputs"]))
    assert flops["context_forward"] == counted(lambda: model.encoder(batch["inputs"], keep=mask.context))
    assert flops["predictor_forward"] == counted(lambda: model.predictor(context.detach(), mask.context, mask.targets))
    assert flops["step"] == flops["target_forward"] + 3 * (flops["context_forward"] + flops["predictor_forward"])


def test_video_step_flops_match_torch_flop_counter():
    cfg = load_config(None, ["data.source=moving-digits", "data.img_size=32", "video.num_frames=4",
                             "encoder.depth=1", "predictor.depth=1", "encoder.in_chans=3"])
    model = build_jepa(cfg)
    clips = torch.randn(2, 3, 4, 32, 32)
    batch = MaskCollator(build_masks(cfg), seed=0, global_batch=2)([(clip, 0, i) for i, clip in enumerate(clips)])
    assert len(batch["masks"]) == 2  # short- and long-range mask sets
    flops = step_flops(step_shape(cfg, split_attention=False), batch["masks"])
    assert flops["target_forward"] == counted(lambda: model.target_encoder(clips))
    context = sum(counted(lambda m=m: model.encoder(clips, keep=m.context)) for m in batch["masks"])
    assert flops["context_forward"] == context


def test_shared_context_saves_predictor_flops_on_the_reference_step():
    masks = [MaskSet(torch.zeros(16, 76, dtype=torch.long), torch.zeros(16, 4, 30, dtype=torch.long))]
    common = dict(encoder=TransformerShape(192, 12), predictor=TransformerShape(384, 12), num_tokens=196,
                  patch_volume=3 * 16 * 16)
    per_block = step_flops(StepShape(**common), masks)["predictor_forward"]
    shared = step_flops(StepShape(**common, shared_context=True), masks)["predictor_forward"]
    assert 2.0 < per_block / shared < 2.3  # 4 x (76 + 30) tokens against 76 + 4 x 30 per sample
    split = step_flops(StepShape(**common, shared_context=True, split_attention=True), masks)["predictor_forward"]
    assert 1.05 < shared / split < 1.15  # about half the attention, the last block's context MLP skipped


def test_peak_flops_table():
    assert peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak_flops("NVIDIA H200") == pytest.approx(989.4e12)
    assert peak_flops("AMD EPYC (2 threads)") is None
