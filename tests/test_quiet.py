"""Lightning's banners are dropped where they come from, GPU runs included; other lines pass."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kdseg.cli.boundary import quiet_libraries


def _passes(name: str, message: str) -> bool:
    logger = logging.getLogger(name)
    return bool(
        logger.filter(logger.makeRecord(name, logging.INFO, __file__, 0, message, (), None))
    )


def test_lightning_gpu_banners_are_dropped_and_other_lines_kept() -> None:
    quiet_libraries()
    quiet_libraries()  # idempotent: one filter per logger
    assert not _passes("pytorch_lightning.utilities.rank_zero", "GPU available: True (cuda)")
    assert not _passes(
        "pytorch_lightning.utilities.rank_zero", "Using 16bit Automatic Mixed Precision (AMP)"
    )
    assert not _passes(
        "pytorch_lightning.accelerators.cuda", "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]"
    )
    assert not _passes(
        "pytorch_lightning.utilities.rank_zero", "`Trainer.fit` stopped: `max_epochs=2` reached."
    )
    assert _passes("pytorch_lightning.utilities.rank_zero", "a line kdseg does not know")
    assert len(logging.getLogger("pytorch_lightning.accelerators.cuda").filters) == 1


def test_distill_teacher_in_eval_mode_warning_is_dropped() -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn(
            "Found 194 module(s) in eval mode at the start of training. This may lead to "
            "unexpected behavior during training.",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn(
            "The number of training batches (4) is smaller than the logging interval "
            "Trainer(log_every_n_steps=10). Set a lower value for log_every_n_steps if you "
            "want to see logs for the training epoch.",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("a warning kdseg does not know", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning kdseg does not know"]


def test_a_folder_that_is_not_the_full_download_gets_its_split_without_a_warning(
    tmp_path, caplog
) -> None:
    """`make demo`'s 14 phantoms bear LiTS names, so the versioned manifest names 117 cases
    missing: the expected state of a folder that is not the full download, said as a fact at
    INFO. Nearly all present (an incomplete download) is a warning naming a missing case."""
    from kdseg.data.manifest import SPLITS, make_split, read_split, resolve_split

    named = [c for s in SPLITS for c in read_split(_lits_manifest())[s]]
    demo = [f"volume-{i}" for i in range(14)]
    with caplog.at_level(logging.INFO, logger="kdseg.data.manifest"):
        assert resolve_split(tmp_path, demo, manifest="lits.json", persist=False) == make_split(
            demo
        )
    (record,) = caplog.records
    assert record.levelno == logging.INFO and "missing" not in record.getMessage()
    assert "seeded split of the 14 case(s)" in record.getMessage()
    assert "full 131-case download" in record.getMessage()
    caplog.clear()
    almost = sorted(set(named) - {"volume-7"})
    with caplog.at_level(logging.INFO, logger="kdseg.data.manifest"):
        resolve_split(tmp_path, almost, manifest="lits.json", persist=False)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "1 of the 131 cases" in record.getMessage() and "'volume-7'" in record.getMessage()


def _lits_manifest():
    from kdseg.data.manifest import MANIFEST_DIR

    return MANIFEST_DIR / "lits.json"


def test_console_lines_have_one_prefix_the_commands(monkeypatch, capsys) -> None:
    """Log lines on the console are the bare message (no ``[time][logger][INFO] -``), warnings
    ``kdseg-<command>: warning:`` as the error line's ``kdseg-<command>: error:``; a Python
    warning too, without the library file's full path in front."""
    import warnings

    from kdseg.cli.boundary import console_warnings
    from kdseg.errors import ConsoleFormatter, warning_line

    monkeypatch.setattr("sys.argv", ["/venv/bin/kdseg-train", "model=enet"])
    formatter = ConsoleFormatter()
    logger = logging.getLogger("kdseg.lit.callbacks")
    info = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "model summary:", (), None)
    warn = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, "resumed %s", ("x",), None)
    assert formatter.format(info) == "model summary:"
    assert formatter.format(warn) == "kdseg-train: warning: resumed x"
    assert warning_line("2 run(s) without eval") == "kdseg-train: warning: 2 run(s) without eval"
    monkeypatch.setattr("sys.argv", ["-c"])
    assert warning_line("w") == "kdseg: warning: w"
    monkeypatch.setattr("sys.argv", ["/venv/bin/kdseg-report"])
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    console_warnings(verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("fewer batches\n than steps", UserWarning, stacklevel=1)
    assert capsys.readouterr().err == "kdseg-report: warning: fewer batches than steps\n"


def test_progress_bar_has_no_version_item() -> None:
    """Lightning's bar showed ``v_num: 5pma`` (the wandb run id's last 4 characters)."""
    from types import SimpleNamespace

    from kdseg.lit.callbacks import progress_bar

    logger = SimpleNamespace(version="offline-5pma")
    trainer = SimpleNamespace(loggers=[logger], progress_bar_metrics={"train/loss": 0.5})
    assert progress_bar().get_metrics(trainer, None) == {"train/loss": 0.5}


@pytest.mark.parametrize("name", ["console", "run_console"])
def test_log_warnings_go_to_stderr_and_information_to_stdout(name, monkeypatch, capsys) -> None:
    """The job logging of the one-shot commands (``console``) and of kdseg-train and
    kdseg-distill (``run_console``): information on stdout beside the results, a warning on
    stderr, where the error line goes (``kdseg-eval ... > results.txt`` keeps results alone).
    A warning once went to stdout, where kdseg-predict's own went to stderr."""
    import logging.config

    import yaml

    from kdseg.cli.options import CONFIG_PATH

    monkeypatch.setattr("sys.argv", ["/venv/bin/kdseg-eval"])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # pytest's own, put back after
    named = {n: logging.getLogger(n).level for n in ("kdseg", "hydra", "__main__")}
    config = yaml.safe_load(
        (Path(CONFIG_PATH) / "hydra" / "job_logging" / f"{name}.yaml").read_text()
    )
    try:
        logging.config.dictConfig(config)
        logger = logging.getLogger("kdseg.data.nnunet")
        logger.info("results: x")
        logger.warning("channel_names names 2 input channels")
        logger.error("gone")
        # a library's information is not kdseg's: it was a bare line among the results
        library = logging.getLogger("matplotlib.font_manager")
        library.info("generated new fontManager")
        library.warning("a library's warning still shows")
        out, err = capsys.readouterr()
    finally:
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        for logger_name, logger_level in named.items():
            logging.getLogger(logger_name).setLevel(logger_level)
    assert out == "results: x\n"
    assert err == (
        "kdseg-eval: warning: channel_names names 2 input channels\nkdseg-eval: error: gone\n"
        "kdseg-eval: warning: a library's warning still shows\n"
    )


def test_kdseg_prepare_warnings_are_on_stderr_alone(phantom_lits: Path, tmp_path: Path) -> None:
    """kdseg-prepare of an nnU-Net folder naming three input channels (a logged warning) with
    an all-background label (one of prepare's own warning lines): stdout holds the results,
    stderr the warning lines alone (they once went to stdout, kdseg-predict's to stderr)."""
    import json

    import nibabel as nib
    import numpy as np
    from conftest import kdseg
    from test_nnunet import nnunet_folder

    root = nnunet_folder(phantom_lits, tmp_path / "Dataset002_Two")
    info = json.loads((root / "dataset.json").read_text())
    info["channel_names"] = {"0": "CT", "1": "PET", "2": "MR"}
    (root / "dataset.json").write_text(json.dumps(info))
    label = root / "labelsTr" / "liver_001.nii.gz"
    seg = nib.load(label)
    empty = nib.Nifti1Image(np.zeros(seg.shape, np.uint8), seg.affine)
    nib.save(empty, label)
    cache = tmp_path / "cache"
    done = kdseg("prepare", "data=nnunet", f"data.root={root}", f"data.cache_root={cache}")
    assert ": warning:" not in done.stdout, done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("5 case(s) prepared in ")
    lines = done.stderr.splitlines()  # channels, HU window, empty label
    assert len(lines) == 3 and all(x.startswith("kdseg-prepare: warning: ") for x in lines), lines
    assert lines[0] == (
        f"kdseg-prepare: warning: {root / 'dataset.json'}: channel_names names 3 input channels;"
        " kdseg reads channel 0 (CT, the _0000 files) only and ignores 1 (PET), 2 (MR)"
    )
    assert "outside the HU window" in lines[1]
    assert "1 of 5 labeled case(s) hold no organ voxel" in lines[2] and "(liver_001)" in lines[2]


def test_progress_bars_draw_on_stderr_where_it_is_a_terminal(monkeypatch, capsys) -> None:
    """kdseg's rich bars draw on stderr, and only where it is a terminal: stdout holds the
    results alone, and stderr off a terminal its warning and error lines alone. (rich's
    default console, which they used, is stdout's, and prints a finished bar off a terminal.)"""
    from rich.progress import Progress

    from kdseg.errors import progress_console

    for transient in (False, True):
        with Progress(console=progress_console(), transient=transient) as bar:
            bar.add_task("counting", total=1)
    assert capsys.readouterr() == ("", "")  # captured: no terminal
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich's switch: draw as on a terminal
    with Progress(console=progress_console()) as bar:
        bar.add_task("counting", total=1)
    out, err = capsys.readouterr()
    assert out == "" and "counting" in err


def test_every_rich_progress_bar_is_given_the_stderr_console() -> None:
    """kdseg builds a rich ``Progress(...)`` in one place, ``kdseg.errors.progress_steps``, with
    the stderr console and stdout left alone where it is a file; every command's bar goes
    through it (one without would draw on rich's default console, stdout, and take stdout's
    lines there)."""
    import ast

    import kdseg

    found, used = [], set()
    for path in sorted(Path(kdseg.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Progress":
                words = {k.arg: ast.unparse(k.value) for k in node.keywords}
                found.append((path.name, words.get("console"), words.get("redirect_stdout")))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "progress_steps":
                used.add(path.name)
    assert found == [("errors.py", "console", "redirects_stdout(console)")], found
    expected = {"bench.py", "teacher_targets.py", "prepare.py", "dataset.py", "inference.py"}
    assert used >= expected | {"evaluate.py"}, used


def test_progress_off_a_terminal_is_plain_lines_on_stderr(monkeypatch, capsys) -> None:
    """Off a terminal (a batch job's log, a pipe) the bar draws nothing: a plain line on stderr
    every ``PROGRESS_EVERY_S`` seconds says how far the work is, and a last one at the end
    where any was printed. A short run prints none, and a failed one no line for its failure:
    a refusal stays one error line."""
    from kdseg import errors
    from kdseg.errors import progress_steps

    with progress_steps("prepare 3 case(s)", 3) as bar:  # shorter than the interval: silent
        for _ in range(3):
            bar.advance()
    with pytest.raises(KeyError), progress_steps("prepare 3 case(s)", 3) as bar:
        bar.advance()
        raise KeyError("case")
    assert capsys.readouterr() == ("", "")
    monkeypatch.setattr(errors, "PROGRESS_EVERY_S", 0.0)
    with progress_steps("prepare 3 case(s)", 3) as bar:
        bar.advance()
        bar.describe("case_00002")
        monkeypatch.setattr(errors, "PROGRESS_EVERY_S", 1e9)  # no line: the last one at the end
        bar.advance(2)
    with pytest.raises(KeyError), progress_steps("evaluate 2 case(s)", 2) as bar:
        monkeypatch.setattr(errors, "PROGRESS_EVERY_S", 0.0)
        bar.advance()
        raise KeyError("case")
    with progress_steps("benchmark", 2, enabled=False) as bar:
        bar.advance(2)
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        "prepare 3 case(s): 1/3, 0 s",
        "prepare 3 case(s): 3/3, 0 s; case_00002",
        "evaluate 2 case(s): 1/2, 0 s",
    ], err


_PRINTS_WHILE_BARS_DRAW = """
import pytorch_lightning as pl
from pytorch_lightning.demos.boring_classes import BoringModel
from kdseg.errors import progress_steps
from kdseg.lit.callbacks import QuietRichProgressBar

with progress_steps("counting", 2) as bar:
    print("result of kdseg's bar", flush=True)
    bar.advance(2)

class Prints(pl.Callback):
    def on_train_batch_end(self, *args):
        print("result of lightning's bar", flush=True)

trainer = pl.Trainer(
    accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False,
    enable_checkpointing=False, enable_model_summary=False,
    callbacks=[QuietRichProgressBar(), Prints()],
)
trainer.fit(BoringModel())
"""


def test_stdout_to_a_file_keeps_its_lines_while_a_bar_draws_on_stderr(tmp_path: Path) -> None:
    """stderr a terminal (the bars draw), stdout a file (``kdseg-eval ... > out.txt``): what is
    printed to stdout while a bar draws lands in the file. rich's live display took stdout over
    by default and wrote it through the bar's console, stderr, so the terminal got it."""
    import os
    import select
    import subprocess
    import sys

    reader, terminal = os.openpty()
    with open(tmp_path / "out.txt", "w") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", _PRINTS_WHILE_BARS_DRAW],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=terminal,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    os.close(terminal)
    err = b""
    try:
        while True:
            ready, _, _ = select.select([reader], [], [], 120)
            assert ready, "nothing on stderr for 120 s"
            try:
                chunk = os.read(reader, 65536)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                break
            err += chunk
        assert child.wait(timeout=60) == 0, err.decode(errors="replace")[-3000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(reader)
    text = err.decode(errors="replace")
    assert "counting" in text and "Epoch 0" in text, text  # both bars drew on stderr
    assert "result of" not in text, text
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert lines == ["result of kdseg's bar", "result of lightning's bar"], lines


def _fit_scored(run: Path) -> None:
    """Two epochs of Lightning's boring model, two training batches and a validation each (its
    batches are no dicts: StepTimer's first timed step, the sixth, would fail), as
    ``kdseg-train`` fits (no progress bar where stderr is not a terminal)."""
    from pytorch_lightning.demos.boring_classes import BoringModel

    from kdseg.lit.train import fit

    class Scored(BoringModel):
        def validation_step(self, batch, batch_idx):
            self.log("val/dice_mean", 0.5)
            return super().validation_step(batch, batch_idx)

    trainer = {
        "accelerator": "cpu",
        "max_epochs": 2,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,
        "enable_progress_bar": True,
    }
    cfg = {"trainer": trainer, "logger": {"wandb": {"enabled": False}}, "checkpoint": {}}
    fit(Scored(), None, cfg, run)


def test_training_off_a_terminal_shows_a_line_per_validation_on_stderr(
    tmp_path: Path, capsys
) -> None:
    """Off a terminal (a batch job's log) Lightning's bar would show nothing until the end:
    training adds none, and each validation's line goes to stderr as well as the log file.
    Epochs shorter than 30 s show no progress line of their own."""
    _fit_scored(tmp_path / "run")
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2 step 2", "epoch 2/2 step 4"]
    assert "val dice 0.5000" in lines[0], err
    assert "Epoch 0" not in out + err and "epoch " not in out, (out, err)


def test_training_off_a_terminal_shows_progress_lines_during_an_epoch(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Off a terminal an epoch is not silent until its validation: a plain line on stderr
    every ``PROGRESS_EVERY_S`` seconds (made 0 here: one after each batch), worded as the
    validation line, none on stdout (tests/test_validation_line.py: their pace)."""
    from kdseg import errors

    monkeypatch.setattr(errors, "PROGRESS_EVERY_S", 0.0)
    _fit_scored(tmp_path / "run")
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    progress = [line.split(", ")[0] for line in lines if ": batch " in line]
    assert progress == [
        "epoch 1/2 step 1: batch 1/2 (50%)",
        "epoch 1/2 step 2: batch 2/2 (100%)",
        "epoch 2/2 step 3: batch 1/2 (50%)",
        "epoch 2/2 step 4: batch 2/2 (100%)",
    ], err
    assert len(lines) == 6 and lines[2].startswith("epoch 1/2 step 2: train loss "), err
    assert lines[5].startswith("epoch 2/2 step 4: train loss ") and "val dice 0.5" in lines[5]
    assert "batches/s" in err and "epoch " not in out, (out, err)


def test_kdseg_phantom_progress_bar_is_on_stderr(tmp_path: Path, monkeypatch) -> None:
    """kdseg-phantom's bar: on stderr on a terminal (``TTY_COMPATIBLE=1``: rich draws as on
    one), nowhere in a pipe; stdout holds the result line alone. It was drawn on stdout, and
    printed there once finished in a pipe (``kdseg-phantom ... > out.txt``)."""
    from conftest import TINY_PHANTOM, kdseg

    args = ["dataset=lits", "n_cases=1", "seed=1", TINY_PHANTOM]
    done = kdseg("phantom", f"root={tmp_path / 'piped'}", *args)
    assert (done.stdout, done.stderr) == (f"1 lits phantom case(s) in {tmp_path / 'piped'}\n", "")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    done = kdseg("phantom", f"root={tmp_path / 'drawn'}", *args)
    assert done.stdout == f"1 lits phantom case(s) in {tmp_path / 'drawn'}\n"
    assert "phantom lits" in done.stderr and "1/1" in done.stderr


@pytest.mark.parametrize("kind", ["rich", "tqdm"])
def test_training_progress_bar_is_on_stderr(kind: str, capsys) -> None:
    """Lightning draws its bars on stdout (rich's default console, tqdm's ``file=sys.stdout``);
    kdseg's bars, rich (the default) and tqdm, draw on stderr."""
    import pytorch_lightning as pl
    from pytorch_lightning.demos.boring_classes import BoringModel

    from kdseg.lit.callbacks import QuietRichProgressBar, QuietTQDMProgressBar, progress_bar

    assert isinstance(progress_bar(), QuietRichProgressBar)
    bar = QuietRichProgressBar() if kind == "rich" else QuietTQDMProgressBar()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
    )
    trainer.fit(BoringModel())
    out, err = capsys.readouterr()
    assert "Epoch 0" not in out and "Validation" not in out, out
    assert "Epoch 0" in err, err


def test_a_one_shot_sweep_heads_every_job_with_its_overrides(
    phantom_lits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-shot command's sweep (``kdseg-split -m ... data.split_seed=1,2``) heads each
    job's result with Hydra's ``#n : <overrides>`` line: job #0's (and "Launching 2 jobs")
    were logged before any console was set up and lost, so the first result had no header
    while the second had one. A single run prints no Hydra line."""
    from conftest import kdseg_here

    root, sweep = f"data.root={phantom_lits}", f"hydra.sweep.dir={tmp_path / 'sweep'}"
    monkeypatch.setenv("KDSEG_CACHE_DIR", str(tmp_path / "cache"))
    result = kdseg_here("split", "-m", root, "data.split_seed=1,2", sweep, cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert lines[0] == "Launching 2 jobs locally", result.stdout
    assert lines[1].strip() == f"#0 : {root} data.split_seed=1"
    assert "kdseg_split-seed1.json" in lines[2] and lines[3].strip().startswith("#1 : ")
    single = kdseg_here("split", root, "data.split_seed=3", cwd=tmp_path)
    assert single.stdout.count("\n") == 1 and "kdseg_split-seed3.json" in single.stdout
