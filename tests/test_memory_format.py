"""``channels_last``: every network gives the same outputs and taps in either memory layout, the
weights and their checksum do not change, every distillation preset trains through it, and a
checkpoint carries the setting to a teacher, to inference, and not to export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_distill_losses import PRESETS
from test_distill_module import _compose, _fake_teacher

from kdseg.data.dataset import resolve_data
from kdseg.errors import InputError
from kdseg.eval.checkpoint import load_bundle
from kdseg.lit.distill import DistillationModule
from kdseg.lit.train import weights_checksum
from kdseg.models import available_models, build_from_config
from kdseg.models.memory_format import is_channels_last, set_channels_last

CL = torch.channels_last


def _config(name: str, channels_last: bool = False) -> dict:
    return {"name": name, "in_channels": 1, "num_classes": 3, "width": 0.25,
            "channels_last": channels_last}  # fmt: skip


@pytest.mark.parametrize("name", available_models())
def test_same_outputs_taps_and_weights_in_either_layout(name: str) -> None:
    torch.manual_seed(0)
    plain = build_from_config(_config(name)).eval()
    torch.manual_seed(0)
    fast = build_from_config(_config(name, channels_last=True)).eval()
    assert weights_checksum(plain) == weights_checksum(fast)  # drawn first, then laid out
    convs = [p for p in fast.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=CL) for p in convs)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        a, b = plain(x), fast(x)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-4, atol=1e-4)
    assert set(a.taps) == set(b.taps)
    for key in a.taps:
        torch.testing.assert_close(b.taps[key], a.taps[key], rtol=1e-4, atol=1e-4)
    set_channels_last(fast, False)  # and back: plain strides, no hook, same outputs
    assert not is_channels_last(fast) and all(p.is_contiguous() for p in fast.parameters())
    with torch.no_grad():
        assert fast(x).logits.is_contiguous()


def test_a_setting_that_is_not_a_boolean_is_refused(phantom_lits: Path, tmp_path: Path) -> None:
    """A config error (exit code 2), also when a checkpoint carries it (naming the file)."""
    with pytest.raises(InputError, match="model.channels_last must be true, false or null"):
        build_from_config({**_config("enet"), "channels_last": "yes"})
    data = resolve_data(_compose("train", [f"data.root={phantom_lits}"])["data"]).info()
    ckpt = _fake_teacher(tmp_path / "bad.ckpt", _config("enet"), data)
    saved = torch.load(ckpt, weights_only=True)
    saved["hyper_parameters"]["model"]["channels_last"] = "yes"
    torch.save(saved, ckpt)
    with pytest.raises(InputError, match=r"bad.ckpt: checkpoint: cannot build its model"):
        load_bundle(ckpt)


def test_the_hook_feeds_the_network_channels_last_inputs() -> None:
    """Several input channels (2.5D context): the first layer sees an NHWC tensor, not the
    NCHW one it was given (one channel is both, so it cannot tell the hook is there)."""
    seen = []
    net = build_from_config({**_config("raunet", channels_last=True), "in_channels": 3})
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.randn(2, 3, 32, 32)
    assert x.is_contiguous() and not x.is_contiguous(memory_format=CL)
    with torch.no_grad():
        net.eval()(x)
    assert seen[0].is_contiguous(memory_format=CL) and not seen[0].is_contiguous()
    set_channels_last(net, False)
    with torch.no_grad():
        net(x)
    assert seen[1].is_contiguous()


def test_same_seed_same_training_step_in_channels_last() -> None:
    """Same seed, same run holds within the setting: two builds, one Adam step each."""
    losses = []
    for _ in range(2):
        torch.manual_seed(3)
        net = build_from_config(_config("raunet", channels_last=True))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        x = torch.randn(4, 1, 48, 48, generator=torch.Generator().manual_seed(1))
        for _ in range(2):
            loss = net(x).logits.square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
        assert all(p.is_contiguous(memory_format=CL) for p in net.parameters() if p.ndim == 4)
    assert losses[0] == losses[1]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer: one bare step
@pytest.mark.parametrize("preset", PRESETS)
def test_every_distill_preset_gives_the_same_loss_in_channels_last(
    preset: str, phantom_lits: Path, tmp_path: Path
) -> None:
    """Student and live teacher channels-last (the teacher through ``teacher.channels_last``):
    the first step's loss equals the contiguous one's, and gradients reach the student."""
    cfg = _compose(
        "distill",
        [f"data.root={phantom_lits}", "teacher.ckpt=unused", "student=enet",
         "student.width=0.25", f"distill={preset}"],
    )  # fmt: skip
    setup = resolve_data(cfg["data"])
    setup.prepare(progress=False)
    teacher = _fake_teacher(tmp_path / "t.ckpt", _config("raunet"), setup.info())
    dm = setup.datamodule(seed=1)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    losses = []
    for layout in (False, True):
        torch.manual_seed(5)
        module = DistillationModule(
            model={**cfg["student"], "channels_last": layout},
            data=setup.info(),
            optim=cfg["optim"],
            loss=cfg["loss"],
            teacher={"ckpt": str(teacher), "channels_last": layout},
            distill=cfg["distill"],
        )
        assert is_channels_last(module.teacher) == layout == is_channels_last(module.net)
        module.train()
        loss = module.training_step(batch, 0)
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.parameters())
        assert all(p.grad is None for p in module.teacher.parameters())
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4, abs=1e-5)


def test_a_checkpoint_carries_the_setting_to_a_bundle(phantom_lits: Path, tmp_path: Path) -> None:
    """What load_bundle builds (a live teacher, torch inference) follows the checkpoint's own
    model config; checkpoints from before the option build contiguous. (Export sets it back:
    tests/test_deploy.py.)"""
    data = resolve_data(_compose("train", [f"data.root={phantom_lits}"])["data"]).info()
    ckpt = _fake_teacher(tmp_path / "m.ckpt", _config("enet", channels_last=True), data)
    assert is_channels_last(load_bundle(ckpt).model)
    old_config = {k: v for k, v in _config("enet").items() if k != "channels_last"}
    old = _fake_teacher(tmp_path / "old.ckpt", old_config, data)
    assert not is_channels_last(load_bundle(old).model)
