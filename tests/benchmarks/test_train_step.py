"""The training-step benchmark: its JSON report, its argument checks, and that the timed step trains."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

# The repo root must come first: plain `pytest` does not put it on sys.path, and there the folder
# tests/benchmarks/ would otherwise be imported as a namespace package called `benchmarks`.
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.train_step import SMOKE, SMOKE_OVERRIDES, build_bench, main, make_config, strip_options  # noqa: E402
from jepa.masks import MultiBlock3DMasks, MultiBlockMasks  # noqa: E402
from jepa.train import step_values  # noqa: E402


def test_smoke_prints_one_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    main(["--smoke"])
    elapsed = time.perf_counter() - start
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    report = json.loads(lines[0])

    assert report["command"][-1] == "--smoke"
    assert report["device"]
    assert report["torch"] == torch.__version__
    assert report["steps"] == SMOKE["steps"] and report["warmup"] == SMOKE["warmup"]
    assert 0 < report["warmup_s"] < elapsed  # the untimed steps (compilation, if any, happens there)
    config = report["config"]
    assert config["model"] == "vit_tiny" and config["batch"] == SMOKE["batch"]
    assert config["img_size"] == SMOKE["img_size"] and config["patch"] == SMOKE["patch_size"]
    assert config["precision"] == "fp32" and config["num_targets"] == 4
    assert config["pred_width"] == SMOKE["pred_width"] and config["pred_depth"] == SMOKE["pred_depth"]
    assert 0 < report["step_ms_p10"] <= report["step_ms"] <= report["step_ms_p90"]
    assert report["items_per_s"] == pytest.approx(config["batch"] * 1000 / report["step_ms"], rel=1e-3)
    assert 0 <= report["collate_ms"] < report["step_ms"]
    assert 0 < report["train_step_ms"] < report["step_ms_p90"]  # the median of (step - collate)
    assert report["train_mfu"] is None  # no known peak on CPU
    assert report["peak_mem_bytes"] > 0
    assert config["token_multiple_used"] == 1 and config["context_tokens_used"] is None  # 8 x 8 tokens


def test_fixed_context_is_reported_as_resolved(capsys: pytest.CaptureFixture[str]) -> None:
    report = main(["--smoke", "masks.context_tokens=auto"])
    grid = SMOKE["img_size"] // SMOKE["patch_size"]
    fixed = MultiBlockMasks(grid=(grid, grid), context_tokens="auto").context_tokens
    assert report["config"]["context_tokens_used"] == fixed
    clips = main(["--smoke", "--video", "masks.context_tokens=auto"])
    tokens = (clips["config"]["frames"] // 2, grid, grid)  # tubelets of 2 frames
    pairs = MultiBlock3DMasks(grid=tokens, fixed_counts="auto").fixed_counts  # (context, target) per mask set
    assert clips["config"]["context_tokens_used"] == [list(pair) for pair in pairs]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "vit_nope"], "vit_tiny, vit_small, vit_base"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--img-size", "100"], "multiple of encoder.patch_size"),
    ],
)
def test_bad_arguments_are_rejected(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_timed_step_trains_encoder_and_moves_target_towards_it() -> None:
    cfg = make_config(model="vit_tiny", img_size=SMOKE["img_size"], patch_size=SMOKE["patch_size"],
                      batch=SMOKE["batch"], pred_width=SMOKE["pred_width"], pred_depth=SMOKE["pred_depth"],
                      pred_heads=SMOKE["pred_heads"], total_steps=10, precision="fp32", extra=SMOKE_OVERRIDES)
    bench = build_bench(cfg)

    def flat(module: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()

    for step in range(2):
        encoder, target, predictor = flat(bench.core.encoder), flat(bench.core.target_encoder), flat(bench.core.predictor)
        bench.step(step)
        new_encoder, new_target = flat(bench.core.encoder), flat(bench.core.target_encoder)

        assert not torch.equal(new_encoder, encoder), "the context encoder did not train"
        assert not torch.equal(flat(bench.core.predictor), predictor), "the predictor did not train"
        assert not torch.equal(new_target, target), "the EMA target did not move"
        momentum = step_values(step, cfg).momentum
        torch.testing.assert_close(new_target, momentum * target + (1 - momentum) * new_encoder)
        assert (new_target - new_encoder).norm() < (target - new_encoder).norm()
        assert bench.core.target_encoder.blocks[0].attn.qkv.weight.grad is None  # targets get no gradient


def test_benchmark_config_is_the_reference_step_not_the_cpu_default():
    import torch

    from jepa.build import build_encoder

    cfg = make_config(model="vit_tiny", img_size=224, patch_size=16, batch=16, pred_width=384, pred_depth=12,
                      pred_heads=12, total_steps=10, precision="fp32")
    with torch.device("meta"):
        encoder = build_encoder(cfg)
    assert len(encoder.blocks) == 12 and encoder.embed_dim == 192
    assert cfg.loss.var_coeff == 0 and cfg.loss.cov_coeff == 0 and cfg.masks.num_targets == 4


def test_video_smoke_times_the_vjepa_step_with_its_flops(capsys: pytest.CaptureFixture[str]) -> None:
    report = main(["--smoke", "--video", "--frames", "4", "perf.attention=fused"])
    config = report["config"]
    assert config["frames"] == 4 and config["perf"]["attention"] == "fused"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report
    assert report["step_tflop"] > 0 and report["tflop_per_s"] > 0
    assert report["mfu"] is None  # no known peak on CPU


def test_profile_writes_a_chrome_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    main(["--smoke", "--profile", str(trace)])
    events = json.loads(trace.read_text())["traceEvents"]
    assert any("aten::" in str(event.get("name", "")) for event in events)
    table = (tmp_path / "trace.txt").read_text()
    assert "aten::" in table and "Self CPU" in table


def test_unknown_override_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--smoke", "perf.atention=math"])
    assert "atention" in capsys.readouterr().err


def test_strip_options_drops_sweep_arguments_in_both_forms() -> None:
    argv = ["--smoke", "--sweep", "--switches", "compile", "--rounds=2", "--profile", "t.json", "perf.compile=false"]
    assert strip_options(argv, flags={"--sweep"}, valued={"--switches", "--rounds", "--profile"}) == [
        "--smoke", "perf.compile=false"]


def test_sweep_flips_each_switch_in_its_own_process(capsys: pytest.CaptureFixture[str]) -> None:
    switches = "attention,shared_context,token_multiple,context_tokens"
    report = main(["--smoke", "--sweep", "--switches", switches, "perf.attention=math"])
    rows = {row["variant"]: row for row in report["variants"]}
    assert list(rows) == ["baseline", "attention=fused", "shared_context=false", "token_multiple=8",
                          "context_tokens=auto"]
    assert rows["baseline"]["ratio"] == 1.0
    for row in rows.values():
        assert row["items_per_s"] > 0 and row["peak_mem_bytes"] > 0
        assert row["ratio"] == pytest.approx(row["items_per_s"] / rows["baseline"]["items_per_s"], abs=1e-3)
    assert "| shared_context=false |" in capsys.readouterr().err
