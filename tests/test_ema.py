import torch
from torch import nn

from jepa.ema import ema_update


def test_ema_update_matches_formula():
    torch.manual_seed(0)
    online, target = nn.Linear(3, 4), nn.Linear(3, 4)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    ema_update(target, online, 1.0)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
