import pytest
import torch

from jepa.distributed import BatchGather, DistributedEnvError, StopVote, check_distributed_env

GOOD = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}


def test_no_variables_is_one_process():
    assert check_distributed_env({}) is None
    assert check_distributed_env({"SLURM_NTASKS": "1"}) is None


def test_complete_environment_is_read():
    env = check_distributed_env(GOOD)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port) == (1, 4, 1, "node0", 29500)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"MASTER_ADDR": None}, "MASTER_ADDR missing"),
        ({"RANK": None, "LOCAL_RANK": None}, "RANK, LOCAL_RANK missing"),
        ({"RANK": "4"}, "RANK=4 is outside WORLD_SIZE=4"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
        ({"LOCAL_RANK": "2"}, "LOCAL_RANK=2 is outside LOCAL_WORLD_SIZE=2"),
        ({"LOCAL_WORLD_SIZE": "3"}, "not a multiple of LOCAL_WORLD_SIZE=3"),
        ({"MASTER_PORT": "70000"}, "not a port number"),
    ],
)
def test_missing_or_inconsistent_variables_are_named(change, message):
    env = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(DistributedEnvError, match=message):
        check_distributed_env(env)


def test_multi_task_slurm_step_without_torch_variables_refuses_to_train_alone():
    with pytest.raises(DistributedEnvError, match="one of 8 SLURM tasks"):
        check_distributed_env({"SLURM_NTASKS": "8"})


def test_train_refuses_a_launch_environment_it_cannot_honour(monkeypatch, tmp_path):
    from jepa.config import load_config
    from jepa.train import train

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedEnvError, match="LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing"):
        train(load_config(None, [f"run_dir={tmp_path}", "train.steps=1", "probe.enabled=false"]))


def test_single_process_vote_and_gather_are_local():
    vote = StopVote(None)
    assert vote(0) == 0 and vote(15) == 15
    vote.close()
    z = torch.randn(3, 4)
    assert BatchGather.for_world(1)(z) is z


def test_replica_check_names_the_module_that_diverged():
    from jepa.distributed import ReplicaMismatch, check_replicas_agree, fingerprint, mismatched

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    same = torch.stack([torch.stack([fingerprint(a)]), torch.stack([fingerprint(b)])])
    assert mismatched(same, ["encoder"]) == []
    with torch.no_grad():
        b.bias[0] += 1e-4
    other = torch.stack([torch.stack([fingerprint(a)]), torch.stack([fingerprint(b)])])
    assert mismatched(other, ["target_encoder"]) == ["target_encoder"]
    with pytest.raises(ReplicaMismatch, match="disagree on target_encoder"):
        check_replicas_agree({"target_encoder": a}, lambda t: torch.cat([t, t + 1e-3]))


def _gather_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from jepa.losses import covariance_loss, variance_loss

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        full = torch.randn(5, 4)
        mine = (full[:3] if rank == 0 else full[3:]).clone().requires_grad_(True)  # 3 rows vs 2: unequal
        gathered = BatchGather.for_world(world)(mine)
        loss = variance_loss(gathered) + covariance_loss(gathered)
        loss.backward()
        torch.save({"gathered": gathered.detach(), "grad": mine.grad}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_batch_gather_joins_unequal_rank_batches_with_gradients(tmp_path):
    from torch.multiprocessing import start_processes

    from jepa.losses import covariance_loss, variance_loss

    out = str(tmp_path / "result")
    start_processes(_gather_worker, args=(2, f"file://{tmp_path / 'store'}", out), nprocs=2, start_method="fork")
    torch.manual_seed(0)
    full = torch.randn(5, 4).requires_grad_(True)
    (variance_loss(full) + covariance_loss(full)).backward()
    results = [torch.load(f"{out}.{r}") for r in range(2)]
    for r in results:
        torch.testing.assert_close(r["gathered"], full.detach())
    # every rank's copy of the loss sends gradient to every rank's rows (DDP then averages over ranks)
    torch.testing.assert_close(torch.cat([r["grad"] for r in results]), 2 * full.grad)


def test_cli_reports_a_bad_launch_environment(monkeypatch, capsys):
    from jepa.cli import main

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert main(["train", "train.steps=1", "probe.enabled=false"]) == 1
    assert "RANK=3 is outside WORLD_SIZE=2" in capsys.readouterr().err
