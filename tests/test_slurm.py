"""Scaling out: fork / spawn DDP is refused inside a SLURM job, where Lightning reads the ranks
from SLURM and every forked worker would be rank 0, and so is a job whose tasks do not match the
trainer's devices and nodes; Lightning's subprocess DDP launcher is refused in a local multirun;
each process of an external launch writes its own log file (no training: the checks alone)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TINY_DATA, kdseg_here

from kdseg.errors import ConfigError
from kdseg.lit.train import (
    _check_trainer,
    check_local_multirun,
    check_slurm_strategy,
    uses_cuda,
)

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
    monkeypatch.delenv("SLURM_NNODES", raising=False)
    monkeypatch.delenv("SLURM_JOB_NUM_NODES", raising=False)
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
    "trainer,tasks,nodes",
    [
        ({"devices": 2, "strategy": "ddp"}, "2", "1"),  # one SLURM task per device: what works
        ({"devices": 4, "num_nodes": 2, "strategy": "ddp"}, "4", "2"),
        ({"devices": 2, "strategy": "auto"}, "2", None),  # Lightning picks ddp
        ({"devices": 1, "strategy": "ddp_fork"}, "1", "1"),  # one process: no ranks to mix up
        ({"devices": 1, "strategy": "auto"}, "1", "1"),
        ({"accelerator": "cpu", "devices": "auto", "strategy": "ddp_spawn"}, "1", None),
        ({"devices": 2, "strategy": "ddp"}, None, None),  # no --ntasks-per-node: not checked
    ],
)
def test_what_works_in_a_slurm_job_is_taken(slurm_job, trainer, tasks, nodes) -> None:
    for name, value in (("SLURM_NTASKS_PER_NODE", tasks), ("SLURM_NNODES", nodes)):
        if value is None:
            slurm_job.delenv(name, raising=False)
        else:
            slurm_job.setenv(name, value)
    check_slurm_strategy(trainer)


@pytest.mark.parametrize(
    "trainer,env,named",
    [
        # trainer=ddp without hydra.launcher.tasks_per_node: Lightning stopped with "You set
        # devices=2 in Lightning, but ... --ntasks-per-node=1" (exit 1) after preparing the data
        ({"devices": 2, "strategy": "ddp"}, {}, ("trainer.devices=2", "tasks_per_node=2")),
        ({"devices": "0,1", "strategy": "auto"}, {}, ("trainer.devices=0,1", "tasks_per_node=2")),
        ({"devices": 1, "strategy": "ddp"}, {"SLURM_NTASKS_PER_NODE": "2"}, ("devices=1",)),
        (
            {"devices": 1, "num_nodes": 2, "strategy": "ddp"},
            {"SLURM_NNODES": "1"},
            ("trainer.num_nodes=2", "hydra.launcher.nodes=2", "SLURM_NNODES=1"),
        ),
        (
            {"devices": 1, "strategy": "ddp"},
            {"SLURM_JOB_NUM_NODES": "2"},
            ("trainer.num_nodes=1", "hydra.launcher.nodes=1", "SLURM_JOB_NUM_NODES=2"),
        ),
    ],
)
def test_a_slurm_job_of_other_tasks_than_the_trainer_is_refused(
    slurm_job, trainer, env, named
) -> None:
    for name, value in env.items():
        slurm_job.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        _check_trainer({"accelerator": "gpu", **trainer})
    message = str(err.value)
    assert "\n" not in message and "SLURM" in message
    for words in named:
        assert words in message, message


def test_devices_auto_without_a_gpu_is_one_task(slurm_job) -> None:
    """``devices=auto`` off the CPU accelerator counts the GPUs NVML sees; with none Lightning
    falls back to one CPU process, which one task per node runs (not a count of 0 refused)."""
    import lightning_fabric.accelerators.cuda as cuda

    slurm_job.setattr(cuda, "num_cuda_devices", lambda: 0)
    check_slurm_strategy({"accelerator": "auto", "devices": "auto", "strategy": "ddp"})
    slurm_job.setattr(cuda, "num_cuda_devices", lambda: 4)
    with pytest.raises(ConfigError, match="hydra.launcher.tasks_per_node=4"):
        check_slurm_strategy({"accelerator": "gpu", "devices": "auto", "strategy": "ddp"})


def test_a_slurm_task_mismatch_is_one_line_before_the_data_is_prepared(
    slurm_job, phantom_lits: Path, tmp_path: Path
) -> None:
    """The reviewer's repro: the task of a job of one task per node, trainer=ddp. Refused in
    one line (exit 2) before the cache is prepared; before, the cache was prepared and
    Lightning's ValueError ended the run as an internal error (exit 1)."""
    for name, value in (("SLURM_LOCALID", "0"), ("SLURM_NODEID", "0"), ("SLURM_NNODES", "1")):
        slurm_job.setenv(name, value)
    slurm_job.setenv("SLURM_NODELIST", "localhost")
    cache = tmp_path / "cache"
    done = kdseg_here(
        "train",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        f"data.cache_root={cache}",
        "model=enet",
        "model.width=0.25",
        "trainer=ddp",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "trainer.devices=2" in lines[0] and "hydra.launcher.tasks_per_node=2" in lines[0]
    assert not cache.exists()  # nothing prepared


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


def _hydra_job(monkeypatch: pytest.MonkeyPatch, mode: str, job: str = "train") -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = SimpleNamespace(mode=RunMode[mode], job=SimpleNamespace(name=job))
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hydra_cfg))


@pytest.fixture
def local_machine(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No external launcher: no SLURM job, no torchrun, not a worker of Lightning's."""
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "SLURM_PROCID", TORCHELASTIC, "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name in ("SLURM_NTASKS_PER_NODE", "SLURM_NNODES", "SLURM_JOB_NUM_NODES"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "trainer",
    [
        {"accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        {"accelerator": "gpu", "devices": 2, "strategy": "auto"},
        {"accelerator": "gpu", "devices": [0, 1], "strategy": "ddp_find_unused_parameters_true"},
    ],
)
def test_subprocess_ddp_is_refused_in_a_local_multirun(local_machine, trainer) -> None:
    """``kdseg-train -m seed=1,2 trainer=ddp``: Lightning starts each worker by rerunning the
    command line, ``-m`` and the sweep's lists kept, so each worker would run the sweep again.
    Before, nothing refused it (the trainer config only said so in a comment)."""
    _hydra_job(local_machine, "MULTIRUN")
    with pytest.raises(ConfigError) as err:
        _check_trainer(trainer)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"trainer.strategy={trainer['strategy']}:")
    assert "multirun" in message and "trainer=ddp_fork" in message


def test_a_local_multirun_of_subprocess_ddp_is_one_line_before_any_worker(
    local_machine, phantom_lits: Path, tmp_path: Path
) -> None:
    """The reviewer's repro (``kdseg-train -m seed=1,2 trainer=ddp``, Lightning's Popen
    stubbed): refused in one line, exit 2, before a worker is started or the data prepared,
    and the sweep's new folder is gone."""
    import lightning_fabric.strategies.launchers.subprocess_script as launcher

    def no_worker(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a DDP worker was started: {args}")

    local_machine.setattr(launcher.subprocess, "Popen", no_worker)
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    done = kdseg_here(
        "train",
        "-m",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        f"data.cache_root={cache}",
        "model=enet",
        "model.width=0.25",
        "seed=1,2",
        "trainer=ddp",
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "trainer.strategy=ddp:" in errors[0] and "trainer=ddp_fork" in errors[0]
    assert not cache.exists() and not sweep.exists()


@pytest.mark.parametrize(
    "trainer,mode,env",
    [
        ({"devices": 2, "strategy": "ddp"}, "RUN", {}),  # one run: the workers rerun just it
        ({"devices": 2, "strategy": "ddp_fork"}, "MULTIRUN", {}),  # forked: nothing reruns
        ({"devices": 1, "strategy": "ddp"}, "MULTIRUN", {}),  # one process: no workers
        ({"devices": 2, "strategy": "ddp"}, "MULTIRUN", {TORCHELASTIC: "none"}),  # torchrun
        ({"devices": 2, "strategy": "ddp"}, "MULTIRUN", {"LOCAL_RANK": "1"}),  # a worker
        (  # Hydra's submitit launcher: one SLURM task per device, Lightning starts none
            {"devices": 2, "strategy": "ddp"},
            "MULTIRUN",
            {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NAME": "train"},
        ),
    ],
)
def test_what_a_multirun_can_launch_is_taken(local_machine, trainer, mode, env) -> None:
    for name, value in env.items():
        local_machine.setenv(name, value)
    local_machine.setenv("SLURM_JOB_ID", "1234")
    _hydra_job(local_machine, mode)
    check_local_multirun({"accelerator": "cpu", **trainer})
    _check_trainer({"accelerator": "cpu", **trainer})


@pytest.mark.parametrize(
    "env,job,expected",
    [
        ({}, "train", "train.log"),
        ({"RANK": "0"}, "train", "train.log"),
        ({"RANK": "3"}, "train", "train_process_3.log"),  # torchrun
        ({"SLURM_PROCID": "1"}, "distill", "distill_process_1.log"),  # srun's tasks
        ({"RANK": "2", "SLURM_PROCID": "0"}, "train", "train_process_2.log"),  # torchrun in SLURM
        # a worker of Lightning's subprocess launcher: the job name is Lightning's own
        ({"LOCAL_RANK": "1"}, "train_ddp_process_1", "train_ddp_process_1.log"),
        # Lightning's launcher started on each node by hand: no global rank, the node's
        ({"NODE_RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}, "train", "train_node_1.log"),
        ({"GROUP_RANK": "2", "WORLD_SIZE": "6"}, "distill", "distill_node_2.log"),
        ({"NODE_RANK": "0", "WORLD_SIZE": "4"}, "train", "train.log"),  # node 0's first
        # a worker that Lightning's launcher started on node 1 keeps its own job's name
        (
            {"NODE_RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "4"},
            "train_ddp_process_1",
            "train_ddp_process_1.log",
        ),
        ({"NODE_RANK": "1"}, "train", "train.log"),  # a NODE_RANK left over, one process
        ({"NODE_RANK": "1", "WORLD_SIZE": "x"}, "train", "train.log"),  # no number: one
        ({"RANK": "5", "NODE_RANK": "1", "WORLD_SIZE": "8"}, "train", "train_process_5.log"),
        ({"RANK": "0", "NODE_RANK": "1", "WORLD_SIZE": "8"}, "train", "train.log"),  # rank 0
    ],
)
def test_each_process_of_an_external_launch_logs_to_its_own_file(
    local_machine, tmp_path: Path, env, job, expected
) -> None:
    """Under torchrun or SLURM every process appended to the same ``train.log``, their lines
    interleaved; a process other than the first now writes ``<job>_process_<rank>.log``, as
    a worker of Lightning's own launcher writes ``train_ddp_process_<n>.log``. The first
    process of node ``n`` > 0 of Lightning's launcher started on each node by hand (NODE_RANK,
    no RANK) wrote ``train.log`` too, into the run dir the nodes share: now
    ``<job>_node_<n>.log``."""
    import kdseg.cli
    from kdseg.errors import GLOBAL_RANK_VARIABLES, NODE_RANK_VARIABLES

    for name in (*GLOBAL_RANK_VARIABLES, *NODE_RANK_VARIABLES, "WORLD_SIZE"):
        local_machine.delenv(name, raising=False)
    for name, value in env.items():
        local_machine.setenv(name, value)
    _hydra_job(local_machine, "RUN", job)
    root = logging.getLogger()
    try:
        kdseg.cli.open_run_log(tmp_path)
        logging.getLogger("kdseg.test").warning("a line of this process")
    finally:
        for handler in [h for h in root.handlers if isinstance(h, kdseg.cli._RunLog)]:
            root.removeHandler(handler)
            handler.close()
    assert [p.name for p in tmp_path.iterdir()] == [expected]
    assert "a line of this process" in (tmp_path / expected).read_text()


def test_a_refused_run_removes_its_folder_with_the_logs_of_each_of_its_processes(
    local_machine, tmp_path: Path
) -> None:
    """A run under an external launcher refused before it trains: each process wrote its own
    log (``train_process_<rank>.log``, ``train_node_<n>.log``, Lightning's
    ``train_ddp_process_<n>.log``) into the new run folder, and only ``train.log`` counted as
    the run's own, so the folder stayed. Now the run's logs all go with it, and a file of any
    other name still keeps it all."""
    import time

    from hydra.core.hydra_config import HydraConfig

    from kdseg.cli import run_log_name, rundir

    logs = ["train.log", "train_process_1.log", "train_node_2.log", "train_ddp_process_1.log"]
    assert all(rundir.is_run_log(name, "train") for name in logs)
    for other in ("train_process_x.log", "train_node_1.txt", "distill.log", "train_ddp.log"):
        assert not rundir.is_run_log(other, "train"), other
    local_machine.setenv("RANK", "3")
    assert rundir.is_run_log(run_log_name("train"), "train")  # the names it gives are its own
    local_machine.setattr(rundir.logging, "shutdown", lambda: None)  # (the test's handlers)
    for stray in (None, "notes.txt"):
        run = tmp_path / "new" / "run"
        local_machine.setattr(rundir, "_NEW_FOLDERS", [])
        local_machine.setattr(rundir, "_STARTED", [])
        rundir.note_new_run_dir([f"hydra.run.dir={run}"])
        run.mkdir(parents=True)
        for name in [*logs, "config.yaml", *([stray] if stray else [])]:
            (run / name).write_text("x")
        _hydra_job(local_machine, "RUN")
        HydraConfig.get().runtime = SimpleNamespace(output_dir=str(run))
        rundir.remove_new_run_dir()
        if stray is None:
            assert not (tmp_path / "new").exists()
        else:
            assert sorted(p.name for p in run.iterdir()) == sorted([*logs, "config.yaml", stray])

    # Hydra's default, time-stamped run dir that the other processes' logs reached first
    stamped = tmp_path / f"train-{time.strftime('%Y%m%d-%H%M%S')}"
    stamped.mkdir()
    for name in logs:
        (stamped / name).write_text("x")
    local_machine.setattr(rundir, "_NEW_FOLDERS", [])
    rundir.note_new_run_dir([])
    rundir.note_default_run_dir(stamped, "train")
    assert rundir._NEW_FOLDERS == [stamped]
