import json

import pytest

from eval.attentive_probe import main
from jepa.config import load_config
from jepa.train import train
from tests.eval.test_linear_probe import TINY


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    run_dir = tmp_path_factory.mktemp("run")
    train(load_config(None, [*TINY, f"run_dir={run_dir}"]))
    return str(run_dir / "checkpoint.pt")


@pytest.mark.parametrize(("extra", "protocol", "encoder"), [
    ([], "attentive (V-JEPA)", "target"),
    (["--depth", "1", "--random-init"], "attentive + 1 blocks (V-JEPA 2)", "random-init"),
])
def test_probes_a_checkpoint_and_prints_one_json_line_with_test_accuracy_last(
        checkpoint, capsys, extra, protocol, encoder) -> None:
    capsys.readouterr()
    assert main(["--checkpoint", checkpoint, "--data", "fashion-mnist", "--train-size", "600",
                 "--epochs", "2", *extra]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert list(record)[-1] == "test_accuracy" and 0.0 <= record["test_accuracy"] <= 1.0
    assert record["protocol"] == protocol and record["encoder"] == encoder
    assert record["budget"]["epochs"] == 2 and record["budget"]["train_size"] == 600
    assert len(record["grid"]) == 4


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(tmp_path / "nope.pt")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
