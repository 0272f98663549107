"""The downstream example runs end to end: frozen official-layout encoder, trained head, better than chance."""

import importlib.util
from pathlib import Path

import torch

from jepa.models.vit import resolve_size, vit_2d

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "frozen_classifier.py"


def _example():
    spec = importlib.util.spec_from_file_location("frozen_classifier", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frozen_encoder_under_a_small_head(tmp_path, capsys):
    torch.manual_seed(0)
    encoder = vit_2d(resolve_size("vit_tiny", depth=2), img_size=28, patch_size=7, in_chans=3)
    weights = {"module." + k: v for k, v in encoder.state_dict().items()}
    path = tmp_path / "ijepa.pth.tar"
    torch.save({"encoder": weights, "target_encoder": weights, "epoch": 1}, path)
    example = _example()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = example.main(["--encoder", str(path), "--train-size", "500", "--test-size", "300", "--steps", "60",
                           "--batch-size", "32", "--lr", "1e-2"])
    assert result["weights"] == "target_encoder" and result["test_size"] == 300
    assert result["test_accuracy"] > 0.3  # 10 classes: chance is 0.1; 60 steps on random-init features
    assert '"test_accuracy"' in capsys.readouterr().out
    # a training step moves the head and leaves the backbone as loaded
    model = example.FrozenClassifier(example.load_encoder(path, verbose=False), 10).train()
    assert not model.backbone.training and not any(p.requires_grad for p in model.backbone.parameters())
    head_before = model.head[1].weight.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 28, 28)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    assert not torch.equal(model.head[1].weight, head_before)
    for key, value in model.backbone.encoder.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=0, rtol=0)
