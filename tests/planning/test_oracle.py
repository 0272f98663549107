"""The oracle world model: state read from the image, rollouts equal to stepping the environment."""

import dataclasses

import pytest
import torch

from eval.planning import oracle_agent, play
from jepa.config import PlannerConfig
from jepa.planning.envs import two_rooms as tr
from jepa.planning.oracle import OracleWorldModel, read_state


def test_read_state_recovers_position_and_layout():
    env = tr.TwoRoomsEnv()
    for seed in range(5):
        env.reset(seed=seed)
        state = read_state(env.observation().unsqueeze(0))[0]
        e = env.episode
        assert state[:2].tolist() == pytest.approx(list(e.start), abs=1e-3)
        assert state[2:].tolist() == [e.layout.wall_x, e.layout.door_y]
    with pytest.raises(ValueError, match="observations"):
        read_state(torch.zeros(1, 2, 64, 64))


def test_rollout_matches_the_environment():
    env = tr.TwoRoomsEnv()
    env.reset(seed=4)
    model = OracleWorldModel()
    start = model.encode(env.observation().unsqueeze(0))
    g = torch.Generator().manual_seed(0)
    actions = torch.randn(3, 25, 2, generator=g) * 2
    pred = model.rollout(start, actions)
    for s in range(3):
        env.reset_to(env.episode)
        for t in range(25):
            env.step(actions[s, t].double())
            assert pred[s, t, :2].tolist() == pytest.approx(env.position.tolist(), abs=2e-3)
    assert torch.equal(model.rollout(start, actions, last_only=True), pred[:, -1:])
    with pytest.raises(ValueError, match="actions"):
        model.rollout(start, torch.zeros(3, 25, 3))


def test_oracle_planner_solves_pinned_episodes_quickly():
    """Two pinned cross-room episodes at a small budget (the full 20 at the recipe budget is a slow test)."""
    p = PlannerConfig(samples=500, iterations=3, elites=50, horizon=60, replan_every=20, repeat=10)
    episodes = tr.load_episodes()[2:4]
    assert all(play(oracle_agent(p), e)["success"] for e in episodes)


def test_looking_further_when_stuck_gets_past_the_wall():
    """Pinned episode 12: the goal is just behind the wall, the door ~40 px down. At horizon 45 every plan
    towards the door ends further from the goal than waiting at the wall, so the agent waits there;
    with ``stuck_horizon`` it notices that no plan beats standing still and plans at 90 through the door."""
    p = PlannerConfig(horizon=45, replan_every=20, repeat=10)
    episode = tr.load_episodes()[11]
    stuck = play(oracle_agent(p), episode)
    assert not stuck["success"] and stuck["final_distance"] > 10 and stuck["escalations"] == 0
    further = play(oracle_agent(dataclasses.replace(p, stuck_horizon=90)), episode)
    assert further["success"] and further["escalations"] >= 1


def test_an_agent_that_is_never_stuck_never_looks_further():
    p = PlannerConfig(horizon=45, replan_every=20, repeat=10)
    episode = tr.load_episodes()[2]
    plain = play(oracle_agent(p), episode)
    further = play(oracle_agent(dataclasses.replace(p, stuck_horizon=90)), episode)
    assert further["escalations"] == 0
    assert further["final_distance"] == plain["final_distance"]


@pytest.mark.slow
def test_oracle_planner_at_recipe_budget_solves_95_percent():
    from jepa.config import load_plan_config
    from pathlib import Path

    p = load_plan_config(Path(__file__).resolve().parents[2] / "configs" / "plan" / "two_rooms.yaml").planner
    results = [play(oracle_agent(p), e)["success"] for e in tr.load_episodes()]
    assert sum(results) >= 19, results


def test_a_stuck_horizon_not_beyond_the_horizon_is_a_clear_error():
    with pytest.raises(ValueError, match=r"stuck_horizon \(90\) must exceed planner.horizon \(90\)"):
        oracle_agent(PlannerConfig(horizon=90, stuck_horizon=90))
