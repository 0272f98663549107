"""Exploration statistics, the generic trajectory schema and its shards."""

import json

import numpy as np
import pytest
import torch

from jepa.planning import trajectories as T
from jepa.planning.envs import two_rooms as tr
from jepa.planning.oracle import read_state


def test_exploration_statistics_and_door_steering():
    rng = np.random.default_rng(0)
    episodes = [tr.draw_episode(rng) for _ in range(60)]
    steer = np.arange(60) < 30
    positions, actions = T.explore(episodes, 80, rng, steer)
    lengths = np.linalg.norm(actions, axis=-1)
    assert lengths.min() >= 0.2 - 1e-6 and lengths.max() <= 1.8 + 1e-6
    assert abs(lengths.mean() - 1.0) < 0.05
    for e, p in zip(episodes, positions):
        assert all(tr.is_free(q, e.layout) for q in p[::7])
    crossed = np.array([tr.room_of(p[-1, 0], e.layout) == -tr.room_of(p[0, 0], e.layout) for e, p in zip(episodes, positions)])
    assert crossed[:30].mean() > 0.8  # steered runs go through the door
    assert crossed[30:].mean() < 0.5


def test_held_action_runs_hold_each_action_and_obey_the_walls():
    rng = np.random.default_rng(0)
    episodes = [tr.draw_episode(rng) for _ in range(40)]
    positions, actions = T.held_actions(episodes, 25, rng, hold=10, bound=1.75)
    assert actions.shape == (40, 25, 2) and positions.shape == (40, 26, 2)
    assert np.abs(actions).max() <= 1.75
    np.testing.assert_array_equal(actions[:, 1:10], actions[:, :1].repeat(9, axis=1))  # held for 10 steps
    assert (actions[:, 10] != actions[:, 9]).any(axis=1).all()  # then a new draw
    for e, p, a in zip(episodes, positions, actions):  # the environment's own physics, step by step
        env = tr.TwoRoomsEnv()
        env.reset_to(e)
        for t in range(25):
            env.step(a[t])
            np.testing.assert_allclose(env.position.numpy(), p[t + 1], atol=1e-9)
    mixed = T.exploration_batch(np.random.default_rng(3), 40, 20, T.ExplorationConfig(held_fraction=0.5))
    held = [bool((np.abs(t.actions[1:10] - t.actions[:1]) < 1e-7).all()) for t in mixed]
    assert 10 <= sum(held) <= 30  # about half


def test_wall_contact_runs_start_touching_the_wall_lean_into_it_and_stay_stuck_there():
    rng = np.random.default_rng(0)
    episodes = [tr.draw_episode(rng) for _ in range(60)]
    positions, actions = T.wall_contact_actions(episodes, 30, rng, hold=10, bound=1.75)
    wall_x = np.array([e.layout.wall_x for e in episodes], dtype=np.float64)
    gap = np.abs(positions[:, 0, 0] - wall_x) - tr.WALL_HALF_WIDTH
    assert (gap >= 0).all() and (gap <= 1).all()  # each run starts within 1 px of the wall's face
    assert all(tr.room_of(p[0, 0], e.layout) == tr.room_of(e.start[0], e.layout) for e, p in zip(episodes, positions))
    np.testing.assert_array_equal(actions[:, 1:10], actions[:, :1].repeat(9, axis=1))  # held like the planner's
    into = np.sign(wall_x - positions[:, 0, 0])
    assert 0.6 < (np.sign(actions[:, 0, 0]) == into).mean() < 0.9  # three in four lean into the wall
    for e, p, a in zip(episodes, positions, actions):  # the environment's own physics, step by step
        env = tr.TwoRoomsEnv()
        env.reset_to(tr.Episode(e.layout, tuple(p[0]), e.goal))
        for t in range(30):
            env.step(a[t])
            np.testing.assert_allclose(env.position.numpy(), p[t + 1], atol=1e-9)
    touching = (np.abs(np.abs(positions[:, :-1, 0] - wall_x[:, None]) - tr.WALL_HALF_WIDTH) < 1e-6)
    pushing = touching & (np.sign(actions[..., 0]) == np.sign(wall_x[:, None] - positions[:, :-1, 0]))
    outside_door = np.abs(positions[:, :-1, 1] - np.array([e.layout.door_y for e in episodes])[:, None]) > 6
    stuck = np.linalg.norm(np.diff(positions, axis=1), axis=-1) < 1e-6  # the physics backs off 1e-9 of a step
    assert (pushing & outside_door).sum() > 300  # many steps of pushing against the wall...
    assert stuck[pushing & outside_door].all()  # ...each stopped whole: the dot does not slide
    mixed = T.exploration_batch(np.random.default_rng(3), 400, 20,
                                T.ExplorationConfig(held_fraction=0.25, contact_fraction=0.25))
    first = torch.from_numpy(np.stack([t.frames[0] for t in mixed])).double() / 255
    wall = read_state(first)[:, 2].numpy()
    starts = np.array([t.state[0, 0] for t in mixed])
    touching_start = np.abs(np.abs(starts - wall) - tr.WALL_HALF_WIDTH) <= 1.01
    assert 70 <= touching_start.sum() <= 140  # about a quarter (random starts keep 2 px away)


def test_outer_contact_runs_start_on_an_outer_wall_or_inner_corner_lean_into_them_and_stay_stuck():
    rng = np.random.default_rng(1)
    episodes = [tr.draw_episode(rng) for _ in range(200)]
    positions, actions = T.outer_contact_actions(episodes, 30, rng, hold=10, bound=1.75)
    wall_x = np.array([e.layout.wall_x for e in episodes], dtype=np.float64)
    x0, y0 = positions[:, 0, 0], positions[:, 0, 1]
    top, bottom = np.isclose(y0, tr.FREE_LO), np.isclose(y0, tr.FREE_HI)
    left, right = np.isclose(x0, tr.FREE_LO), np.isclose(x0, tr.FREE_HI)
    corner = np.isclose(np.abs(x0 - wall_x), tr.WALL_HALF_WIDTH)
    assert ((top | bottom) ^ (left | right)).all()  # each run starts touching exactly one outer wall
    assert not (corner & (left | right)).any()
    for share, expected in ((top, 0.25), (bottom, 0.25), (left, 0.25), (right, 0.25)):
        assert abs(share.mean() - expected) < 0.08
    assert 0.3 < corner[top | bottom].mean() < 0.7  # half of the top and bottom runs in the inner wall's corner
    np.testing.assert_array_equal(actions[:, 1:10], actions[:, :1].repeat(9, axis=1))
    normal = np.select([top, bottom, left, right], [-actions[:, 0, 1], actions[:, 0, 1], -actions[:, 0, 0],
                                                     actions[:, 0, 0]])
    assert 0.65 < (normal > 0).mean() < 0.85  # three in four lean into their outer wall
    into_inner = np.sign(actions[corner, 0, 0]) == np.sign(wall_x[corner] - x0[corner])
    assert 0.6 < into_inner.mean() < 0.9  # and the corner runs into the inner wall as well
    for i in range(0, 200, 7):  # the environment's own physics, step by step
        env = tr.TwoRoomsEnv()
        env.reset_to(tr.Episode(episodes[i].layout, tuple(positions[i, 0]), episodes[i].goal))
        for t in range(30):
            env.step(actions[i, t])
            np.testing.assert_allclose(env.position.numpy(), positions[i, t + 1], atol=1e-9)
    moved = np.linalg.norm(np.diff(positions, axis=1), axis=-1)
    at_corner = corner[:, None] & np.isclose(np.abs(positions[:, :-1, 0] - wall_x[:, None]), tr.WALL_HALF_WIDTH) & (
        np.isclose(positions[:, :-1, 1], tr.FREE_LO) | np.isclose(positions[:, :-1, 1], tr.FREE_HI))
    pushing_both = at_corner & (np.sign(actions[..., 0]) == np.sign(wall_x[:, None] - positions[:, :-1, 0])) & (
        np.sign(actions[..., 1]) == np.where(positions[:, :-1, 1] < 32, -1, 1))
    assert pushing_both.sum() > 100 and (moved[pushing_both] < 1e-6).all()  # pressed into the corner: no move
    mixed = T.exploration_batch(np.random.default_rng(3), 400, 20, T.ExplorationConfig(
        held_fraction=0.25, contact_fraction=0.25, outer_contact_fraction=0.25))
    starts = np.array([t.state[0] for t in mixed])
    on_outer = np.isclose(starts, tr.FREE_LO).any(axis=1) | np.isclose(starts, tr.FREE_HI).any(axis=1)
    assert 70 <= on_outer.sum() <= 140  # about a quarter (random starts keep 2 px away)


def test_shards_round_trip_and_schema(tmp_path):
    manifest = T.write_exploration(tmp_path / "d", num=5, steps=6, seed=1, shard_size=2)
    assert manifest["format"] == T.FORMAT and manifest["num_samples"] == 5 and len(manifest["shards"]) == 3
    back = list(T.read_trajectories(tmp_path / "d"))
    again = T.exploration_batch(np.random.default_rng([1, 0]), 2, 6)
    assert len(back) == 5 and back[0].frames.shape == (7, 2, 65, 65) and back[0].frames.dtype == np.uint8
    np.testing.assert_array_equal(back[1].frames, again[1].frames)
    np.testing.assert_allclose(back[1].actions, again[1].actions)
    # frames show the dot where the state says it is
    row, col = np.unravel_index(back[0].frames[3, 0].argmax(), (65, 65))
    assert abs(col - back[0].state[3, 0]) <= 0.5 and abs(row - back[0].state[3, 1]) <= 0.5
    with pytest.raises(FileExistsError):
        T.write_exploration(tmp_path / "d", num=1, steps=2, seed=0)
    # a user's own logs: any frame size, action size, no state
    with T.TrajectoryShardWriter(tmp_path / "own") as writer:
        writer.write_trajectory("a", T.Trajectory(np.zeros((4, 3, 8, 8), np.uint8), np.ones((3, 7), np.float32)))
    (own,) = T.read_trajectories(tmp_path / "own")
    assert own.state is None and own.actions.shape == (3, 7)
    (tmp_path / "own" / "manifest.json").write_text(json.dumps({"format": "jepa-video-shards", "shards": []}))
    with pytest.raises(ValueError, match="not trajectories"):
        list(T.read_trajectories(tmp_path / "own"))


def test_trajectory_shapes_are_checked():
    with pytest.raises(ValueError, match="actions"):
        T.Trajectory(np.zeros((4, 2, 5, 5), np.uint8), np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        T.Trajectory(np.zeros((4, 2, 5, 5), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="state"):
        T.Trajectory(np.zeros((4, 2, 5, 5), np.uint8), np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32))
