"""Two-rooms geometry, physics, pinned episodes and the sanity floor/ceiling policies."""

import json
import math

import numpy as np
import pytest
import torch

from jepa.planning.envs import two_rooms as tr
from jepa.planning.envs.two_rooms import Episode, EpisodeError, Layout, TwoRoomsEnv, door_policy, move


def _move1(pos, action, layout=Layout(30, 30)):
    out = move(torch.tensor([pos], dtype=torch.float64), torch.tensor([action], dtype=torch.float64),
               torch.tensor([float(layout.wall_x)]).double(), torch.tensor([float(layout.door_y)]).double())
    return out[0].tolist()


def test_free_move_and_norm_clip():
    assert _move1((10.0, 10.0), (1.0, -0.5)) == pytest.approx([11.0, 9.5], abs=1e-6)
    x, y = _move1((10.0, 20.0), (30.0, 40.0))  # norm 50 -> 2.45 in the same direction
    assert (x - 10.0, y - 20.0) == pytest.approx((2.45 * 0.6, 2.45 * 0.8), abs=1e-6)


def test_moves_stop_at_walls():
    layout = Layout(30, 30)
    # into the inner wall far from the door: stops on its left face x = 28.5, y moved pro rata
    x, y = _move1((27.5, 10.0), (2.0, 1.0), layout)
    assert x == pytest.approx(28.5, abs=1e-6) and y == pytest.approx(10.5, abs=1e-6)
    # through the door (rows 26..34): passes
    assert _move1((28.0, 30.0), (2.4, 0.0), layout) == pytest.approx([30.4, 30.0], abs=1e-6)
    # outer walls: the dot's centre stays in [4.5, 59.5]
    assert _move1((5.0, 58.0), (-2.0, 2.0), layout) == pytest.approx([4.5, 58.5], abs=1e-6)
    # leaving a wall face is free
    assert _move1((28.5, 10.0), (-2.0, 0.0), layout) == pytest.approx([26.5, 10.0], abs=1e-6)


def test_random_moves_never_enter_walls_and_batch_matches_single():
    g = torch.Generator().manual_seed(0)
    layout = Layout(25, 40)
    pos = torch.tensor([[10.0, 10.0]], dtype=torch.float64).repeat(64, 1)
    wall_x, door_y = torch.tensor([25.0]).double(), torch.tensor([40.0]).double()
    crossed = torch.zeros(64, dtype=torch.bool)
    for _ in range(300):
        action = torch.randn(64, 2, generator=g, dtype=torch.float64) * 3
        new = move(pos, action, wall_x, door_y)
        assert torch.allclose(new[5:6], move(pos[5:6], action[5:6], wall_x, door_y))
        pos = new
        assert all(tr.is_free(p.tolist(), layout) for p in pos)
        crossed |= pos[:, 0] > 26.5
    assert crossed.any(), "random walks should sometimes find the door"


def test_observation_channels_and_rgb():
    env = TwoRoomsEnv()
    obs = env.reset(layout=Layout(30, 20), start=(12.0, 40.0), goal=(50.0, 50.0))
    assert obs.shape == (2, 65, 65)
    dot, wall = obs
    assert dot[40, 12] == pytest.approx(1.0) and dot[40, 13] == pytest.approx(math.exp(-1 / (2 * 1.3**2)), rel=1e-5)
    assert wall[0, 0] == 1 and wall[4, 30] == 1 and wall[5, 5] == 0 and wall[60, 30] == 1
    assert wall[10, 29:32].tolist() == [1, 1, 1] and wall[10, 28] == 0 and wall[10, 32] == 0
    assert wall[16:25, 30].tolist() == [0] * 9 and wall[15, 30] == 1 and wall[25, 30] == 1  # door rows 16..24
    rgb = env.render(scale=2)
    assert rgb.shape == (130, 130, 3) and rgb.dtype == np.uint8
    assert rgb[80, 24, 0] == 255  # the dot (row 40, col 12) is red


def test_gif(tmp_path):
    env = TwoRoomsEnv()
    env.reset(seed=3)
    frames = [env.render()]
    for _ in range(3):
        env.step((1.0, 0.0))
        frames.append(env.render())
    path = tr.save_gif(frames, tmp_path / "ep.gif")
    from PIL import Image

    assert Image.open(path).n_frames == 4


def test_reset_seed_draws_opposite_rooms_deterministically():
    env = TwoRoomsEnv()
    for seed in range(30):
        env.reset(seed=seed)
        e = env.episode
        assert tr.WALL_X_RANGE[0] <= e.layout.wall_x <= tr.WALL_X_RANGE[1]
        assert tr.DOOR_Y_RANGE[0] <= e.layout.door_y <= tr.DOOR_Y_RANGE[1]
        assert tr.room_of(e.start[0], e.layout) * tr.room_of(e.goal[0], e.layout) == -1
    env.reset(seed=7)
    first = env.episode
    env.reset(seed=7)
    assert env.episode == first == tr.episodes_from_seed(7, 1)[0]


def test_bad_input_is_refused():
    env = TwoRoomsEnv()
    with pytest.raises(EpisodeError, match="inside a wall"):
        env.reset(layout=Layout(30, 30), start=(30.0, 10.0), goal=(50.0, 50.0))
    with pytest.raises(EpisodeError, match="inside a wall"):
        env.reset(layout=Layout(30, 30), start=(10.0, 10.0), goal=(2.0, 50.0))
    with pytest.raises(EpisodeError, match="wall_x"):
        Layout(50, 30)
    with pytest.raises(EpisodeError, match="all of layout"):
        env.reset(layout=Layout(30, 30), start=(10.0, 10.0))
    with pytest.raises(RuntimeError, match="reset"):
        env.step((0.0, 0.0))
    env.reset(seed=0)
    with pytest.raises(EpisodeError, match="shape"):
        env.step((1.0, 0.0, 0.0))
    with pytest.raises(EpisodeError, match="finite"):
        env.step((float("nan"), 0.0))


def test_episode_files(tmp_path):
    episodes = tr.load_episodes()
    assert len(episodes) == 20
    path = tmp_path / "eps.json"
    tr.save_episodes(episodes[:3], path)
    assert tr.load_episodes(path) == episodes[:3]
    bad = episodes[0].to_json() | {"start": [41.0, 30.0], "wall_x": 41, "door_y": 10}
    path.write_text(json.dumps([bad]))
    with pytest.raises(EpisodeError, match="episode 0: start"):
        tr.load_episodes(path)
    path.write_text(json.dumps([{"wall_x": 30}]))
    with pytest.raises(EpisodeError, match="exactly"):
        tr.load_episodes(path)


def _run(env: TwoRoomsEnv, episode: Episode, policy) -> bool:
    env.reset_to(episode)
    while not env.done:
        env.step(policy(env))
    return env.success


@pytest.mark.parametrize("max_norm", [tr.MAX_NORM, 1.75, 1.0])
def test_scripted_door_policy_solves_every_pinned_episode(max_norm):
    """Also with steps shorter than the corridor from entry to exit (7 px), where it used to turn back."""
    env = TwoRoomsEnv()
    results = [_run(env, e, lambda env: door_policy(env.position, env.goal, env.episode.layout, max_norm))
               for e in tr.load_episodes()]
    assert all(results)


def test_random_actions_almost_never_succeed():
    env = TwoRoomsEnv()
    g = torch.Generator().manual_seed(0)
    results = [_run(env, e, lambda env: torch.randn(2, generator=g, dtype=torch.float64) * 2.45) for e in tr.load_episodes()]
    assert sum(results) <= 1
