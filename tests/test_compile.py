"""``compile`` (``model.compile``, ``student.compile``, ``teacher.compile``): torch.compile while
training. The weights, their checksum and the checkpoint keys do not change, the first step's
loss equals the eager one, gradients reach the student only, same seed gives the same run, and
a checkpoint that says ``compile: true`` loads, evaluates and exports eager.

The tests use the test suite's tiny network (tests/test_deploy.py), which compiles in seconds,
one of them through a whole Lightning fit; the registered networks' compiled training is
measured by ``scripts/bench_speed_options.py --option compile`` (docs/training.md, "Speed options").
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from test_deploy import TinyNet  # noqa: F401  (registers "tiny_deploy_net")
from test_distill_module import _compose, _fake_teacher

from kdseg.data.dataset import resolve_data
from kdseg.deploy.artifact import artifact_metadata
from kdseg.errors import InputError
from kdseg.eval.checkpoint import load_bundle
from kdseg.lit.distill import DistillationModule
from kdseg.lit.train import weights_checksum
from kdseg.models import build_from_config
from kdseg.models.compile import compile_network, is_compiled

TINY = {"name": "tiny_deploy_net", "in_channels": 1, "num_classes": 3, "width": 1.0}


def _module(
    phantom_lits: Path,
    tmp_path: Path,
    compiled: bool,
    preset: str = "emkd",
    channels_last: bool | None = None,
    **teacher_options: object,
):
    """A DistillationModule (tiny student and live tiny teacher), both compiled or both eager
    (and channels-last if asked; ``teacher_options``: more ``teacher.*`` keys), and one
    training batch of the tiny phantoms."""
    cfg = _compose(
        "distill", [f"data.root={phantom_lits}", "teacher.ckpt=unused", f"distill={preset}"]
    )
    setup = resolve_data(cfg["data"])
    setup.prepare(progress=False)
    teacher = tmp_path / "teacher.ckpt"
    if not teacher.exists():
        torch.manual_seed(0)
        _fake_teacher(teacher, TINY, setup.info())
    dm = setup.datamodule(seed=1)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(5)
    module = DistillationModule(
        model={**TINY, "compile": compiled, "channels_last": channels_last},
        data=setup.info(),
        optim=cfg["optim"],
        loss=cfg["loss"],
        teacher={
            "ckpt": str(teacher),
            "compile": compiled,
            "channels_last": channels_last,
            **teacher_options,
        },
        distill=cfg["distill"],
    )
    return module, batch


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer: bare steps
@pytest.mark.parametrize("channels_last", [None, True])
def test_compiled_networks_train_like_eager_ones(
    phantom_lits: Path, tmp_path: Path, channels_last: bool | None
) -> None:
    """Same starting weights and keys; the first loss within float noise of eager; gradients
    reach the student, never the teacher; also with both networks channels-last."""
    results = {}
    for compiled in (False, True):
        module, batch = _module(phantom_lits, tmp_path, compiled, channels_last=channels_last)
        assert is_compiled(module.net) == is_compiled(module.teacher) == compiled
        keys, init = list(module.state_dict()), weights_checksum(module.net)
        module.train()
        loss = module.training_step(batch, 0)
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.parameters())
        assert all(p.grad is None for p in module.teacher.parameters())
        assert not module.teacher.training  # frozen BatchNorm, compiled or not
        results[compiled] = (keys, init, loss.item())
    assert results[True][:2] == results[False][:2]
    assert results[True][2] == pytest.approx(results[False][2], rel=1e-4, abs=1e-5)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_same_seed_same_compiled_run(phantom_lits: Path, tmp_path: Path) -> None:
    """Two compiled modules from one seed: bit-identical losses over three Adam steps."""
    runs = []
    for _ in range(2):
        module, batch = _module(phantom_lits, tmp_path, True, preset="kd")
        opt = torch.optim.Adam(module.net.parameters(), lr=1e-2)
        module.train()
        losses = []
        for _ in range(3):
            loss = module.training_step(batch, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        runs.append(losses)
    assert runs[0] == runs[1]


def test_a_setting_that_is_not_a_boolean_is_refused(phantom_lits: Path, tmp_path: Path) -> None:
    """A config error (exit code 2): in a model config, and on a teacher that is not live."""
    with pytest.raises(InputError, match="model.compile must be true, false or null"):
        build_from_config({**TINY, "compile": "yes"})
    cfg = _compose("distill", [f"data.root={phantom_lits}", "teacher.ckpt=unused", "distill=kd"])
    setup = resolve_data(cfg["data"])
    with pytest.raises(InputError, match="teacher.compile is for a live teacher"):
        DistillationModule(
            model=cfg["student"],
            data=setup.info(),
            optim=cfg["optim"],
            loss=cfg["loss"],
            teacher={"predictions": str(tmp_path), "compile": True},
            distill=cfg["distill"],
        )


def test_no_cpp_compiler_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """One line at build time (exit code 2), not an Inductor traceback at the first step."""
    monkeypatch.setenv("CXX", "no-such-compiler-kdseg")
    net = build_from_config(TINY)
    with pytest.raises(InputError, match="needs a C\\+\\+ compiler and 'no-such-compiler-kdseg'"):
        compile_network(net)
    assert not is_compiled(net)


def test_compiling_quiets_the_compiler_but_not_a_recompile_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Graph-break and recompilation chatter is dropped; the line saying a network went back
    to eager after too many recompilations (a silent slowdown otherwise) still shows."""
    import logging

    compile_network(build_from_config(TINY))
    frames = logging.getLogger("torch._dynamo.convert_frame")
    with caplog.at_level(logging.WARNING):
        logging.getLogger("torch._dynamo.symbolic_convert").warning("Graph break in user code")
        frames.warning("Graph break: recompiling")
        frames.warning("torch._dynamo hit config.recompile_limit (8)")
        logging.getLogger("torch._inductor.utils").warning("not enough SMs")
    assert [r.getMessage() for r in caplog.records] == [
        "torch._dynamo hit config.recompile_limit (8)"
    ]


def test_a_checkpoint_that_says_compile_loads_and_exports_eager(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """Inference and export rebuild the network eager; the artefact's model config drops the key
    (it says how the torch network trained, not what it is)."""
    data = resolve_data(_compose("train", [f"data.root={phantom_lits}"])["data"]).info()
    ckpt = _fake_teacher(tmp_path / "m.ckpt", {**TINY, "compile": True}, data)
    bundle = load_bundle(ckpt)
    assert not is_compiled(bundle.model)
    assert bundle.model_config["compile"] is True
    assert "compile" not in artifact_metadata(bundle)["model"]


def test_pruning_fine_tunes_the_pruned_network_eager(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Export's recovery training builds its module without the checkpoint's run options, so a
    compiled run's checkpoint prunes on a machine without a C++ compiler."""
    from types import SimpleNamespace

    import kdseg.lit.segment as segment
    from kdseg.deploy.prune import finetune

    seen: dict = {}

    class Built(Exception):
        pass

    def capture(self, model, data, optim, loss) -> None:  # noqa: ANN001
        seen.update(model)
        raise Built

    monkeypatch.setattr(segment.SegmentationModule, "__init__", capture)
    setup = SimpleNamespace(info=dict)
    config = {**TINY, "compile": True, "channels_last": True}
    with pytest.raises(Built):
        finetune(torch.nn.Identity(), config, setup, {"optim": {}}, tmp_path)
    assert seen == TINY


def test_a_compiled_network_fits_through_lightning_quietly(
    phantom_lits: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    recwarn: pytest.WarningsRecorder,
) -> None:
    """End to end through Lightning (training, validation in eval mode, checkpoints), in this
    process on the tiny network (a registered network's cold compile costs 100-200 s of the
    suite's 10 minutes): the fit finishes, the compiler prints nothing, and the checkpoint
    holds plain ``net.*`` keys that load eager."""
    from kdseg.lit.segment import SegmentationModule
    from kdseg.lit.train import fit_from_config

    cfg = _compose(
        "train",
        [
            f"data.root={phantom_lits}",
            "logger=csv",
            "trainer.max_epochs=1",
            "seed=3",
        ],
    )
    cfg["model"] = {**TINY, "compile": True}
    cfg["trainer"]["enable_progress_bar"] = False
    run = tmp_path / "run"
    summary = fit_from_config(
        cfg,
        lambda c, data: SegmentationModule(
            model=c["model"], data=data, optim=c["optim"], loss=c["loss"]
        ),
        run,
    )
    out, err = capfd.readouterr()
    compiler = ("dynamo", "inductor")
    noise = [  # what reaches the console, what pytest takes from logging, and warnings
        *(line for line in (out + err).splitlines() if any(w in line for w in compiler)),
        *(
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("torch._") and r.levelno >= logging.WARNING
        ),
        *(
            str(w.message)
            for w in recwarn
            if any(word in f"{w.filename} {w.message}" for word in compiler)
        ),
    ]
    assert not noise, noise
    assert summary["global_step"] == 4 and summary["best_score"] is not None
    ckpt = run / "checkpoints" / "best.ckpt"
    keys = torch.load(ckpt, weights_only=True)["state_dict"]
    assert keys and all("_orig_mod" not in k for k in keys)
    bundle = load_bundle(ckpt)
    assert not is_compiled(bundle.model) and bundle.model_config["compile"] is True
