"""The reference-step benchmark's plumbing, on a stand-in checkout with the reference's module layout and API.

The real facebookresearch/ijepa cannot be fetched here; the stand-in's modules are tiny models with the same
call signatures, so these tests check what this program does with them (import, masks, step, report), not
the reference's numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.reference_step import (  # noqa: E402
    MODULES, ReferenceStep, checkout_commit, import_reference, main, weight_decay_groups,
)

STAND_IN = {
    "src/models/vision_transformer.py": '''
        import torch
        from torch import nn

        def _gather(x, masks):
            return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks])

        class Encoder(nn.Module):
            def __init__(self, img_size, patch_size):
                super().__init__()
                self.patch_embed = nn.Module()
                self.patch_embed.num_patches = (img_size[0] // patch_size) ** 2
                self.embed_dim, self.patch = 8, patch_size
                self.proj = nn.Conv2d(3, 8, patch_size, patch_size)
                self.norm = nn.LayerNorm(8)

            def forward(self, x, masks=None):
                x = self.norm(self.proj(x).flatten(2).transpose(1, 2))
                return x if masks is None else _gather(x, masks)

        class Predictor(nn.Module):
            def __init__(self, num_patches, embed_dim, predictor_embed_dim, depth, num_heads):
                super().__init__()
                self.pos = nn.Parameter(torch.randn(1, num_patches, embed_dim))
                self.mlp = nn.Sequential(nn.Linear(embed_dim, predictor_embed_dim), nn.GELU(),
                                         nn.Linear(predictor_embed_dim, embed_dim))

            def forward(self, x, masks_x, masks):
                context = x.mean(1, keepdim=True)
                pos = self.pos.expand(len(masks[0]), -1, -1)
                return torch.cat([self.mlp(context + _gather(pos, [m])) for m in masks])

        def vit_tiny(patch_size=16, **kwargs):
            return Encoder(patch_size=patch_size, **kwargs)

        def vit_predictor(**kwargs):
            return Predictor(**kwargs)
    ''',
    "src/masks/multiblock.py": '''
        import logging
        import sys
        from multiprocessing import Value

        import torch

        logging.basicConfig(stream=sys.stdout, level=logging.INFO)  # as the reference does
        logging.getLogger().info("imported")

        class MaskCollator:
            def __init__(self, input_size, patch_size, pred_mask_scale, enc_mask_scale, aspect_ratio, nenc, npred,
                         allow_overlap, min_keep):
                self.n, self.npred = (input_size // patch_size) ** 2, npred
                self._itr_counter = Value("i", -1)

            def __call__(self, batch):
                with self._itr_counter.get_lock():
                    self._itr_counter.value += 1
                    seed = self._itr_counter.value
                g = torch.Generator().manual_seed(seed)
                perms = [torch.randperm(self.n, generator=g) for _ in batch]
                enc = [torch.stack([p[:6] for p in perms])]
                pred = [torch.stack([p[6 + 3 * i:9 + 3 * i] for p in perms]) for i in range(self.npred)]
                return torch.utils.data.default_collate(batch), enc, pred
    ''',
    "src/masks/utils.py": '''
        import torch

        def apply_masks(x, masks):
            return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks])
    ''',
    "src/utils/tensors.py": '''
        import torch

        def repeat_interleave_batch(x, B, repeat):
            N = len(x) // B
            return torch.cat([torch.cat([x[i * B:(i + 1) * B] for _ in range(repeat)]) for i in range(N)])
    ''',
}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ijepa")
    for name, text in STAND_IN.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def test_prints_one_json_report_and_trains(stand_in: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--ijepa", str(stand_in), "--img-size", "32", "--patch-size", "4", "--batch", "4", "--pred-width", "16",
          "--pred-depth", "1", "--pred-heads", "2", "--warmup", "1", "--steps", "3"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines  # the stand-in's stdout logging went elsewhere
    report = json.loads(lines[0])
    assert report["implementation"] == "facebookresearch/ijepa" and report["commit"] is None
    assert report["config"]["batch"] == 4 and report["config"]["pred_heads"] == 2
    assert 0 < report["step_ms_p10"] <= report["step_ms"] <= report["step_ms_p90"]
    assert report["items_per_s"] == pytest.approx(4000 / report["step_ms"], rel=1e-3)
    assert 0 <= report["collate_ms"] < report["step_ms"] and report["peak_mem_bytes"] > 0
    assert len(report["losses"]) == 3 and all(loss > 0 for loss in report["losses"])
    assert report["warmup"] == 1 and report["warmup_s"] > 0


def test_step_updates_online_weights_and_moves_the_target_by_the_ema(stand_in: Path) -> None:
    step = ReferenceStep(import_reference(stand_in), model="vit_tiny", img_size=32, patch_size=4, pred_width=16,
                         pred_depth=1, pred_heads=2, device=torch.device("cpu"), seed=0)
    before_online = step.encoder.proj.weight.detach().clone()
    before_target = step.target.proj.weight.detach().clone()
    torch.testing.assert_close(before_online, before_target)
    step(torch.randn(4, 3, 32, 32), autocast=False)
    online = step.encoder.proj.weight.detach()
    assert not torch.equal(online, before_online)
    torch.testing.assert_close(step.target.proj.weight, 0.996 * before_target + 0.004 * online)
    assert not any(p.requires_grad for p in step.target.parameters())


def test_weight_decay_groups_exclude_biases_and_1d_parameters() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decayed, plain = weight_decay_groups(model, weight_decay=0.04)
    assert decayed["weight_decay"] == 0.04 and plain["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3])]
    assert len(plain["params"]) == 3  # the linear's bias, the norm's weight and bias


def test_a_folder_without_the_reference_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a facebookresearch/ijepa checkout: missing"):
        import_reference(tmp_path)
    with pytest.raises(SystemExit, match="missing " + MODULES[0]):
        main(["--ijepa", str(tmp_path)])


def test_commit_only_for_the_top_of_a_git_work_tree(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "x"], check=True)
    (tmp_path / "sub").mkdir()
    assert len(checkout_commit(tmp_path) or "") == 40
    assert checkout_commit(tmp_path / "sub") is None


@pytest.mark.parametrize("bad, message", [(["--batch", "0"], "--batch must be >= 1"),
                                          (["--pred-heads", "5"], "not divisible"),
                                          (["--model", "vit_mega"], "unknown --model")])
def test_bad_options_are_usage_errors(stand_in: Path, bad: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--ijepa", str(stand_in), *bad])
    assert message in capsys.readouterr().err
