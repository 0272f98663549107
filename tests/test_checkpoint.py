import collections
import pickle

import pytest
import torch
from torch import nn

from jepa.checkpoint import CheckpointError, load_checkpoint, load_matching, save_checkpoint


def test_round_trip(tmp_path):
    state = {"step": 3, "encoder": {"w": torch.arange(4.0)}, "config": {"a": [1, 2]}}
    save_checkpoint(state, tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["step"] == 3 and loaded["config"] == {"a": [1, 2]}
    torch.testing.assert_close(loaded["encoder"]["w"], torch.arange(4.0))


def test_kill_mid_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def dying_save(obj, f):
        f.write(b"partial bytes of a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


class Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_arbitrary_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"encoder": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="arbitrary unpickling"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps(collections.Counter("abc")))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_load_matching_names_the_problem():
    model = nn.Linear(3, 4)
    with pytest.raises(CheckpointError, match=r"shape mismatches \['weight: checkpoint \(5, 3\)"):
        load_matching(model, {"weight": torch.zeros(5, 3), "bias": torch.zeros(4)}, "ckpt")
    with pytest.raises(CheckpointError, match=r"missing keys \['bias'\].*unexpected keys \['extra'\]"):
        load_matching(model, {"weight": torch.zeros(4, 3), "extra": torch.zeros(1)}, "ckpt")
