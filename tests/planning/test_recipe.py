"""The recipe as an installed command runs from any folder; the world-model stage's compute precision and its
ensemble members trained side by side."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from jepa.config import load_plan_config
from jepa.planning.recipe import train_predictors
from jepa.single_threaded import run_single_threaded


def test_evaluate_stage_imports_from_outside_the_checkout(tmp_path):
    # run_recipe's last stage imports eval.planning; a console script has no checkout on sys.path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", "from eval.planning import evaluate_run; import jepa.planning.recipe"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("precision, expected", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_world_model_precision_sets_the_predictors_compute_dtype(tmp_path, precision, expected):
    """``world_model.precision`` autocasts the predictor's convolutions; its residual stream stays fp32."""
    cfg = load_plan_config(None, ["world_model.predictor=grid", "world_model.pool=0", "world_model.window=2",
                                  "world_model.rollout_steps=1", "world_model.steps=1", "world_model.batch_size=2",
                                  "world_model.grid.width=4", "world_model.grid.depth=1",
                                  f"world_model.precision={precision}"])
    encoder = SimpleNamespace(dim=4, num_tokens=9)
    data = {"features": torch.randn(3, 4, 9, 4), "actions": torch.randn(3, 3, 2 * cfg.world_model.frameskip)}
    seen = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append((type(module).__name__, out.dtype)))
    try:
        (predictor,) = train_predictors(cfg, data, encoder, tmp_path / "wm.pt", {})
    finally:
        hook.remove()
    assert {dtype for name, dtype in seen if name == "Conv2d"} == {expected}
    assert all(p.dtype == torch.float32 for p in predictor.parameters())
    with torch.no_grad():
        assert predictor(data["features"][:1, :1], data["actions"][:1, :1]).dtype == torch.float32


def test_ensemble_members_train_side_by_side_exactly_as_one_after_another(tmp_path, monkeypatch):
    """With two torch threads the two members train on two single-threaded workers (about one member's wall
    time on two cores, README); each member's arithmetic is the same, so the weights are identical."""
    from jepa.planning import recipe

    cfg = load_plan_config(None, ["world_model.predictor=grid", "world_model.pool=0", "world_model.window=2",
                                  "world_model.rollout_steps=1", "world_model.steps=3", "world_model.batch_size=2",
                                  "world_model.grid.width=4", "world_model.grid.depth=1", "world_model.ensemble=2",
                                  "world_model.precision=fp32", "world_model.log_every=1"])
    encoder = SimpleNamespace(dim=4, num_tokens=9)
    data = {"features": torch.randn(3, 4, 9, 4), "actions": torch.randn(3, 3, 2 * cfg.world_model.frameskip)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    calls = []
    monkeypatch.setattr(recipe, "run_single_threaded",
                        lambda tasks, workers, **kw: calls.append(workers) or run_single_threaded(tasks, workers, **kw))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_after_another = train_predictors(cfg, data, encoder, tmp_path / "a" / "wm.pt", {})
        assert calls == []
        torch.set_num_threads(2)
        side_by_side = train_predictors(cfg, data, encoder, tmp_path / "b" / "wm.pt", {})
        assert calls == [2, 2, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one_after_another, side_by_side, strict=True):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), name
    first, second = (next(iter(p.parameters())) for p in one_after_another)
    assert not torch.equal(first, second)  # two members, not one trained twice
