"""``teacher.cache``: a live teacher's outputs read from a disk cache shared between runs.

A run with the cache is the run without it, bit for bit (losses, final weights); a second run
of the same seed reads every batch's teacher output from the cache; an entry is keyed by the
batch's bytes and the teacher's weights, so another batch or another teacher is computed, not
misread; a damaged entry is recomputed; nothing half-written is left; bad settings are refused.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_DATA, error_lines, kdseg, kdseg_here
from test_compile import _module
from test_distill_module import _compose

from kdseg.data.dataset import resolve_data
from kdseg.errors import InputError
from kdseg.lit.distill import DistillationModule
from kdseg.lit.teacher_cache import TeacherCache, check_cache_dir

STEPS = ["trainer.max_steps=4", "trainer.max_epochs=1", "trainer.log_every_n_steps=1"]


def _column(run: Path, name: str) -> list[float]:
    with open(run / "csv" / "metrics.csv") as f:
        return [float(r[name]) for r in csv.DictReader(f) if r.get(name)]


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.pt"))


def test_a_cached_run_is_the_uncached_run_and_a_second_run_reads_every_batch(
    phantom_lits: Path, trained_enet: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "teacher-cache"
    common = [
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        *STEPS,
        "student=enet",
        "student.width=0.25",
        f"teacher.ckpt={trained_enet / 'checkpoints' / 'last.ckpt'}",
        "seed=7",
    ]
    runs = {name: tmp_path / name for name in ("live", "first", "second")}
    kdseg("distill", *common, f"hydra.run.dir={runs['live']}")
    for name in ("first", "second"):
        kdseg("distill", *common, f"teacher.cache={cache}", f"hydra.run.dir={runs[name]}")
    losses = {k: _column(v, "train/loss") for k, v in runs.items()}
    assert len(losses["live"]) == 4
    assert losses["live"] == losses["first"] == losses["second"]
    weights = {
        k: torch.load(v / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for k, v in runs.items()
    }
    for key, value in weights["live"].items():
        assert torch.equal(value, weights["first"][key]) and torch.equal(
            value, weights["second"][key]
        )
    # EMKD reads the logits and the low and high taps: three files a batch, four batches
    assert len(_entries(cache)) == 3 * 4
    assert sum(_column(runs["first"], "perf/teacher_cache_hits")) == 0
    assert sum(_column(runs["second"], "perf/teacher_cache_hits")) == 4
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix != ".pt"]


def test_the_key_follows_autocast_cpu_capability_and_kdseg_version(
    phantom_lits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full-precision CPU key names the kdseg version and the instruction set torch
    dispatches to (an AVX2 and an AVX-512 machine sharing a folder never mix their outputs);
    under autocast the key changes, so a mixed-precision run never reads a full-precision
    run's entries; bfloat16 batches (which numpy lacks) hash too."""
    import hashlib

    import kdseg

    module, batch = _module(phantom_lits, tmp_path, False, cache=str(tmp_path / "cache"))
    cache = module.teacher_cache
    images = batch["image"]
    # the thread count is read at each key (Lightning's DDP launchers set it late)
    from kdseg.lit.teacher_cache import models_source_digest

    source = models_source_digest()
    assert cache._identity.endswith(f"|kdseg {kdseg.__version__}|models {source}|threads ".encode())
    # the networks' source: an edit to kdseg/models/*.py is another digest (the version is not)
    models = Path(kdseg.__file__).parent / "models"
    copy = tmp_path / "models"
    shutil.copytree(models, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "enet.py").write_text((copy / "enet.py").read_text() + "\n# an edit\n")
    monkeypatch.setattr(kdseg.models, "__file__", str(copy / "__init__.py"))
    models_source_digest.cache_clear()
    assert models_source_digest() != source
    monkeypatch.undo()
    models_source_digest.cache_clear()
    assert models_source_digest() == source
    threads = torch.get_num_threads()
    capability = torch.backends.cpu.get_cpu_capability()
    before = hashlib.sha256(cache._identity + f"{threads}".encode())
    before.update(f"|cpu|{images.dtype}|{tuple(images.shape)}|{images.stride()}|".encode())
    before.update(f"cpu {capability}|".encode())
    before.update(images.detach().contiguous().numpy())
    assert cache.key(images) == before.hexdigest()
    other = "AVX512" if capability != "AVX512" else "AVX2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: other)
    assert cache.key(images) != before.hexdigest()
    monkeypatch.undo()
    assert cache.key(images) == before.hexdigest()
    # threads set after the cache is built (Lightning's DDP launchers do): the key follows
    torch.set_num_threads(threads + 1)
    try:
        assert cache.key(images) != before.hexdigest()
    finally:
        torch.set_num_threads(threads)
    assert cache.key(images) == before.hexdigest()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = cache.key(images)
    assert mixed != before.hexdigest()
    half = images.to(torch.bfloat16)
    assert cache.key(half) not in (mixed, before.hexdigest())
    assert cache.key(half) == cache.key(half.clone())


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer: bare steps
def test_a_hit_returns_the_live_tensors_and_a_new_batch_or_teacher_is_computed(
    phantom_lits: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    module, batch = _module(phantom_lits, tmp_path, False, cache=str(cache))
    teacher_cache = module.teacher_cache
    assert isinstance(teacher_cache, TeacherCache)
    images = batch["image"]
    with torch.no_grad():
        live = module.teacher(images)
    first, again = teacher_cache(images), teacher_cache(images)
    assert (teacher_cache.misses, teacher_cache.hits) == (1, 1)
    for out in (first, again):
        assert torch.equal(out.logits, live.logits)
        assert out.logits.stride() == live.logits.stride()
        for tap in teacher_cache.taps:
            assert torch.equal(out.taps[tap], live.taps[tap])
            assert out.taps[tap].dtype == live.taps[tap].dtype
    assert set(again.taps) == set(teacher_cache.taps) == {"low", "high"}

    teacher_cache(images.flip(-1))  # another batch: another key
    assert teacher_cache.misses == 2
    with torch.no_grad():  # another teacher (weights changed): a new identity, nothing reused
        next(module.teacher.parameters()).add_(1.0)
    other = TeacherCache(cache, module.teacher, teacher_cache.taps, "")
    assert not torch.equal(other(images).logits, live.logits)
    assert (other.misses, other.hits) == (1, 0)


def test_the_key_names_the_teacher_a_resumed_checkpoint_restored(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """A resumed distillation run gets its teacher back from its checkpoint, after the module
    and its cache were built from the ``teacher.ckpt`` file (which may have changed since):
    the keys name the restored teacher, as a cache built over it names it."""
    cache = tmp_path / "cache"
    module, batch = _module(phantom_lits, tmp_path, False, cache=str(cache))
    teacher_cache = module.teacher_cache
    assert isinstance(teacher_cache, TeacherCache)
    images = batch["image"]
    built = TeacherCache(cache, module.teacher, teacher_cache.taps, teacher_cache.setting)
    before = built.key(images)  # the file's teacher, keyed at once
    state = module.state_dict()
    name = next(k for k in state if k.startswith("teacher.") and state[k].is_floating_point())
    state[name] = state[name] + 1.0  # the teacher a checkpoint holds differs from the file's
    module.load_state_dict(state)  # as Lightning restores a resumed run
    restored = TeacherCache(cache, module.teacher, teacher_cache.taps, teacher_cache.setting)
    assert teacher_cache.key(images) == restored.key(images) != before


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_a_damaged_entry_is_recomputed_and_rewritten(phantom_lits: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    module, batch = _module(phantom_lits, tmp_path, False, cache=str(cache))
    teacher_cache = module.teacher_cache
    live = teacher_cache(batch["image"])
    damaged = _entries(cache)[0]
    damaged.write_bytes(damaged.read_bytes()[:20])  # a copy cut short
    again = teacher_cache(batch["image"])
    assert (teacher_cache.misses, teacher_cache.hits) == (2, 0)
    assert torch.equal(again.logits, live.logits)
    assert torch.equal(teacher_cache(batch["image"]).logits, live.logits)
    assert teacher_cache.hits == 1


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_a_full_disk_stops_the_writing_not_the_run(
    phantom_lits: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An OSError while writing (ENOSPC): the live outputs go on, one warning, no temporary."""
    cache = tmp_path / "cache"
    module, batch = _module(phantom_lits, tmp_path, False, cache=str(cache))
    teacher_cache = module.teacher_cache
    with torch.no_grad():
        live = module.teacher(batch["image"])

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    for _ in range(2):
        assert torch.equal(teacher_cache(batch["image"]).logits, live.logits)
    assert not teacher_cache.writable and teacher_cache.misses == 2
    assert sum("cannot write" in r.getMessage() for r in caplog.records) == 1  # one warning
    assert not [p for p in cache.rglob("*") if p.is_file()]  # no temporary left behind


def test_bad_settings_are_refused(phantom_lits: Path, trained_enet: Path, tmp_path: Path) -> None:
    """A config error (exit code 2, one line): a cache path that is a file, a value that is not
    a path, and a cache for stored predictions (no teacher to cache)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(InputError, match="must be a folder path or null"):
        check_cache_dir(3)
    assert check_cache_dir(None) is None
    cfg = _compose("distill", [f"data.root={phantom_lits}", "teacher.ckpt=unused", "distill=kd"])
    with pytest.raises(InputError, match="teacher.cache is for a live teacher"):
        DistillationModule(
            model=cfg["student"],
            data=resolve_data(cfg["data"]).info(),
            optim=cfg["optim"],
            loss=cfg["loss"],
            teacher={"predictions": str(tmp_path), "cache": str(tmp_path / "cache")},
            distill=cfg["distill"],
        )
    result = kdseg_here(
        "distill",
        *TINY_DATA,
        f"data.root={phantom_lits}",
        f"teacher.ckpt={trained_enet / 'checkpoints' / 'last.ckpt'}",
        f"teacher.cache={a_file}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert result.returncode == 2
    assert error_lines(result.stderr) == [  # after the phantoms' HU-window warning
        f"kdseg-distill: error: {a_file}: teacher.cache is not a folder"
    ]
    assert a_file.read_text() == "x"
    # a cache inside a folder the run reads (here data.root) would write into it
    before = sorted(p.name for p in phantom_lits.iterdir())
    inside = phantom_lits / "teacher-cache"
    result = kdseg_here(
        "distill",
        *TINY_DATA,
        f"data.root={phantom_lits}",
        f"teacher.ckpt={trained_enet / 'checkpoints' / 'last.ckpt'}",
        f"teacher.cache={inside}",
        f"hydra.run.dir={tmp_path / 'run2'}",
        check=False,
    )
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"kdseg-distill: error: {inside}: teacher.cache lies inside data.root ({phantom_lits}): "
        "kdseg writes nothing into a folder it reads; set teacher.cache= to a folder outside it"
    ]
    assert sorted(p.name for p in phantom_lits.iterdir()) == before
