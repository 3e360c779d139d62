"""Bad input: one line naming the file, exit code 2, no traceback, nothing half-written.

The table of bad inputs and faults is ``tests/test_fault_corpus.py``; here: the helpers it
relies on (output guard, atomic writes and their cleanup, the SIGTERM handler) in isolation.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from kdseg.errors import InputError


def _run(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` (``kdseg-<name>``) run in this process (conftest.kdseg_here), in ``cwd``."""
    from conftest import kdseg_here

    return kdseg_here(command.removeprefix("kdseg-"), *args, cwd=cwd, check=False)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _run("kdseg-prepare", f"data.root={tmp_path / 'empty'}", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        "empty" in result.stderr
        and "no cases" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_truncated_gzip_is_detected_by_loader(tmp_path: Path) -> None:
    from kdseg.data.io import load_volume

    path = tmp_path / "v.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(InputError, match="v.nii.gz"):
        load_volume(path)


REAL_CT = Path(__file__).parent / "data" / "real_ct" / "ct.nii.gz"


@pytest.mark.parametrize("keep", [1000, 100_000, 300_000, -310, -4])
def test_cut_nii_gz_is_named_truncated_not_padded(tmp_path: Path, keep: int) -> None:
    """A .nii.gz cut short (a copy that stopped) ends in compressed data, whose last four bytes
    the padding check read as the gzip trailer's size: it was refused as "decompresses to
    3,749,368,263 bytes more than its header's image", a number the file never held."""
    from kdseg.data.io import load_volume

    path = tmp_path / "ct.nii.gz"
    path.write_bytes(REAL_CT.read_bytes()[:keep])
    with pytest.raises(InputError, match="ct.nii.gz") as refused:
        load_volume(path)
    assert "ends before its end marker; truncated" in str(refused.value), str(refused.value)
    assert "more than its header" not in str(refused.value)


def test_padded_or_corrupt_nii_gz_keeps_its_own_message(tmp_path: Path) -> None:
    """The same check still names a stream padded after its image (with the real count), a
    stream whose data was damaged, and reads a whole multi-member gzip file."""
    from kdseg.data.io import load_volume

    raw = gzip.decompress(REAL_CT.read_bytes())
    padded = tmp_path / "padded.nii.gz"
    padded.write_bytes(gzip.compress(raw + bytes(8 << 20)))
    with pytest.raises(InputError, match="8,388,608 bytes more than its header"):
        load_volume(padded)
    cut = bytearray(REAL_CT.read_bytes())  # a damaged block, then the original trailer
    cut[200_000:200_010] = bytes(10)
    damaged = tmp_path / "damaged.nii.gz"
    damaged.write_bytes(bytes(cut))
    with pytest.raises(InputError, match="damaged.nii.gz"):
        load_volume(damaged)
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    assert load_volume(multi).shape == (122, 101, 30)


def test_bytes_after_a_whole_nii_gz_stream(tmp_path: Path) -> None:
    """Bytes after the stream's end shift the four bytes the padding check reads as its size.
    Garbage there is a damaged file, named so by zlib; one to three NUL bytes (which gzip
    readers skip) leave a whole stream that is read as it is."""
    from kdseg.data.io import load_volume

    whole = REAL_CT.read_bytes()
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(whole + b"\xff" * 16)
    with pytest.raises(InputError, match="garbage.nii.gz") as refused:
        load_volume(garbage)
    assert "gzip stream is corrupt" in str(refused.value), str(refused.value)
    for n in (1, 3):
        padded = tmp_path / f"nul{n}.nii.gz"
        padded.write_bytes(whole + bytes(n))
        assert load_volume(padded).shape == (122, 101, 30)


def test_guard_refuses_outputs_over_or_inside_inputs(tmp_path: Path) -> None:
    from kdseg.guards import check_output, check_outputs

    scans = tmp_path / "scans"
    scans.mkdir()
    ct = scans / "ct.nii.gz"
    ct.write_bytes(b"x")
    (tmp_path / "link.nii.gz").symlink_to(ct)
    for target, inputs, folder, what in [
        (ct, [ct], False, "input file itself"),
        (tmp_path / "link.nii.gz", [ct], False, "input file itself"),  # the same file, linked
        (scans / ".." / "scans" / "ct.nii.gz", [ct], False, "input file itself"),
        (scans, [scans], True, "input folder itself"),
        (scans / "pred" / "p.nii.gz", [scans], False, "inside the input folder"),
        (ct / "p.nii.gz", [], False, "is a file, not a folder"),
        (scans, [], False, "existing folder where a file"),
        (ct, [], True, "existing file where a folder"),
    ]:
        with pytest.raises(InputError, match=what):
            check_output(target, inputs, folder=folder)
    assert check_output(tmp_path / "out" / "p.nii.gz", [ct, scans]) == tmp_path / "out/p.nii.gz"
    with pytest.raises(InputError, match="same output"):
        check_outputs([tmp_path / "a.nii.gz", tmp_path / "b" / ".." / "a.nii.gz"])
    assert not (tmp_path / "out").exists()  # checking creates nothing


def test_atomic_group_leaves_nothing_on_failure_and_commits_the_last_file_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kdseg.errors as errors

    report, label = tmp_path / "p.lesions.json", tmp_path / "p.nii.gz"
    with pytest.raises(RuntimeError), errors.atomic_group([report, label]) as temps:
        temps[0].write_text("{}")
        raise RuntimeError("killed while writing")
    assert not list(tmp_path.iterdir())
    order = []
    real_commit = errors._commit

    def failing_commit(tmp: Path, target: Path) -> None:
        order.append(target.name)
        if target == label:
            raise OSError("disk full")
        real_commit(tmp, target)

    monkeypatch.setattr(errors, "_commit", failing_commit)
    with pytest.raises(OSError), errors.atomic_group([report, label]) as temps:
        for tmp in temps:
            tmp.write_text("data")
    assert order == ["p.lesions.json", "p.nii.gz"]  # the report first, the label last
    assert not list(tmp_path.iterdir())  # the report renamed first was removed again
    # a rerun over an earlier run's pair that fails the same way leaves that pair as it was
    report.write_text("old report")
    label.write_text("old label")
    with pytest.raises(OSError), errors.atomic_group([report, label]) as temps:
        for tmp in temps:
            tmp.write_text("new")
    assert report.read_text() == "old report" and label.read_text() == "old label"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.lesions.json", "p.nii.gz"]
    monkeypatch.setattr(errors, "_commit", real_commit)
    with errors.atomic_group([report, label]) as temps:
        for tmp in temps:
            tmp.write_text("new")
    assert report.read_text() == "new" and label.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.lesions.json", "p.nii.gz"]


def test_atomic_group_removes_stale_files_only_once_the_label_has_landed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``remove``: an earlier run's report that this run does not write goes after the label's
    rename, never before it; when the group fails, it is there as it was."""
    import kdseg.errors as errors

    label, stale = tmp_path / "p.nii.gz", tmp_path / "p.lesions.json"
    label.write_text("old label")
    stale.write_text("old report")
    real_commit = errors._commit

    def failing_commit(tmp: Path, target: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(errors, "_commit", failing_commit)
    with pytest.raises(OSError), errors.atomic_group([label], remove=[stale]) as temps:
        temps[0].write_text("new")
    assert label.read_text() == "old label" and stale.read_text() == "old report"
    monkeypatch.setattr(errors, "_commit", real_commit)
    real_unlink = Path.unlink

    def failing_unlink(path: Path, missing_ok: bool = False) -> None:
        if path == stale:
            raise OSError("read-only")
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", failing_unlink)
    with pytest.raises(OSError), errors.atomic_group([label], remove=[stale]) as temps:
        temps[0].write_text("new")
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert label.read_text() == "old label" and stale.read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.lesions.json", "p.nii.gz"]
    with errors.atomic_group([label], remove=[stale, tmp_path / "p.png"]) as temps:
        temps[0].write_text("new")
    assert label.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == [label.name]


def test_a_full_disk_is_one_line_naming_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """No space, a quota or a read-only folder while writing: the OSError (still one, for
    callers that handle it) names the file, and the command line reports it as one line
    naming that output, exit code 2; nothing is left. Any other OSError is an internal error."""
    import errno

    import kdseg.errors as errors
    from kdseg.cli.boundary import report

    def full(tmp: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(errors, "_commit", full)
    label = tmp_path / "p.nii.gz"
    with pytest.raises(OSError) as caught:
        with errors.atomic_group([tmp_path / "p.lesions.json", label]) as temps:
            for tmp in temps:
                tmp.write_text("data")
    assert caught.value.filename == str(label)
    assert report("kdseg-predict", caught.value, verbose=False) == 2
    line = capsys.readouterr().err.strip()
    assert line == f"kdseg-predict: error: {label}: cannot write it (No space left on device)"
    with pytest.raises(OSError) as caught, errors.atomic_path(tmp_path / "one.json"):
        raise OSError(errno.EIO, "I/O error")
    assert report("kdseg-predict", caught.value, verbose=False) == 1
    assert "internal error" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_reader_that_leaves_is_not_an_internal_error() -> None:
    """``kdseg-predict ... | head``: a closed pipe exits 141 (as SIGPIPE would) without an
    error line or Python's own complaint at exit."""
    script = (
        "import sys\n"
        "from kdseg.cli.boundary import report\n"
        "sys.exit(report('kdseg-predict', BrokenPipeError(32, 'Broken pipe'), verbose=False))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 141 and done.stderr == "", done.stderr


def _communicate(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """``proc.communicate(timeout)``, and on a timeout the child killed (its process group
    when it leads one) before the test fails: a child that missed its signal outlived the
    suite."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.communicate()
        raise


def _child(script: str, **popen: Any) -> subprocess.Popen:
    """``python -c script`` with text pipes, and SIGHUP's default action in the child whatever
    the suite inherited: under ``nohup`` (a suite run in the background) it is ignored, the
    child inherits that, and kdseg rightly leaves an ignored SIGHUP ignored, so the hang-up
    tests waited for a process that never stopped."""
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
        **popen,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_sigterm_runs_cleanup(tmp_path: Path, signum: int) -> None:
    """A real SIGTERM to a process inside an atomic write: it exits 143, temporaries gone. The
    same for SIGHUP (an SSH session that drops), which ended the process with its temporaries."""
    files = [str(tmp_path / "p.lesions.json"), str(tmp_path / "p.nii.gz")]
    script = f"""
import sys, time
from pathlib import Path
from kdseg.cli.boundary import install_signal_handlers, report
from kdseg.errors import atomic_group
install_signal_handlers()
try:
    with atomic_group([Path(f) for f in {files!r}]) as temps:
        for t in temps:
            t.write_text("partial")
        print("ready", flush=True)
        time.sleep(60)
except BaseException as exc:
    sys.exit(report("kdseg-predict", exc, verbose=False))
"""
    proc = _child(script)
    assert proc.stdout.readline().strip() == "ready"
    assert len(list(tmp_path.iterdir())) == 2  # the two temporaries exist now
    proc.send_signal(signum)
    _, err = _communicate(proc, timeout=30)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum and len(err.strip().splitlines()) == 1, err
    assert f"terminated ({name}); unfinished outputs removed" in err
    assert not list(tmp_path.iterdir())


#: a child script's loader: persistent workers with kdseg's worker init, slow items
SLOW_LOADER = """
import sys, time
import torch
from torch.utils.data import DataLoader, Dataset
from kdseg.data.resumable import worker_signals

class Slow(Dataset):
    def __len__(self):
        return 10**6
    def __getitem__(self, i):
        time.sleep(0.02)
        return torch.zeros(4)

def slow_loader():
    return DataLoader(Slow(), batch_size=2, num_workers=2, persistent_workers=True,
                      worker_init_fn=lambda _: worker_signals())
"""


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM], ids=["HUP", "TERM"])
def test_a_signal_to_the_process_group_with_loader_workers_is_one_line(
    tmp_path: Path, signum: int
) -> None:
    """A hang-up (or ``kill -- -pgid``) reaches the loader workers too: they leave stopping to
    the main process (kdseg's worker init), which exits 128 + signal with its one line; the
    workers used to die with the commands' handlers, and torch's worker check raised over it."""
    script = (
        SLOW_LOADER
        + """
from kdseg.cli.boundary import app_guard

def app():
    for n, _ in enumerate(slow_loader()):
        if n == 3:
            print("started", flush=True)

sys.argv[0] = "kdseg-train"
app_guard("kdseg-train", app)()
"""
    )
    proc = _child(script, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.3)
    os.killpg(proc.pid, signum)
    _, err = _communicate(proc, timeout=60)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    assert len(err.strip().splitlines()) == 1 and f"terminated ({name})" in err, err


def test_loader_workers_left_running_at_exit_do_not_hold_it_up() -> None:
    """A stop that skips the loader's teardown leaves its persistent workers to
    multiprocessing's exit handler, which ends them with SIGTERM and waits: workers that
    ignored SIGTERM kept the process waiting for ever (after an SSH drop, for instance)."""
    script = (
        SLOW_LOADER
        + """
batches = iter(slow_loader())
next(batches)
print("started", flush=True)
sys.exit(0)
"""
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=90, env=env
    )
    assert done.returncode == 0 and done.stdout.strip() == "started", done.stderr


def test_a_terminal_error_while_stopping_reports_the_stop() -> None:
    """After a hang-up, Lightning's progress bar writes to the terminal that is gone while
    handling the stop: the EIO error it raises is reported as the hang-up (exit 129), not as
    an internal error (exit 1)."""
    from kdseg.cli.boundary import Terminated, report

    try:
        try:
            raise Terminated(signal.SIGHUP)
        except Terminated:
            raise OSError(5, "Input/output error") from None
    except OSError as exc:
        caught = exc
    assert isinstance(caught.__context__, Terminated)
    with mock.patch.object(sys, "stderr", new=io.StringIO()) as err:
        code = report("kdseg-train", caught, verbose=False)
    assert code == 128 + signal.SIGHUP
    assert "terminated (SIGHUP)" in err.getvalue() and "internal error" not in err.getvalue()
    other = OSError(5, "Input/output error")  # no stop behind it: still an internal error
    with mock.patch.object(sys, "stderr", new=io.StringIO()):
        assert report("kdseg-train", other, verbose=False) == 1


def test_the_stop_line_reaches_the_run_log_when_the_terminal_is_gone(tmp_path: Path) -> None:
    """After a hang-up the terminal is gone and printing the error line fails (EIO; EPIPE
    under a killed ``| tee``): the line still goes to the run's log file, and the exit code
    is the signal's, not 1 from an error inside the error report."""
    import logging

    from kdseg.cli.boundary import Terminated, report

    log = tmp_path / "train.log"
    handler = logging.FileHandler(log)
    root = logging.getLogger()
    root.addHandler(handler)

    class Gone:
        def write(self, text: str) -> int:
            raise OSError(5, "Input/output error")

        def flush(self) -> None:
            raise OSError(5, "Input/output error")

    try:
        with mock.patch.object(sys, "stderr", Gone()):
            code = report("kdseg-train", Terminated(signal.SIGHUP), verbose=False)
    finally:
        root.removeHandler(handler)
        handler.close()
    assert code == 128 + signal.SIGHUP
    assert "kdseg-train: error: terminated (SIGHUP)" in log.read_text()


def test_an_interrupted_training_run_says_how_to_resume_it(tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM in a training run that has written a checkpoint: the line names the
    run dir to rerun in (the default one is time-stamped, so the same command alone would
    start a new run), or the sweep dir of a multirun; nothing where there is no checkpoint."""
    from kdseg.cli.boundary import resume_words

    run = tmp_path / "runs" / "train" / "enet-lits-20261207-103409"
    (run / "checkpoints").mkdir(parents=True)
    assert resume_words(run) == ""  # killed before its first checkpoint: nothing to resume
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    told = resume_words(run)
    assert told == f"; to resume, rerun the same command with hydra.run.dir={run}"
    sweep = tmp_path / "runs" / "train-multirun" / "20261207-103409"
    assert resume_words(run, str(sweep)).endswith(f"with hydra.sweep.dir={sweep}")
    spaced = tmp_path / "my runs"
    (spaced / "checkpoints").mkdir(parents=True)
    (spaced / "checkpoints" / "last-previous.ckpt").write_bytes(b"x")
    assert resume_words(spaced).endswith(f"with 'hydra.run.dir={spaced}'")  # pastes as is


def test_the_error_line_goes_to_the_run_log_too(tmp_path: Path) -> None:
    """train.log of a killed and resumed run showed the resume but not the kill: the line
    that ended the process is in the run's log file as well as on stderr."""
    import logging

    from kdseg.cli.boundary import Interrupted, report

    handler = logging.FileHandler(tmp_path / "train.log")
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        assert report("kdseg-train", Interrupted(2), verbose=False) == 130
        assert report("kdseg-train", InputError(tmp_path / "x.ckpt", "corrupt"), False) == 2
    finally:
        root.removeHandler(handler)
        handler.close()
    logged = (tmp_path / "train.log").read_text().splitlines()
    assert logged[0].startswith("kdseg-train: error: interrupted"), logged
    assert logged[1] == f"kdseg-train: error: {tmp_path / 'x.ckpt'}: corrupt", logged


def test_truncated_last_checkpoint_falls_back_to_the_previous_one(
    trained_enet: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from kdseg.lit.resume import find_resume

    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    good = (trained_enet / "checkpoints" / "last.ckpt").read_bytes()
    (ckpts / "last-previous.ckpt").write_bytes(good)
    (ckpts / "last.ckpt").write_bytes(good[: len(good) // 2])  # killed while writing
    assert find_resume(tmp_path, None) == str(ckpts / "last-previous.ckpt")
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "last.ckpt" in warning[0] and "last-previous" in warning[0]
    (ckpts / "last-previous.ckpt").unlink()
    with pytest.raises(InputError, match="cannot resume"):
        find_resume(tmp_path, None)
    (ckpts / "last.ckpt").write_bytes(good)
    assert find_resume(tmp_path, None) == str(ckpts / "last.ckpt")
    (tmp_path / "other.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="unreadable"):
        find_resume(tmp_path, str(tmp_path / "other.ckpt"))  # an explicit resume= is refused


def test_a_resume_checkpoint_with_nan_weights_or_no_good_state_is_refused_in_one_line(
    trained_enet: Path, tmp_path: Path
) -> None:
    """A last.ckpt (or resume=) with NaN weights is refused naming it, before any step: the
    resumed run stopped at its first step (exit 1), pointing back at that same checkpoint. A
    last-previous.ckpt alone (killed between the rotation's rename and the save) that does not
    load is refused too: the run started afresh and threw its log away. A state_dict that is
    not tensors is not a training checkpoint."""
    import torch

    from kdseg.lit.resume import find_resume

    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    good = torch.load(trained_enet / "checkpoints" / "last.ckpt", weights_only=True)
    bad = dict(good, state_dict=dict(good["state_dict"]))
    name = next(k for k, v in bad["state_dict"].items() if v.is_floating_point())
    bad["state_dict"][name] = bad["state_dict"][name].clone()
    bad["state_dict"][name].view(-1)[0] = float("inf")
    torch.save(bad, ckpts / "last.ckpt")
    torch.save(good, ckpts / "last-previous.ckpt")
    with pytest.raises(InputError, match="cannot resume: 1 NaN or Inf weight") as err:
        find_resume(tmp_path, None)
    assert err.value.path == str(ckpts / "last.ckpt") and name in err.value.message
    assert "pass resume=PATH" in err.value.message  # the way on: an earlier checkpoint
    with pytest.raises(InputError, match="NaN or Inf") as err:
        find_resume(tmp_path / "elsewhere", str(ckpts / "last.ckpt"))
    assert err.value.path == str(ckpts / "last.ckpt")
    (ckpts / "last.ckpt").unlink()
    assert find_resume(tmp_path, None) == str(ckpts / "last-previous.ckpt")  # rotated, not saved
    (ckpts / "last-previous.ckpt").write_bytes(b"cut short")
    with pytest.raises(InputError, match="cannot resume: unreadable") as err:
        find_resume(tmp_path, None)  # was: None, a fresh run over the run's log
    assert err.value.path == str(ckpts / "last-previous.ckpt")
    torch.save(dict(good, state_dict={"net.x": "not a tensor"}), tmp_path / "odd.ckpt")
    with pytest.raises(InputError, match="state_dict is not a set of tensors"):
        find_resume(tmp_path, str(tmp_path / "odd.ckpt"))


def test_a_resume_reads_its_checkpoint_once_in_kdseg(
    trained_enet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Choosing the checkpoint, its NaN check and the resume step each read it in full
    (torch.load: the optimizer's state too), Lightning a fourth time: now kdseg reads it once
    and checks that, and a refusal is as it was."""
    import torch

    from kdseg.lit.resume import open_resume

    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    good = (trained_enet / "checkpoints" / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(good)
    step = torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"]
    loads: list[str] = []
    load = torch.load

    def counted(path, *args, **kwargs):
        loads.append(str(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    assert open_resume(tmp_path, None) == (str(ckpts / "last.ckpt"), step)
    assert loads == [str(ckpts / "last.ckpt")]
    loads.clear()
    assert open_resume(tmp_path / "elsewhere", str(ckpts / "last.ckpt"))[1] == step
    assert len(loads) == 1
    loads.clear()
    assert open_resume(tmp_path / "fresh", None) == (None, None) and not loads
    (ckpts / "last-previous.ckpt").write_bytes(good)
    (ckpts / "last.ckpt").write_bytes(good[: len(good) // 2])  # killed while writing
    assert open_resume(tmp_path, None) == (str(ckpts / "last-previous.ckpt"), step)
    assert loads == [str(ckpts / "last.ckpt"), str(ckpts / "last-previous.ckpt")]
    bad = load(ckpts / "last-previous.ckpt", weights_only=True)
    name = next(k for k, v in bad["state_dict"].items() if v.is_floating_point())
    bad["state_dict"][name].view(-1)[0] = float("nan")
    torch.save(bad, ckpts / "last.ckpt")
    with pytest.raises(InputError, match="cannot resume: 1 NaN or Inf weight"):
        open_resume(tmp_path, None)  # the weights checked are those that were read


def test_a_checkpoint_is_written_beside_its_target_and_a_failed_save_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning stages checkpoints in $TMPDIR (a copy, not a rename, on another filesystem);
    kdseg's writer stages them in the checkpoint's folder, and a save that dies leaves the
    previous checkpoint whole and no temporary behind."""
    import tempfile

    import torch

    from kdseg.lit.resume import AtomicCheckpointIO

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmpdir"))  # unusable
    target = tmp_path / "checkpoints" / "best.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, target)
    assert torch.load(target, weights_only=True)["step"] == 1

    def dies(obj: object, path: object) -> None:
        Path(str(path)).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    assert torch.load(target, weights_only=True)["step"] == 1
    assert [p.name for p in target.parent.iterdir()] == ["best.ckpt"]


def test_a_moved_run_folder_keeps_its_best_score(trained_enet: Path, tmp_path: Path) -> None:
    """A run folder moved (or copied) elsewhere resumes with its best score and files, so a
    worse validation cannot replace its ``best.ckpt``; a ``resume=`` from another run's
    checkpoint starts this run's best afresh. Both quietly, under the state keys that runs
    saved before ``MovableCheckpoint`` used."""
    import shutil
    import warnings

    import torch

    from kdseg.lit.resume import MovableCheckpoint, RotatingCheckpoint

    ckpt = torch.load(trained_enet / "checkpoints" / "last.ckpt", weights_only=True)
    states = ckpt["callbacks"]
    moved = tmp_path / "moved" / "checkpoints"
    shutil.copytree(trained_enet / "checkpoints", moved)
    best = MovableCheckpoint(dirpath=moved, filename="best", monitor="val/dice_mean", mode="max")
    last = RotatingCheckpoint(dirpath=moved, filename="last", monitor=None)
    for callback in (best, last):
        assert callback.state_key in states  # the keys plain ModelCheckpoint runs saved
    saved = states[best.state_key]
    assert saved["dirpath"] != str(moved) and saved["best_model_score"] is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        best.load_state_dict(states[best.state_key])
        last.load_state_dict(states[last.state_key])
    assert float(best.best_model_score) == float(saved["best_model_score"])
    assert best.best_model_path == str(moved / "best.ckpt")
    assert list(best.best_k_models) == [str(moved / "best.ckpt")]
    assert last.best_model_path == str(moved / "last.ckpt")

    other = tmp_path / "other" / "checkpoints"  # resume= from trained_enet into a new run
    other.mkdir(parents=True)
    fresh = MovableCheckpoint(dirpath=other, filename="best", monitor="val/dice_mean", mode="max")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.load_state_dict(saved)
    assert fresh.best_model_score is None and fresh.best_model_path == ""


def test_one_shot_compose_equals_the_hydra_app_config() -> None:
    """``kdseg-predict`` with plain ``key=value`` overrides composes its config once through
    Hydra's Compose API: the same config the Hydra app builds, option types still checked;
    anything else (flags, ``+``/``~``, ``hydra.*``) goes to the app."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from kdseg.cli.options import CONFIG_PATH, compose_once, plain_overrides

    args = ["ckpt=[a.ckpt,b.ckpt]", "input=in.nii.gz", "output=out", "threads=2", "report=false"]
    assert plain_overrides(args) and plain_overrides([])
    for extra in ("--cfg", "-m", "+x=1", "~report", "hydra.run.dir=x", "hydra/launcher=basic"):
        assert not plain_overrides([*args, extra])
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # compose_once sets up the stdout job logging, as the app does: undo it afterwards
        got = compose_once("predict", args)
        with pytest.raises(InputError, match="report=maybe: expected true or false"):
            compose_once("predict", [*args[:-1], "report=maybe"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_PATH, job_name="predict"):
        want = compose("predict", overrides=args)
    assert OmegaConf.to_container(got) == OmegaConf.to_container(want)
    assert list(got.ckpt) == ["a.ckpt", "b.ckpt"] and got.report is False


@pytest.mark.parametrize(
    "args",
    [
        ["ckpt=[a.ckpt,b.ckpt]", "input=in.nii.gz", "output=out", "threads=2", "report=false"],
        ["ckpt=null", "artifact='my model.onnx'", "backend=onnx", "input=/a/b-1.2.nii.gz"],
        ["ckpt=x.ckpt", "threshold=4e-1", "batch_size=8", "verbose=True", "output=o.nii.gz"],
    ],
)
def test_flat_config_equals_hydra_compose(args: list[str]) -> None:
    """A config that only includes itself (``predict``) is read without Hydra's composition:
    the same values and types Hydra composes, in struct mode; anything that is not a plain
    change of an existing key (or a config with real defaults) is left to Hydra."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from kdseg.cli.options import CONFIG_PATH, _flat_config

    got = _flat_config("predict", args)
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_PATH, job_name="predict"):
        want = compose("predict", overrides=args)
    assert got is not None and OmegaConf.is_struct(got)
    assert OmegaConf.to_container(got) == OmegaConf.to_container(want)
    assert _flat_config("predict", [*args, "unknown=1"]) is None
    assert _flat_config("predict", [*args, "report=["]) is None
    assert _flat_config("predict", [*args, "threads=1,2"]) is None  # a sweep
    assert _flat_config("train", []) is None  # real defaults: Hydra composes


@pytest.mark.parametrize(
    "name", ["CT scan (1).nii.gz", "a,b.nii.gz", "x=y [2].nii", "Bäcker's.nii"]
)
def test_a_file_name_hydra_would_parse_is_read_as_written(tmp_path: Path, name: str) -> None:
    """Parentheses, commas, ``=``, brackets, apostrophes and letters outside ASCII in a path
    were a Hydra grammar error ("mismatched input ' ('") or a sweep; now the value is the path:
    here the error names the file, not found."""
    from kdseg.cli.options import quote_paths

    scan = tmp_path / "scans" / name
    args = [
        "ckpt=null",
        f"artifact={tmp_path}/m.onnx",
        f"input={scan}",
        f"output={tmp_path}/o (2)/",
    ]
    result = _run("kdseg-predict", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"kdseg-predict: error: {scan}: input not found"
    ], result.stderr
    kept = ["ckpt=[a.ckpt,b (1).ckpt]", "input='x (1).nii'", "threads=1,2", "output=a,b"]
    assert quote_paths(kept[:3], ("ckpt", "input")) == kept[:3]  # lists, quoted, not paths
    assert quote_paths(["-m", kept[3]], ("output",)) == ["-m", kept[3]]  # a sweep under -m
    assert quote_paths([kept[3]], ("output",)) == ["output='a,b'"]


def test_a_file_name_hydra_would_read_as_a_number_or_null_is_a_path(tmp_path: Path) -> None:
    """``input=1e3`` (a file named ``1e3``), ``input=123``, ``input=true`` or ``input=null``
    was an internal TypeError: Hydra read a float, an int, a bool or None. Now the value is
    the path; ``ckpt=null`` and ``artifact=null`` stay null (the options take it), and so does
    everything under ``hydra.mode=MULTIRUN`` as under ``-m`` (``ckpt=a,b`` is a sweep)."""
    from kdseg.cli.options import quote_paths

    for name in ("1e3", "123", "true", "null"):
        result = _run(
            "kdseg-predict", "ckpt=null", "artifact=m.onnx", f"input={name}", "output=o/",
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"kdseg-predict: error: {name}: input not found"
        ], result.stderr
    keys, nullable = ("input", "output", "ckpt", "artifact"), ("ckpt", "artifact")
    argv = ["ckpt=null", "artifact=null", "input=1e3", "output=null", "threads=1"]
    assert quote_paths(argv, keys, nullable) == [
        "ckpt=null", "artifact=null", "input='1e3'", "output='null'", "threads=1"
    ]  # fmt: skip
    assert quote_paths(["ckpt=5", "artifact=false"], keys, nullable) == [
        "ckpt='5'", "artifact='false'"
    ]  # fmt: skip
    for mode in ("hydra.mode=MULTIRUN", "hydra.mode=RunMode.MULTIRUN", "++hydra.mode=MULTIRUN"):
        swept = [mode, "ckpt=a,b", "input=1e3"]
        assert quote_paths(swept, keys, nullable) == swept
    assert quote_paths(["hydra.mode=RUN", "ckpt=a,b"], keys, nullable) == [
        "hydra.mode=RUN", "ckpt='a,b'"
    ]  # fmt: skip


def test_a_new_key_or_clashing_hydra_flags_are_one_line(tmp_path: Path) -> None:
    """``+thresold=0.5`` would add a key kdseg-predict never reads; ``-m`` with ``--cfg`` is
    Hydra's own refusal. Both: one line, exit 2, no traceback; training configs take new keys
    (``+distill.mix=cutmix``) and are not affected."""
    from conftest import kdseg_here

    from kdseg.cli.options import check_no_new_keys

    typo = kdseg_here("predict", "ckpt=a.ckpt", "input=b", "output=c", "+thresold=0.5",
                      cwd=tmp_path, check=False)  # fmt: skip
    flags = kdseg_here("eval", "-m", "seed=1,2", "--cfg", "job", cwd=tmp_path, check=False)
    for result, words in ((typo, "has no option 'thresold'"), (flags, "Only one of")):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and words in lines[0], result.stderr
    check_no_new_keys("distill", ["+distill.mix=cutmix"])
    refused = kdseg_here("eval", "ckpt=missing.ckpt", cwd=tmp_path, check=False)
    assert refused.returncode == 2, refused.stderr
    assert tmp_path.is_dir() and not any(tmp_path.iterdir())  # its (empty) folder stays


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_verbose_is_read_as_the_option_check_reads_it(tmp_path: Path, command: str) -> None:
    """``verbose=yes`` was taken as true by the boundary (a traceback printed) and then refused
    by the option check: now both read Hydra's truth value alone, so ``yes`` is the one line
    and ``TRUE`` (Hydra's true in capitals) shows the traceback before the error line."""
    from kdseg.cli.boundary import _argv_verbose

    args = ["ckpt=missing.ckpt", *(["input=b", "output=c"] if command == "predict" else [])]
    for how in ("--hydra", "one-shot"):  # predict: an extra flag goes through the Hydra app
        extra = ["hydra.job.chdir=false"] if how == "--hydra" else []
        yes = _run(f"kdseg-{command}", *args, *extra, "verbose=yes", cwd=tmp_path)
        assert yes.returncode == 2 and "Traceback" not in yes.stderr, yes.stderr
        assert yes.stderr.strip().splitlines() == [
            f"kdseg-{command}: error: verbose=yes: expected true or false"
        ]
    loud = _run(f"kdseg-{command}", *args, "verbose=TRUE", cwd=tmp_path)
    assert loud.returncode == 2 and "Traceback" in loud.stderr, loud.stderr
    assert not any(tmp_path.iterdir())
    assert _argv_verbose(["verbose=true"]) and _argv_verbose(["+verbose=True"])
    assert not any(_argv_verbose([f"verbose={v}"]) for v in ("yes", "1", "on", "'true'", "false"))


def test_an_unknown_config_choice_is_one_short_line_with_the_close_one(tmp_path: Path) -> None:
    """``model=enett``: Hydra's refusal, joined into one line, ended with its config search
    path (``provider=hydra, path=pkg://hydra.conf ...``); now the choices and the close one."""
    from conftest import kdseg_here

    result = kdseg_here("train", "model=enett", cwd=tmp_path, check=False)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("kdseg-train: error: model=enett: no model config of that name")
    assert "did you mean model=enet? choices: enet, mobilenetv2," in lines[0]
    assert "provider=" not in lines[0] and "search path" not in lines[0]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("command", "override", "words"),
    [
        ("train", "+data.batchsize=4", "'data.batchsize' to add (did you mean data.batch_size=?)"),
        ("train", "+loss.tversky=1", "no option 'loss.tversky' to add"),
        ("train", "+model.widht=0.5", "did you mean model.width=?"),  # once: a TypeError, exit 1
        ("train", "+checkpoint.every_n_steps=3", "no option 'checkpoint.every_n_steps' to add"),
        ("distill", "+logger.wandb.ofline=false", "did you mean logger.wandb.offline=?"),
        ("distill", "+student.widht=0.5", "did you mean student.width=?"),
        ("distill", "+data.preprocess.windw=[0,1]", "did you mean data.preprocess.window=?"),
    ],
)  # fmt: skip
def test_a_new_key_a_training_command_never_reads_is_refused(
    command: str, override: str, words: str
) -> None:
    """Training configs take new keys where they are read and checked (Lightning's Trainer
    arguments, a method's criterion options); elsewhere ``+data.batchsize=4`` trained with
    the default batch size without a word."""
    from kdseg.cli.options import check_no_new_keys

    with pytest.raises(InputError, match=re.escape(words)):
        check_no_new_keys(command, [override])
    check_no_new_keys(command, ["+trainer.limit_train_batches=2", "+distill.warmup=0.1"])
    check_no_new_keys(command, ["+experiment=demo", "hydra/launcher=basic", "data.root=x"])


def test_a_new_model_key_is_checked_against_the_chosen_model_not_all_of_them() -> None:
    """``kdseg-train model=raunet +model.base=32``: ``base`` is an option of ``unetpp`` alone,
    but the check took the keys of every model file, so it passed and the run failed as an
    internal TypeError inside RAUNet's constructor. Now the chosen model's own file decides,
    and the constructor refuses a key it lacks (an experiment file that sets one) as one line."""
    from kdseg.cli.options import check_no_new_keys, unknown_option
    from kdseg.models import build_from_config

    cases = [
        ("train", "+model.base=32", {"model": "raunet"}, "model=raunet has no option 'model.base'"),
        ("train", "+model.widht=1", {"model": "raunet"}, "did you mean model.width=?"),
        ("distill", "+student.base=32", {"student": "enet"}, "student=enet has no option"),
        ("distill", "+student.bins=[1]", {"student": "enet"}, "'student.bins' to add"),
    ]  # fmt: skip
    for command, override, choices, words in cases:
        with pytest.raises(InputError, match=re.escape(words)) as refused:
            check_no_new_keys(command, [override], choices)
        assert "did you mean model.base" not in str(refused.value)
    check_no_new_keys("train", ["+trainer.limit_train_batches=2"], {"model": "raunet"})
    hydra = "Could not override 'model.base'. To append to your config use +model.base=32"
    told = str(unknown_option(hydra, "train"))  # `model=raunet model.base=32`
    assert "did you mean model.base" not in told and "model=unetpp" in told, told
    config = {"name": "raunet", "in_channels": 1, "num_classes": 2, "base": 32}
    with pytest.raises(InputError, match=re.escape("model raunet has no option 'base'")):
        build_from_config(config)


def test_an_unknown_option_names_the_close_one_not_hydras_plus_advice(tmp_path: Path) -> None:
    """``treshold=0.5`` (no ``+``) got Hydra's "To append to your config use +treshold=0.5",
    which kdseg-predict and kdseg-eval then refuse in turn (they read only their own keys):
    the line names the option meant instead. Training configs, which take new keys, keep the
    ``+`` advice beside the suggestion."""
    from conftest import kdseg_here

    from kdseg.cli.options import unknown_option

    cases = [
        ("predict", "treshold=0.5", "no option 'treshold' (did you mean threshold=?)"),
        ("predict", "+treshold=0.5", "no option 'treshold' to add (did you mean threshold=?)"),
        ("predict", "data.rot=x", "no option 'data.rot' (--help lists the options)"),
        ("eval", "data.rot=x", "no option 'data.rot' (did you mean data.root=?)"),
    ]
    for command, typo, words in cases:
        paths = ["input=b", "output=c"] if command == "predict" else []
        result = kdseg_here(command, "ckpt=a.ckpt", *paths, typo, cwd=tmp_path, check=False)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert words in lines[0] and "To append" not in lines[0], result.stderr
    assert not any(tmp_path.iterdir())
    hydra = "Could not override 'model.widht'. To append to your config use +model.widht=1"
    told = str(unknown_option(hydra, "train"))  # `+model.widht=1` is refused too: no advice
    assert "did you mean model.width=?" in told and "adds it" not in told
    hydra = "Could not override 'trainer.limit_val_batche'. To append to your config use +x=1"
    assert "+x=1 adds it as a new key" in str(unknown_option(hydra, "train"))
    assert unknown_option("Could not load 'model/enett'.", "train") is None


@pytest.mark.parametrize("command", ["train"])  # distill: the same wrapper (kdseg.cli.command)
def test_a_refused_run_leaves_no_default_time_stamped_run_dir(
    command: str, tmp_path: Path, phantom_lits: Path
) -> None:
    """Without ``hydra.run.dir`` a run goes to ``<runs>/<task>/<name>-<YYYYmmdd-HHMMSS>``,
    which Hydra makes before kdseg checks anything: a refused run removes that folder again
    (its parents stay), and leaves alone a run dir that holds another run's files."""
    from conftest import TINY_DATA, kdseg_here

    runs = tmp_path / "runs"
    teacher = [f"teacher.ckpt={tmp_path / 'none.ckpt'}"] if command == "distill" else []
    bad = [*TINY_DATA, f"data.root={tmp_path / 'missing'}", f"paths.runs_dir={runs}", *teacher]
    result = kdseg_here(command, *bad, cwd=tmp_path, check=False)
    assert result.returncode == 2 and "missing" in result.stderr, result.stderr
    leftovers = [p for p in runs.rglob("*") if p.name.startswith(("enet-", "unetpp-"))]
    assert not leftovers and not list(runs.rglob("*.*")), sorted(map(str, runs.rglob("*")))
    # a refusal after the record was written (here: a teacher that is not there) also
    # removes it; a folder named on the command line that was there before stays
    kept = tmp_path / "kept"
    kept.mkdir()
    again = kdseg_here(
        command,
        *TINY_DATA,
        f"data.root={phantom_lits}",
        f"hydra.run.dir={kept}",
        f"teacher.ckpt={tmp_path / 'none.ckpt'}" if command == "distill" else "model=nope",
        cwd=tmp_path,
        check=False,
    )
    assert again.returncode == 2 and kept.is_dir(), again.stderr


def test_a_missing_teacher_is_refused_before_the_dataset_is_prepared(
    tmp_path: Path, phantom_lits: Path
) -> None:
    """The teacher is checked before the slice cache is filled: on a real dataset preparing
    takes minutes to hours, and a typo in ``teacher.ckpt`` should cost seconds."""
    from conftest import TINY_DATA, kdseg_here

    cache = tmp_path / "cache"
    result = kdseg_here(
        "distill",
        *TINY_DATA,
        f"data.root={phantom_lits}",
        f"data.cache_root={cache}",
        f"teacher.ckpt={tmp_path / 'typo.ckpt'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert result.returncode == 2 and "typo.ckpt: checkpoint not found" in result.stderr
    assert not any(cache.rglob("meta.json")), "the dataset was prepared before the refusal"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=-1", "optim.lr=-1: must be a finite number > 0.0"),
        ("optim.lr=0", "optim.lr=0: must be a finite number > 0.0"),
        ("optim.weight_decay=nan", "optim.weight_decay=nan: expected a number, not NaN"),
        ("optim.min_lr=inf", "optim.min_lr=inf: must be a finite number >= 0.0"),
        ("loss.gamma=nan", "loss.gamma=nan: expected a number, not NaN"),
        ("loss.dice_weight=-1", "loss.dice_weight=-1: must be a finite number >= 0.0"),
        ("loss.blob_weight=nan", "loss.blob_weight=nan: must be a finite number >= 0.0"),
        ("data.target_fraction=1.5", "data.target_fraction=1.5: must be a finite number >= 0"),
        ("student.width=0", "student.width=0: must be a finite number > 0"),  # once exit 1
        ("student.width=-1", "student.width=-1: must be a finite number > 0"),
        ("student.width=1e308", "student.width=1e+308: must be a finite number > 0.0 and <= 64"),
        ("student.width=65", "student.width=65: must be a finite number > 0.0 and <= 64"),
        ("distill.terms.kd.weight=nan", "distill.terms.kd.weight=nan: expected a number, not"),
        ("distill.terms.kd.options.temperature=nan", "temperature=nan: expected a number, not"),
    ],
)
def test_out_of_range_and_non_finite_training_settings_are_refused(
    override: str, message: str
) -> None:
    """NaN or Inf in a loss weight, temperature or learning rate used to train on NaN and
    exit 0; a negative learning rate or a sampling share above 1 failed deep inside as an
    internal error. Each is now a config error naming the option, before anything is built."""
    from hydra import compose, initialize_config_dir

    from kdseg.cli.options import CONFIG_PATH, check_option_ranges, check_option_types

    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_PATH, job_name="distill"):
        cfg = compose("distill", overrides=["distill=kd", override], return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    with pytest.raises(InputError, match=re.escape(message)):
        check_option_types(cfg, "distill", choices)
        check_option_ranges(cfg)


def test_a_refused_student_value_is_named_as_the_student_option() -> None:
    """The network builder checks ``model.<option>``; for kdseg-distill the user set
    ``student.<option>``, and the one line names that (it said ``model.dropout``)."""
    from kdseg.cli.distill import _module
    from kdseg.errors import ConfigError

    student = {"name": "enet", "in_channels": 1, "num_classes": 3, "dropout": 2.0}
    cfg = {"student": student, "optim": {}, "loss": {}, "teacher": {}, "distill": {}}
    with pytest.raises(ConfigError, match=r"^student\.dropout 2\.0: must be a number from 0"):
        _module(cfg, {"task": "lits"})


def test_a_criterion_weight_or_temperature_that_is_not_finite_is_refused() -> None:
    """The same below the config files: a ``+distill.terms.<new>`` term, or the API."""
    from kdseg.distill.criterion import parse_terms
    from kdseg.distill.losses.prediction import SoftmaxKLLoss
    from kdseg.errors import ConfigError

    term = {"loss": "kd", "student_tap": "logits", "weight": float("nan")}
    with pytest.raises(ConfigError, match="weight must be a finite number >= 0, got nan"):
        parse_terms({"kd": term})
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got inf"):
        SoftmaxKLLoss(temperature=float("inf"))


@pytest.mark.parametrize(
    ("overrides", "culprit"),
    [
        (["optim.lr=-1"], "optim.lr=-1"),
        (
            [
                "data.preprocess.in_plane_size=null",
                "data.patch_size=[200,200]",
                "data.augment.rot90=false",
            ],
            "data.patch_size [200, 200] is larger than",
        ),
        (  # a BatchNorm layer of ResNet18's layer4 sees 1 x 1: torch's ValueError mid-run
            [
                "model=resnet18",
                "model.width=0.25",
                "data.batch_size=1",
                "data.preprocess.in_plane_size=[32,32]",
            ],
            "data.batch_size 1 with 32 x 32 training slices: a BatchNorm layer of model resnet18",
        ),
    ],
)
def test_a_setting_refused_before_or_after_the_loggers_start_leaves_no_run_dir(
    overrides: list[str], culprit: str, tmp_path: Path, phantom_lits: Path
) -> None:
    """A bad learning rate is refused before anything is built; a patch larger than the
    native slices once the cached cases are opened (once after the CSV logger made its
    folder; now before the loggers start), and so are one-slice batches so small that a
    BatchNorm layer sees a 1 x 1 map (an internal error at the first step, exit 1). All:
    exit 2, one line, and the new run dir removed with the empty folders in it. Refusals
    after the loggers start, wandb on: the rows ``wandb on`` of tests/test_fault_corpus.py."""
    from conftest import TINY_DATA, error_lines, kdseg_here

    run = tmp_path / "new" / "run"
    result = kdseg_here(
        "train",
        *TINY_DATA,
        "logger=csv",
        f"data.root={phantom_lits}",
        f"data.cache_root={tmp_path / 'cache'}",
        *overrides,
        f"hydra.run.dir={run}",
        check=False,
    )
    lines = error_lines(result.stderr)  # after the phantoms' HU-window warning, if prepared
    assert result.returncode == 2 and len(lines) == 1 and culprit in lines[0], result.stderr
    assert not (tmp_path / "new").exists(), sorted(map(str, tmp_path.rglob("*")))


def test_logger_files_are_removed_only_before_the_run_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a refusal removes of the loggers' files (kdseg.cli.rundir): only what is new
    since the task started, only wandb run folders of the run dir's own id, and nothing once
    the run wrote a checkpoint (its record must stay: the run is resumable)."""
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig

    from kdseg.cli import rundir
    from kdseg.lit.resume import WANDB_ID_FILE

    assert rundir.WANDB_ID_FILE == WANDB_ID_FILE
    run = tmp_path / "run"
    hydra_cfg = SimpleNamespace(runtime=SimpleNamespace(output_dir=str(run)))
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hydra_cfg))
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    monkeypatch.setattr(rundir, "_BEFORE", {})  # this test's notes, dropped after it

    def start(checkpoint: bool) -> list[str]:
        """A run dir the loggers started in (``wandb`` was there, with an earlier run)."""
        old = run / "wandb" / "offline-run-20261201_100000-abcd1234"
        old.mkdir(parents=True)
        (run / "wandb" / "latest-run").symlink_to(old.name)
        (run / "wandb" / "notes.txt").write_text("the user's\n")
        rundir.note_run_state(run)
        (run / WANDB_ID_FILE).write_text("abcd1234\n")
        new = run / "wandb" / "offline-run-20261207_100000-abcd1234"
        (new / "files").mkdir(parents=True)
        (new / "run-abcd1234.wandb").write_bytes(b"w")
        other = run / "wandb" / "offline-run-20261207_100000-zzzz9999"  # not this run's id
        other.mkdir()
        (run / "wandb" / "latest-run").unlink()
        (run / "wandb" / "latest-run").symlink_to(new.name)
        (run / "wandb" / "debug.log").symlink_to(f"{new.name}/logs/debug.log")
        (run / "csv").mkdir()
        (run / "csv" / "hparams.yaml").write_text("a: 1\n")
        if checkpoint:
            (run / "checkpoints").mkdir()
            (run / "checkpoints" / "last.ckpt").write_bytes(b"c")
        return sorted(str(p.relative_to(run)) for p in run.rglob("*"))

    made = start(checkpoint=True)
    rundir.remove_new_logger_files()
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == made  # all of it stays

    shutil.rmtree(run)
    start(checkpoint=False)
    rundir.remove_new_logger_files()
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert left == [
        "wandb",
        "wandb/latest-run",
        "wandb/notes.txt",
        "wandb/offline-run-20261201_100000-abcd1234",
        "wandb/offline-run-20261207_100000-zzzz9999",
    ]
    assert os.readlink(run / "wandb" / "latest-run") == "offline-run-20261201_100000-abcd1234"


def test_a_refusal_in_a_linked_run_dir_keeps_what_was_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run dir reached through a link (``hydra.run.dir=link``) and a ``csv/`` that is a
    link: a refused rerun removed the run's ``wandb_id.txt`` (its resume then started a new
    wandb run) and the linked folder's ``hparams.yaml``; both stay now."""
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig

    from kdseg.cli import rundir
    from kdseg.lit.resume import WANDB_ID_FILE

    real, shared = tmp_path / "real" / "run", tmp_path / "shared-csv"
    real.mkdir(parents=True)
    shared.mkdir()
    (real / WANDB_ID_FILE).write_text("abcd1234\n")
    (shared / "hparams.yaml").write_text("a: 1\n")
    (real / "csv").symlink_to(shared)
    link = tmp_path / "link"
    link.symlink_to(real)
    hydra_cfg = SimpleNamespace(runtime=SimpleNamespace(output_dir=str(link)))
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hydra_cfg))
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(rundir, "_BEFORE", {})
    rundir.note_run_state(link.absolute())
    rundir.remove_new_logger_files()
    assert (real / WANDB_ID_FILE).read_text() == "abcd1234\n"
    assert (shared / "hparams.yaml").read_text() == "a: 1\n"


def test_inf_stays_a_setting_where_it_means_never() -> None:
    """A threshold of Inf (never warn) passes the type check: only NaN is refused for every
    float option; training values that must be finite are in RANGES."""
    from hydra import compose, initialize_config_dir

    from kdseg.cli.options import CONFIG_PATH, check_option_ranges, check_option_types

    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_PATH, job_name="export"):
        cfg = compose("export", overrides=["pruning.max_dice_drop=inf"], return_hydra_config=True)
    check_option_types(cfg, "export", dict(cfg.hydra.runtime.choices))
    check_option_ranges(cfg)
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_PATH, job_name="export"):
        bad = compose("export", overrides=["pruning.max_dice_drop=nan"], return_hydra_config=True)
    with pytest.raises(InputError, match="max_dice_drop=nan: expected a number, not NaN"):
        check_option_types(bad, "export", dict(bad.hydra.runtime.choices))


def test_an_optimizer_option_it_does_not_read_is_refused() -> None:
    """``+optim.weight_decy=0.1`` was added and never read: a typo trained without a word."""
    from hydra import compose, initialize_config_dir

    from kdseg.cli.options import CONFIG_PATH, check_option_ranges

    for name in ("train", "distill"):
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_PATH, job_name=name):
            cfg = compose(name, overrides=["+optim.weight_decy=0.1"])
            check_option_ranges(compose(name, overrides=["optim.weight_decay=0.1"]))
        with pytest.raises(InputError, match="optim.weight_decy: not an option"):
            check_option_ranges(cfg)


@pytest.mark.parametrize(
    ("command", "args", "culprit"),
    [
        # a key kits19 / nnunet / msd_liver inherit from lits.yaml went unchecked: truncated
        # to 1, or an internal error (exit 1); data=lits refused them
        ("prepare", ["data=kits19", "data.preprocess.body_margin=1.5"], "body_margin=1.5"),
        ("prepare", ["data=nnunet", "data.preprocess.body_margin=abc"], "body_margin=abc"),
        ("split", ["data=kits19", "data.split_seed=abc"], "data.split_seed=abc"),
        ("split", ["data=kits19", "data.split_seed=1.5"], "data.split_seed=1.5"),
        ("split", ["data=msd_liver", "data.preprocess.roi_jitter_mm=nan"], "roi_jitter_mm=nan"),
        # PreprocessConfig.from_dict: a TypeError / ValueError deep inside, exit 1
        ("prepare", ["data.preprocess.in_plane_size=64.5"], "preprocess.in_plane_size"),
        ("prepare", ["data.preprocess.crop_size=[16,a]"], "preprocess.crop_size"),
        ("prepare", ["data.preprocess.spacing_mm=abc"], "preprocess.spacing_mm"),
        ("prepare", ["data.preprocess.spacing_mm=.nan"], "preprocess.spacing_mm"),
        ("prepare", ["data.preprocess.spacing_mm=[1,nan]"], "preprocess.spacing_mm"),
        ("prepare", ["data.preprocess.spacing_mm=[1,inf]"], "preprocess.spacing_mm"),
        ("prepare", ["data.preprocess.window=abc"], "preprocess.window"),
        ("prepare", ["data.preprocess.window=[a,b]"], "preprocess.window"),
        ("prepare", ["data.preprocess.window=[-60,inf]"], "preprocess.window"),
        # no upper bound: "array is too big" (ValueError), a MemoryError
        ("prepare", ["data.preprocess.spacing_mm=1e-9"], "preprocess.spacing_mm"),
        ("prepare", ["data.preprocess.spacing_mm=50"], "preprocess.spacing_mm"),
        ("prepare", ["data.preprocess.in_plane_size=[200000,200000]"], "in_plane_size"),
        ("prepare", ["data.preprocess.crop_size=[4,4]"], "preprocess.crop_size"),
        # a TypeError in both commands (len() / list() of a float)
        ("prepare", ["data.split_fractions=0.5"], "data.split_fractions"),
        ("split", ["data.split_fractions=0.5"], "data.split_fractions"),
        ("split", ["data.split_fractions=[0.5,0.5]"], "data.split_fractions"),
        ("split", ["data.split_fractions=[0.5,0.5,nan]"], "data.split_fractions"),
        ("split", ["data.split_fractions=abc"], "data.split_fractions"),
    ],
)
def test_bad_data_settings_are_one_line(
    phantom_lits: Path, tmp_path: Path, command: str, args: list[str], culprit: str
) -> None:
    """Each bad data setting is one line naming it, exit code 2: nothing prepared, no split
    written into the data folder."""
    from conftest import error_lines

    cache = tmp_path / "cache"
    before = sorted(p.name for p in phantom_lits.iterdir())
    result = _run(
        f"kdseg-{command}",
        f"data.root={phantom_lits}",
        f"data.cache_root={cache}",
        *(["force=true"] if command == "split" else []),
        *args,
        cwd=tmp_path,
    )
    lines = error_lines(result.stderr)
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and culprit in lines[0], result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert not cache.exists()
    assert sorted(p.name for p in phantom_lits.iterdir()) == before


def test_a_fractional_roi_margin_is_a_setting() -> None:
    """``roi_margin_mm`` and ``roi_jitter_mm`` are millimetres (floats): lits.yaml wrote them
    as 10 and 5, so ``roi_margin_mm=2.5`` was refused as "expected a whole number"; in a
    config that inherits them too (``data=kits19``, the phantom study's experiment)."""
    from kdseg.cli.options import check_overrides
    from kdseg.data.preprocess_config import PreprocessConfig

    for extra in ([], ["data=kits19"], ["experiment=phantom_study_v3"]):
        cfg = check_overrides(
            "prepare",
            [*extra, "data.preprocess.roi_margin_mm=2.5", "data.preprocess.roi_jitter_mm=0.5"],
        )
        pre = PreprocessConfig.from_dict(cfg.data.preprocess)
        assert (pre.roi_margin_mm, pre.roi_jitter_mm) == (2.5, 0.5)
    # the YAML defaults' 10.0 / 5.0 name the caches the old 10 / 5 named
    old = {"roi": "organ", "roi_margin_mm": 10, "roi_jitter_mm": 5}
    new = {"roi": "organ", "roi_margin_mm": 10.0, "roi_jitter_mm": 5.0}
    assert PreprocessConfig.from_dict(old).digest() == PreprocessConfig.from_dict(new).digest()


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["params={dataset: kits}"], "dataset"),  # once: TypeError, an internal error
        (["params=5"], "params=5"),  # once: ValueError
        (["params=[1,2]"], "params"),  # once: TypeError
        (["workers=-2"], "workers=-2"),  # once: accepted
        (["params={fov_mm_range: [0.001, 0.001]}"], "fov_mm_range"),  # once: ZeroDivisionError
        (["params={fov_mm_range: [20, 20]}"], "fov_mm_range"),  # once: ValueError, drawing
        (["n_cases=null"], "n_cases=null"),  # once: TypeError, an internal error
        (["seed=null"], "seed=null"),  # once: TypeError
        (["workers=100000"], "workers=100000: more processes than"),  # once: accepted
    ],
)
def test_bad_phantom_options_are_one_line(tmp_path: Path, args: list[str], culprit: str) -> None:
    root = tmp_path / "ph"
    result = _run("kdseg-phantom", f"root={root}", "n_cases=1", *args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and culprit in lines[0] and "Traceback" not in result.stderr
    assert not root.exists()


def test_a_null_phantom_root_is_one_line(tmp_path: Path) -> None:
    """Once: TypeError from the output check, an internal error."""
    result = _run("kdseg-phantom", "root=null", "n_cases=1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "kdseg-phantom: error: root=null: expected the folder to write the phantoms into"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_text_file_as_checkpoint_is_one_plain_line(tmp_path: Path) -> None:
    """kdseg-predict ckpt=notes.txt: ``<file>: not a checkpoint file``, exit 2, one line; no
    exception class name (torch fails on a text file's first byte: ``KeyError: '104'``)."""
    import nibabel as nib
    import numpy as np

    scan = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)), scan)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello, these are notes\n")
    out = tmp_path / "out.nii.gz"
    result = _run("kdseg-predict", f"ckpt={notes}", f"input={scan}", f"output={out}", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines == [f"kdseg-predict: error: {notes}: not a checkpoint file"]
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello", ""),  # KeyError: '104'
        (b"", " (empty, or cut short)"),  # EOFError with no text
        (b"#" * 100, " (not a weights-only pickle)"),  # a Markdown heading
        (b"PK\x03\x04junk", " (not a zip archive, or cut short)"),
    ],
)
def test_a_file_that_is_no_checkpoint_says_so_without_a_class_name(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    from kdseg.eval.checkpoint import read_checkpoint

    path = tmp_path / "some.ckpt"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_checkpoint(path)
    assert str(caught.value) == f"{path}: not a checkpoint file{reason}"


#: the commands that write no run folder (``hydra.run.dir: .``)
ONE_SHOT = ("bench", "eval", "export", "phantom", "predict", "prepare", "pseudolabel")
ONE_SHOT += ("report", "split")


@pytest.mark.parametrize("name", ONE_SHOT)
def test_one_shot_sweeps_go_to_runs_without_job_folders(name: str) -> None:
    """``kdseg-eval -m ckpt=a,b`` left ``multirun/<date>/<time>/<n>/`` in the current folder
    (Hydra's default sweep dir): empty job folders, since a one-shot tool writes next to its
    inputs. Its sweep now goes beside the training sweeps, one folder, no job subfolders."""
    from hydra import compose, initialize_config_dir

    from kdseg.cli.options import CONFIG_PATH

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_PATH), job_name=name):
        cfg = compose(name, return_hydra_config=True)
    sweep = cfg.hydra.sweep
    assert cfg.hydra.run.dir == "."
    assert re.fullmatch(rf"runs/{name}-multirun/\d{{8}}-\d{{6}}", str(sweep.dir)), sweep.dir
    assert str(sweep.subdir) == "."


def test_bench_writes_under_runs_not_into_the_committed_docs() -> None:
    """``kdseg-bench`` wrote ``docs/bench.md``, ``.png`` and ``.json`` by default: the README's
    command, run from a checkout, replaced the committed measured table with the reader's own.
    Its default output folder is now beside the runs; the scripts that regenerate the
    committed tables pass ``output_dir=`` themselves."""
    from hydra import compose, initialize_config_dir

    from kdseg.cli.options import CONFIG_PATH
    from kdseg.deploy.bench import BenchConfig

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_PATH), job_name="b"):
        cfg = compose("bench")
    assert cfg.output_dir == "runs/bench"
    assert BenchConfig.__dataclass_fields__["output_dir"].default == "runs/bench"


def test_one_shot_multirun_leaves_no_folder_in_the_current_one(tmp_path: Path) -> None:
    result = _run(
        "kdseg-report", "-m", f"runs=[{tmp_path / 'nothere'}]", "digits=2,3", cwd=tmp_path
    )
    assert result.returncode == 2 and "nothere" in result.stderr
    assert not (tmp_path / "multirun").exists()
    # the refused first job's sweep folder held only Hydra's multirun.yaml: removed with it
    # (it was left behind); its parent stays, as a default run dir's do
    assert list((tmp_path / "runs" / "report-multirun").iterdir()) == []


def test_a_refused_sweep_removes_only_a_sweep_folder_it_made(tmp_path: Path) -> None:
    """A ``hydra.sweep.dir`` named on the command line: removed with its new parents when the
    first job is refused; one that was there before, holding anything else, stays as it was."""
    args = ("kdseg-report", "-m", f"runs=[{tmp_path / 'nothere'}]", "digits=2,3")
    new = tmp_path / "new" / "deeper" / "sweep"
    result = _run(*args, f"hydra.sweep.dir={new}", cwd=tmp_path)
    assert result.returncode == 2 and "nothere" in result.stderr
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    result = _run(*args, f"hydra.sweep.dir={kept}", cwd=tmp_path)
    assert result.returncode == 2
    assert sorted(p.name for p in kept.iterdir()) == ["multirun.yaml", "notes.txt"]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_sweep_job_refused_after_its_run_record_removes_its_own_folder(
    tmp_path: Path, phantom_lits: Path
) -> None:
    """``kdseg-train -m`` whose second job is refused once its job folder holds its log (an
    empty data folder: ``train.log``, and ``config.yaml`` and ``.hydra/`` before the training
    start wrote them) left ``<sweep>/1`` behind (and an empty ``<sweep>/1`` for one refused by
    an option's range).
    The refused job's folder goes; the first job's run and the sweep's record stay."""
    from conftest import TINY_DATA

    empty = tmp_path / "empty"
    empty.mkdir()
    sweep = tmp_path / "sweep"
    args = [*TINY_DATA, "logger=csv", "model=enet", "model.width=0.25", "trainer.max_epochs=1"]
    args += ["data.samples_per_epoch=8", "+trainer.limit_val_batches=1"]
    result = _run(
        "kdseg-train",
        "-m",
        *args,
        f"data.root={phantom_lits},{empty}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "empty: no cases in the lits layout" in result.stderr
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "multirun.yaml"]
    assert (sweep / "0" / "summary.json").is_file()


def test_a_sweep_whose_first_job_is_refused_late_leaves_no_folder(tmp_path: Path) -> None:
    """The first job refused after its run record is written (a data folder not found) left
    ``<sweep>/0`` with that record, and so the sweep folder: both go, of the default
    time-stamped sweep folder as of a named new one. A job folder that held anything before
    (a resumed sweep's) keeps it, and its sweep folder stays."""
    args = ("kdseg-train", "-m", "experiment=demo", "model=enet")
    args += (f"data.root={tmp_path / 'nothere'},{tmp_path / 'norhere'}",)
    result = _run(*args, cwd=tmp_path)
    assert result.returncode == 2 and "nothere: data folder not found" in result.stderr
    assert list((tmp_path / "runs" / "train-multirun").iterdir()) == []
    named = tmp_path / "named" / "sweep"
    result = _run(*args, f"hydra.sweep.dir={named}", cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "named").exists()
    kept = tmp_path / "kept"
    (kept / "0").mkdir(parents=True)
    (kept / "0" / "notes.txt").write_text("mine")
    result = _run(*args, f"hydra.sweep.dir={kept}", cwd=tmp_path)
    assert result.returncode == 2
    assert "0/notes.txt" in _files(kept) and "multirun.yaml" in _files(kept)


def test_a_rerun_compares_loss_focal_as_the_setting_it_means(tmp_path: Path) -> None:
    """``loss.focal: null`` and ``loss.focal=sigmoid`` are the same focal term (the default):
    a rerun giving one in a folder saved with the other was refused as a run of other
    settings. A real change is refused, the line naming the leaf key and both values (it
    showed the whole ``loss`` dict, cut short before the key that differed)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import kdseg.config  # noqa: F401
    from kdseg.cli import CONFIG_PATH, check_same_run

    def config(*overrides: str):
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            return compose("train", overrides=["experiment=demo", "model=enet", *overrides])

    saved = config()
    assert OmegaConf.select(saved, "loss.focal") is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")  # a run was here
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(saved, resolve=True))
    check_same_run(tmp_path, config("loss.focal=sigmoid"))
    check_same_run(tmp_path, config("loss.focal=SIGMOID"))
    with pytest.raises(InputError) as refused:
        check_same_run(tmp_path, config("loss.focal=softmax"))
    assert "holds a run of other settings (loss.focal: None -> softmax); " in str(refused.value)
    (tmp_path / "config.yaml").write_text(
        OmegaConf.to_yaml(config("loss.focal=sigmoid"), resolve=True)
    )
    check_same_run(tmp_path, config())  # and the other way round
