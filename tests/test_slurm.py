"""Scaling out: fork / spawn DDP is refused inside a SLURM job, where Lightning reads the ranks
from SLURM and every forked worker would be rank 0 (no training: the check alone)."""

from __future__ import annotations

import pytest

from kdseg.errors import ConfigError
from kdseg.lit.train import _check_trainer, check_slurm_strategy, uses_cuda

TORCHELASTIC = "TORCHELASTIC_RUN_ID"  # torch.distributed.is_torchelastic_launched()


@pytest.fixture
def slurm_job(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment of one task of a batch job, as submitit's srun sets it."""
    monkeypatch.delenv(TORCHELASTIC, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    return monkeypatch


@pytest.mark.parametrize(
    "strategy", ["ddp_fork", "ddp_spawn", "ddp_fork_find_unused_parameters_true"]
)
@pytest.mark.parametrize("devices", [2, "2", [0, 1], "0,1"])
def test_fork_ddp_over_devices_is_refused_in_a_slurm_job(slurm_job, strategy, devices) -> None:
    trainer = {"accelerator": "gpu", "devices": devices, "strategy": strategy}
    with pytest.raises(ConfigError) as err:
        check_slurm_strategy(trainer)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"trainer.strategy={strategy}:")
    assert "trainer=ddp" in message and "tasks_per_node" in message


def test_the_trainer_check_refuses_it_too(slurm_job) -> None:
    with pytest.raises(ConfigError, match="trainer.strategy=ddp_fork"):
        _check_trainer({"accelerator": "cpu", "devices": 2, "strategy": "ddp_fork"})


@pytest.mark.parametrize(
    "trainer",
    [
        {"devices": 2, "strategy": "ddp"},  # one SLURM task per device: the way that works
        {"devices": 4, "num_nodes": 2, "strategy": "ddp"},
        {"devices": 1, "strategy": "ddp_fork"},  # one process: no ranks to mix up
        {"devices": 1, "strategy": "auto"},
        {"accelerator": "cpu", "devices": "auto", "strategy": "ddp_spawn"},  # one CPU device
    ],
)
def test_what_works_in_a_slurm_job_is_taken(slurm_job, trainer) -> None:
    check_slurm_strategy(trainer)


def test_fork_ddp_is_taken_outside_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", TORCHELASTIC):
        monkeypatch.delenv(name, raising=False)
    check_slurm_strategy({"devices": 2, "strategy": "ddp_fork"})


@pytest.mark.parametrize("name", ["bash", "interactive"])
def test_fork_ddp_is_taken_in_an_interactive_slurm_session(slurm_job, name) -> None:
    # Lightning does not treat these as a SLURM environment (SLURMEnvironment.detect)
    slurm_job.setenv("SLURM_JOB_NAME", name)
    check_slurm_strategy({"devices": 2, "strategy": "ddp_fork"})


def test_fork_ddp_is_taken_under_torchelastic_in_a_slurm_job(slurm_job) -> None:
    # torchrun inside an allocation: Lightning picks TorchElasticEnvironment before SLURM's
    slurm_job.setenv(TORCHELASTIC, "none")
    check_slurm_strategy({"devices": 2, "strategy": "ddp_fork"})


def test_a_cpu_run_does_not_ask_for_cuda() -> None:
    assert uses_cuda({"accelerator": "cpu"}) is False
