"""The position probe and the wall-contact diagnostic against models whose answers are known."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from eval.planning import contact_error, position_probe  # noqa: E402
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


def test_a_model_with_the_true_contact_physics_imagines_no_move():
    model = Model(slide=False)
    result = contact_error(model, position_probe(model, num=500), FRAMESKIP, 1.5, num=400)
    assert max(result["imagined_move_px"]) < 0.1 and result["probe_floor_px"] < 0.1
    assert result["imagined_through_wall"] == [0.0, 0.0, 0.0]


def test_a_model_that_slides_is_caught_at_the_rate_the_geometry_gives():
    """Touching the wall 1.5 px from its centre line, pushed with |ax| uniform in [0, b] for 5k steps, the
    slider crosses the centre line when 5k |ax| > 1.5: with probability 1 - 1.5 / (5 k b)."""
    model = Model(slide=True)
    result = contact_error(model, position_probe(model, num=500), FRAMESKIP, 1.5, num=3000)
    expected = [1 - 1.5 / (FRAMESKIP * k * 1.5) for k in (1, 2, 3)]
    assert result["imagined_through_wall"] == pytest.approx(expected, abs=0.03)
    move = result["imagined_move_px"]
    assert move[1] == pytest.approx(2 * move[0], rel=0.01) and move[2] == pytest.approx(3 * move[0], rel=0.01)
