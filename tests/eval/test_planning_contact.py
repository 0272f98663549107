"""The position probe and the wall-contact diagnostics against models whose answers are known."""

import sys
from pathlib import Path

import math

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eval.planning import CONTACTS, contact_error, contact_errors, inner_wall_states, position_probe  # noqa: E402
from jepa.planning.oracle import read_state  # noqa: E402

FRAMESKIP = 5


class Predictor:
    """Features are the dot's (x, y) as one token; ``slide`` adds every action, walls or not; else nothing moves."""

    def __init__(self, slide: bool) -> None:
        self.slide = slide

    def rollout(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        moves = actions.view(*actions.shape[:2], FRAMESKIP, 2).sum(2) * float(self.slide)  # [B, H, 2]
        return context[:, -1:] + moves.cumsum(1).unsqueeze(2)


class Model:
    def __init__(self, slide: bool) -> None:
        self.predictors = [Predictor(slide)]

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return read_state(obs)[:, None, :2].float()


def test_probe_reads_positions_back_from_features_that_hold_them():
    probe = position_probe(Model(slide=False), num=500)
    xy = torch.tensor([[[10.0, 20.0]], [[50.5, 7.25]]])
    torch.testing.assert_close(probe(xy), xy[:, 0].double(), atol=0.05, rtol=0)


def test_a_model_with_the_true_contact_physics_imagines_no_move_at_any_wall():
    """The states touch their walls and the pushes point into them: the environment moves nothing."""
    model = Model(slide=False)
    results = contact_errors(model, position_probe(model, num=500), FRAMESKIP, 1.5, num=400)
    assert set(results) == set(CONTACTS) == {"wall_contact", "corner_contact", "outer_contact"}
    for result in results.values():
        assert max(result["imagined_move_px"]) < 0.1 and result["probe_floor_px"] < 0.1
        assert result["imagined_through_wall"] == [0.0, 0.0, 0.0]


def test_a_model_that_slides_is_caught_at_the_rate_the_geometry_gives():
    """Touching the wall 1.5 px from its centre line, pushed with |ax| uniform in [0, b] for 5k steps, the
    slider crosses the centre line when 5k |ax| > 1.5: with probability 1 - 1.5 / (5 k b)."""
    model = Model(slide=True)
    rng = np.random.default_rng(0)
    result = contact_error(model, position_probe(model, num=500), FRAMESKIP, 1.5, inner_wall_states(rng, 3000), rng)
    expected = [1 - 1.5 / (FRAMESKIP * k * 1.5) for k in (1, 2, 3)]
    assert result["imagined_through_wall"] == pytest.approx(expected, abs=0.03)
    move = result["imagined_move_px"]
    assert move[1] == pytest.approx(2 * move[0], rel=0.01) and move[2] == pytest.approx(3 * move[0], rel=0.01)


def test_a_slider_imagines_the_mean_push_length_at_every_kind_of_contact():
    """A push is uniform in the square [-b, b]^2 up to the signs that point it into the walls, so its length
    has the square's mean distance from its centre, b (sqrt 2 + asinh 1) / 3; held 5k steps, 5k times that.
    In a corner the x push crosses the inner wall as often as at the wall alone."""
    model = Model(slide=True)
    results = contact_errors(model, position_probe(model, num=500), FRAMESKIP, 1.5, num=3000)
    mean_push = 1.5 * (math.sqrt(2) + math.asinh(1)) / 3
    for result in results.values():
        assert result["imagined_move_px"] == pytest.approx([FRAMESKIP * k * mean_push for k in (1, 2, 3)], rel=0.03)
    crossing = [1 - 1.5 / (FRAMESKIP * k * 1.5) for k in (1, 2, 3)]
    assert results["corner_contact"]["imagined_through_wall"] == pytest.approx(crossing, abs=0.03)
    assert results["outer_contact"]["imagined_through_wall"][0] < 0.05  # outer walls are far from the inner one
