import math

import pytest

from jepa.batching import batch_plan, lr_scale
from jepa.config import ConfigError, load_config


def test_global_batch_is_split_over_ranks_and_accumulation():
    cfg = load_config(None, ["data.batch_size=256", "optim.accum_steps=4"])
    plan = batch_plan(cfg, world_size=8)
    assert (plan.global_batch, plan.micro_batch, plan.world_size, plan.accum_steps) == (256, 8, 8, 4)
    assert plan.micro_batch * plan.world_size * plan.accum_steps == plan.global_batch


def test_indivisible_global_batch_is_a_clear_error():
    cfg = load_config(None, ["data.batch_size=100", "optim.accum_steps=2"])
    with pytest.raises(ConfigError, match=r"100 .* 4 process\(es\) x optim.accum_steps 2 = 8"):
        batch_plan(cfg, world_size=4)


@pytest.mark.parametrize("rule, factor", [("none", 1.0), ("linear", 8.0), ("sqrt", math.sqrt(8.0))])
def test_lr_scaling_rules(rule, factor):
    cfg = load_config(None, [f"optim.lr_scaling={rule}", "optim.reference_batch=256"])
    assert lr_scale(cfg.optim, 2048) == pytest.approx(factor)


def test_bad_scaling_settings_are_rejected():
    with pytest.raises(ConfigError, match="not one of"):
        load_config(None, ["optim.lr_scaling=quadratic"])
    with pytest.raises(ConfigError, match="reference_batch"):
        load_config(None, ["optim.reference_batch=0"])
