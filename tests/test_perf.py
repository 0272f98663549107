import pytest
import torch

from jepa.build import build_jepa, build_masks, build_optimizer, static_shapes
from jepa.config import PerfConfig, load_config
from jepa.data.pretrain import MaskCollator
from jepa.perf import (
    COMPILE_CACHE, StaticShapes, apply_perf, checkpoint_activations, fused_attention_for, input_tokens,
    keep_compiled_kernels, set_fused_attention, set_split_attention, split_attention_for,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _model_and_batch(*overrides: str):
    cfg = load_config(None, ["data.img_size=16", "encoder.depth=2", "predictor.depth=2", *overrides])
    torch.manual_seed(0)
    model = build_jepa(cfg)
    batch = MaskCollator(build_masks(cfg), seed=0, global_batch=4)([(torch.randn(1, 16, 16), 0, i) for i in range(4)])
    return cfg, model, batch


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(batch["inputs"], batch["masks"])
    loss = out["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_auto_attention_is_fused_on_gpu_and_math_only_for_bf16_short_sequences_on_cpu():
    bf16 = torch.bfloat16
    assert fused_attention_for("auto", CUDA, bf16, 196) and fused_attention_for("auto", CUDA, None, 196)
    assert not fused_attention_for("auto", CPU, bf16, 196) and fused_attention_for("auto", CPU, None, 196)
    assert fused_attention_for("auto", CPU, bf16, 1568)  # video lengths
    assert fused_attention_for("fused", CPU, bf16, 196) and not fused_attention_for("math", CUDA, None, 196)
    with pytest.raises(ValueError, match="attention"):
        fused_attention_for("flash", CPU, None, 196)


def test_input_tokens_is_the_encoder_token_count():
    _, model, _ = _model_and_batch()
    assert input_tokens(model) == model.encoder.num_tokens == (16 // 4) ** 2


def test_math_and_fused_attention_compute_the_same_step():
    _, model, batch = _model_and_batch()
    assert set_fused_attention(model, True) == 2 + 2 + 2  # context encoder, target encoder, predictor
    fused = _loss_and_grads(model, batch)
    set_fused_attention(model, False)
    math = _loss_and_grads(model, batch)
    torch.testing.assert_close(math, fused, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("fused", [False, True])
def test_split_shared_context_attention_computes_the_same_step(fused):
    _, model, batch = _model_and_batch("predictor.shared_context=true")
    set_fused_attention(model, fused)
    assert set_split_attention(model, False) == 1
    masked = _loss_and_grads(model, batch)
    set_split_attention(model, True)
    torch.testing.assert_close(_loss_and_grads(model, batch), masked, atol=2e-5, rtol=1e-4)


def test_activation_checkpointing_keeps_loss_grads_and_parameter_names():
    _, model, batch = _model_and_batch()
    names = [n for n, _ in model.named_parameters()]
    plain = _loss_and_grads(model, batch)
    assert checkpoint_activations(model) == 2 * 2 + 2  # encoder + target encoder blocks, predictor blocks
    assert [n for n, _ in model.named_parameters()] == names
    torch.testing.assert_close(_loss_and_grads(model, batch), plain, atol=1e-6, rtol=1e-6)


def test_fused_adamw_steps_like_foreach():
    results = []
    for fused in (False, True):
        cfg, model, batch = _model_and_batch(f"perf.fused_optimizer={fused}")
        optimizer = build_optimizer(model, cfg)
        assert optimizer.defaults["fused"] is fused
        for _ in range(3):
            _loss_and_grads(model, batch)
            optimizer.step()
        results.append({n: p.detach().clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(results[1], results[0], atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_compiled_model_computes_the_same_step():
    _, model, batch = _model_and_batch()
    plain = _loss_and_grads(model, batch)
    apply_perf(model, PerfConfig(attention="math", compile=True), CPU, None)
    torch.testing.assert_close(_loss_and_grads(model, batch), plain, atol=1e-4, rtol=1e-4)


def test_onednn_linear_computes_the_same_step():
    _, model, batch = _model_and_batch()
    plain = _loss_and_grads(model, batch)
    apply_perf(model, PerfConfig(attention="auto", onednn_linear=True), CPU, None)
    assert all(type(m).__name__ == "OneDNNLinear" for m in model.modules() if isinstance(m, torch.nn.Linear))
    torch.testing.assert_close(_loss_and_grads(model, batch), plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cudnn", [False, True])
def test_cudnn_attention_switch_sets_the_sdpa_backend_on_gpu_only(cudnn):
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(not cudnn)
        _, model, _ = _model_and_batch()
        apply_perf(model, PerfConfig(cudnn_attention=cudnn, onednn_linear=False), CPU, None)
        assert torch.backends.cuda.cudnn_sdp_enabled() is (not cudnn)  # CPU runs leave the global flag alone
        apply_perf(model, PerfConfig(cudnn_attention=cudnn, onednn_linear=False), CUDA, torch.bfloat16)
        assert torch.backends.cuda.cudnn_sdp_enabled() is cudnn
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def test_compile_switches_off_the_coalescing_analysis_where_torch_has_it(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.triton, "coalesce_tiling_analysis", True, raising=False)
    _, model, _ = _model_and_batch()
    apply_perf(model, PerfConfig(compile=True, onednn_linear=False), CPU, None)
    assert inductor_config.triton.coalesce_tiling_analysis is False


def test_auto_split_attention_is_the_masked_pass_only_under_bf16_on_amx(monkeypatch):
    bf16 = torch.bfloat16
    assert split_attention_for(False, CUDA, bf16) is False and split_attention_for(True, CPU, bf16) is True
    for amx, want in ((True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        assert split_attention_for("auto", CPU, bf16) is want
        assert split_attention_for("auto", CPU, None) is True  # fp32: the split pass everywhere
        assert split_attention_for("auto", CUDA, bf16) is True
    with pytest.raises(ValueError, match="split_attention"):
        split_attention_for("sometimes", CPU, None)


def test_apply_perf_resolves_auto_split_attention(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    for dtype, want in ((torch.bfloat16, False), (None, True)):
        _, model, _ = _model_and_batch("predictor.shared_context=true")
        apply_perf(model, PerfConfig(onednn_linear=False), CPU, dtype)
        assert model.predictor.split_attention is want


def test_compile_is_static_where_the_step_shapes_are_fixed(monkeypatch):
    calls = {}
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, dynamic: calls.__setitem__(self, dynamic))
    for context, targets in ((False, False), (True, False), (True, True)):
        calls.clear()
        _, model, _ = _model_and_batch()
        apply_perf(model, PerfConfig(compile=True, onednn_linear=False), CPU, None,
                   static=StaticShapes(context=context, targets=targets))
        assert calls == {model.encoder: not context, model.target_encoder: not context, model.predictor: not targets}


def _compiled_graphs_matching_eager(cfg, model, batches) -> int:
    """Compile ``model`` as ``cfg``'s masks allow, check it against eager on ``batches``; the graphs dynamo built."""
    from torch._dynamo.utils import counters

    plain = [_loss_and_grads(model, b) for b in batches]
    torch._dynamo.reset()
    counters.clear()
    apply_perf(model, PerfConfig(attention="math", compile=True, onednn_linear=False), CPU, None,
               static=static_shapes(cfg))
    for batch, want in zip(batches, plain):
        torch.testing.assert_close(_loss_and_grads(model, batch), want, atol=1e-4, rtol=1e-4)
    return counters["stats"]["unique_graphs"]


@pytest.mark.slow
def test_compiled_fixed_context_step_matches_eager_and_compiles_the_encoder_once():
    cfg, model, _ = _model_and_batch("data.img_size=32", "masks.context_tokens=auto")  # 8 x 8 tokens
    masks = build_masks(cfg)
    collate = MaskCollator(masks, seed=0, global_batch=4)
    batches = [collate([(torch.randn(1, 32, 32), 0, i + 4 * k) for i in range(4)]) for k in range(3)]
    assert {b["masks"][0].context.shape[1] for b in batches} == {masks.context_tokens}
    # encoder, target encoder and predictor: no recompiles
    assert _compiled_graphs_matching_eager(cfg, model, batches) <= 3


@pytest.mark.slow
def test_compiled_fixed_count_clip_step_matches_eager_with_one_graph_per_shape():
    """Clips with fixed counts: one static graph per distinct context count for the context encoder and per
    (context, target) pair for the predictor, one for the target encoder, and no recompiles across batches."""
    cfg = load_config(None, ["data.source=moving-digits", "data.img_size=16", "encoder.patch_size=4",
                             "video.num_frames=8", "encoder.depth=2", "predictor.depth=2", "masks.context_tokens=auto"])
    torch.manual_seed(0)
    model = build_jepa(cfg)
    masks = build_masks(cfg)
    collate = MaskCollator(masks, seed=0, global_batch=4)
    clip = (cfg.encoder.in_chans, cfg.video.num_frames, 16, 16)
    batches = [collate([(torch.randn(clip), 0, i + 4 * k) for i in range(4)]) for k in range(3)]
    shapes = {tuple((m.context.shape[1], m.targets.shape[2]) for m in b["masks"]) for b in batches}
    assert shapes == {masks.fixed_counts}
    static_graphs = len({context for context, _ in masks.fixed_counts}) + len(set(masks.fixed_counts)) + 1
    assert _compiled_graphs_matching_eager(cfg, model, batches) == static_graphs  # dynamic graphs would be 3 in all


def test_compiled_kernels_go_to_the_run_folder_unless_the_user_chose_a_cache(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert keep_compiled_kernels(tmp_path / "run") == (tmp_path / "run" / COMPILE_CACHE).resolve()
    assert cache_dir() == str(tmp_path / "run" / COMPILE_CACHE)  # what inductor reads
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what importing torch._dynamo sets
    assert keep_compiled_kernels(tmp_path / "run2") == (tmp_path / "run2" / COMPILE_CACHE).resolve()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert keep_compiled_kernels(tmp_path / "run") == tmp_path / "mine"
