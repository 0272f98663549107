"""The planning recipe end to end at toy size: stages, resume, eval JSON, GIF, rollout curve, bad input."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eval import planning as ep  # noqa: E402
from jepa.cli import main as cli_main  # noqa: E402
from jepa.config import ConfigError, load_plan_config  # noqa: E402
from jepa.planning.recipe import load_world_model  # noqa: E402

TOY = ["collect.num_trajectories=16", "pretrain.encoder.patch_size=13", "collect.steps=30", "collect.shard_size=8",
       "pretrain.train.steps=2", "pretrain.data.batch_size=8", "world_model.steps=4", "world_model.log_every=2",
       "world_model.batch_size=4", "world_model.window=6", "world_model.rollout_steps=6",  # 6 x 5 = collect.steps
       "world_model.grid.width=8", "world_model.grid.depth=1", "planner.samples=8", "planner.elites=2",
       "planner.iterations=1", "planner.horizon=12", "planner.replan_every=12", "planner.repeat=4",
       "eval.seed=0", "eval.n=1", "eval.max_horizon=2"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("plan") / "run"
    args = ["plan", "--config", str(ROOT / "configs/plan/two_rooms.yaml"), f"run_dir={run}", *TOY]
    yield run, args
    torch.set_num_threads(threads)


def test_recipe_runs_resumes_and_reports(toy_run, capsys):
    run, args = toy_run
    flushable = torch.set_flush_denormal(False)
    assert cli_main(args) == 0
    if flushable:  # denormals flushed to zero (they slowed the world-model stage by up to 1.8x)
        assert float(torch.tensor([1e-39]) * 1.0) == 0.0
        torch.set_flush_denormal(False)
        assert float(torch.tensor([1e-39]) * 1.0) > 0.0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("success_rate", "mean_final_distance", "seconds_per_step", "budget", "oracle", "rollout_error"):
        assert key in summary
    assert summary["budget"]["samples"] == 8 and summary["budget"]["horizon"] == 12
    assert len(summary["rollout_error"]["position_error_px"]) == 2
    for name in ("eval/episode.gif", "eval/rollout_error.json", "eval/rollout_error.png", "eval/results.json",
                 "plan_summary.json", "world_model.pt", "encoder/checkpoint.pt", "data/manifest.json"):
        assert (run / name).is_file(), name
    assert cli_main(args) == 0  # every stage finds its output and is skipped
    out = capsys.readouterr().out
    assert "collect: " in out and "skipped" in out and "nothing to train" in out and "complete, skipped" in out


def test_world_model_stage_resumes_from_its_checkpoint(tmp_path, capsys, one_thread):
    args = ["plan", "--config", str(ROOT / "configs/plan/two_rooms.yaml"), f"run_dir={tmp_path / 'run'}", *TOY]
    assert cli_main(args) == 0
    capsys.readouterr()
    assert cli_main([*args, "world_model.steps=6"]) == 0  # two more steps on top of the saved four
    out = capsys.readouterr().out
    assert "world model step 6/6" in out and "world model step 2/6" not in out and "world model step 4/6" not in out
    assert int(torch.load(tmp_path / "run" / "world_model.pt", weights_only=True)["step"]) == 6


def test_eval_program_and_bad_input(toy_run, capsys, tmp_path):
    run, _ = toy_run
    if not (run / "world_model.pt").is_file():
        pytest.skip("needs the toy run")
    assert ep.main(["--checkpoint", str(run), "--seed", "3", "--n", "1", "--no-oracle", "--samples", "4", "--elites", "2",
                    "--out", str(tmp_path)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["budget"]["samples"] == 4 and last["episodes"] == 1 and "oracle" not in last
    assert ep.main(["--checkpoint", str(run), "--seed", "3", "--n", "1", "--no-oracle", "--samples", "4", "--elites", "2",
                    "--kind", "mppi", "--out", str(tmp_path / "mppi")]) == 0  # MPPI with held actions (repeat 4)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["budget"]["planner"] == "mppi"
    model, cfg = load_world_model(run)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", None)):  # the dtype the planner imagines in
        agent = ep.learned_agent(model, dataclasses.replace(cfg.planner, precision=precision))
        assert agent.model.autocast is dtype and agent.model.predictors == model.predictors
    with pytest.raises(ValueError, match=r"images must be \[B, 2, 65, 65\]"):
        model.encode(torch.zeros(1, 2, 64, 64))
    with pytest.raises(ValueError, match="actions must be"):
        model.rollout(model.encode(torch.zeros(1, 2, 65, 65)), torch.zeros(4, 10, 3))
    state = torch.load(run / "world_model.pt", weights_only=True)
    w = state["predictors"][0]["inp.weight"]  # the grid predictor's input: features + action chunk channels
    state["predictors"][0]["inp.weight"] = torch.zeros(w.shape[0], w.shape[1] + 1, 1, 1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match the encoder"):
        load_world_model(tmp_path / "bad.pt")
    state["plan_config"]["world_model"]["predictor"] = "transformer"  # weights of one kind, config of the other
    torch.save(state, tmp_path / "kind.pt")
    with pytest.raises(ValueError, match="does not match the model built from the config"):
        load_world_model(tmp_path / "kind.pt")
    old = torch.load(run / "world_model.pt", weights_only=True)
    del old["format"]  # a file saved before rotary frame positions (absolute per-slot frame_pos)
    old["predictors"][0]["frame_pos"] = torch.zeros(1, 4, 1, 16)
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="format 1, this code reads format 2.*retrain"):
        load_world_model(tmp_path / "old.pt")
    assert ep.main(["--checkpoint", str(run), "--seed", "0", "--episodes", "x.json"]) == 1


def test_plan_config_rejects_unknown_and_inconsistent_keys():
    with pytest.raises(ConfigError, match="unknown config key 'planner.sample'"):
        load_plan_config(ROOT / "configs/plan/two_rooms.yaml", ["planner.sample=3"])
    with pytest.raises(ConfigError, match="disagreement"):
        load_plan_config(None, ["planner.disagreement=0.5"])
    cfg = load_plan_config(ROOT / "configs/plan/two_rooms.yaml")
    assert cfg.pretrain.encoder.in_chans == 2 and cfg.planner.samples == 300 and cfg.planner.iterations == 3
    assert cfg.world_model.predictor == "grid" and cfg.world_model.pool == 0 and cfg.planner.blur == (1, 3, 5, 9)
    with pytest.raises(ConfigError, match="odd"):
        load_plan_config(None, ["planner.blur=[1, 4]"])
    with pytest.raises(ConfigError, match="not one of"):
        load_plan_config(None, ["world_model.predictor=cnn"])
    with pytest.raises(ConfigError, match="drift_weight needs"):
        load_plan_config(None, ["world_model.drift_weight=1", "world_model.rollout_steps=0"])
    with pytest.raises(ConfigError, match=r"grid.dilation \[1, 2\] needs one value >= 1 per layer \(depth 3\)"):
        load_plan_config(None, ["world_model.grid.dilation=[1, 2]"])
    assert load_plan_config(None, ["world_model.grid.dilation=[1, 2, 1]"]).world_model.grid.dilation == (1, 2, 1)
    with pytest.raises(ConfigError, match=r"stuck_horizon \(45\) must exceed planner.horizon \(45\)"):
        load_plan_config(None, ["planner.horizon=45", "planner.stuck_horizon=45"])
    with pytest.raises(ConfigError, match="stuck_margin"):
        load_plan_config(None, ["planner.stuck_horizon=120", "planner.stuck_margin=1.5"])
    with pytest.raises(ConfigError, match="check_progress needs planner.stuck_horizon > 0"):
        load_plan_config(None, ["planner.stuck_horizon=0", "planner.check_progress=true"])
    with pytest.raises(ConfigError, match=r"stall_penalty must be >= 0, got -0.5"):
        load_plan_config(None, ["planner.stall_penalty=-0.5"])
    with pytest.raises(ConfigError, match=r"contact_fraction \(0.6\) must be in \[0, 1 - held_fraction \(0.5\)\]"):
        load_plan_config(None, ["collect.held_fraction=0.5", "collect.contact_fraction=0.6"])
    with pytest.raises(ConfigError, match=r"outer_contact_fraction \(0.3\) must be in \[0, 1 - held_fraction \(0.5\) "
                                          r"- contact_fraction \(0.25\)\]"):
        load_plan_config(None, ["collect.held_fraction=0.5", "collect.contact_fraction=0.25",
                                "collect.outer_contact_fraction=0.3"])


def test_eval_program_checks_planner_overrides(capsys):
    """Overrides edit a planner config after loading, so the program validates it again: a clear error, no episode
    played with an inconsistent budget."""
    assert ep.main(["--oracle-only", "--seed", "0", "--n", "1", "--horizon", "45", "--stuck-horizon", "45"]) == 1
    assert "planner.stuck_horizon (45) must exceed planner.horizon (45)" in capsys.readouterr().err
    assert ep.main(["--oracle-only", "--seed", "0", "--n", "1", "--horizon", "16", "--replan-every", "20",
                    "--stuck-horizon", "0"]) == 1
    assert "planner.replan_every (20) must be in [1, planner.horizon (16)]" in capsys.readouterr().err
