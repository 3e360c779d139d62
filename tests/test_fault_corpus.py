# ruff: noqa: E501  (the table keeps one case per line, however long)
"""The bad-input and fault corpus: one table, one row per bad input or fault, one assertion set.

Every row runs one kdseg command on something broken and asserts docs/reliability.md's promise: exit
code 2, exactly one line on stderr that names the culprit (a file or an option), no traceback,
no new file anywhere in the case's folder (so none at or beside the output path), and the
bytes of every input unchanged. Adding a case is one line in ``CASES``: a builder that writes
the broken input (the ``make_*`` helpers) and the arguments.

Most rows run in-process through the same entry function the console script calls (fast: the
libraries are imported once); the rows marked ``sub`` run as real subprocesses, so a fresh
process's warnings and banners are covered too.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import BIN, TINY_DATA, TRAINED_ENET, error_lines, kdseg_here

from kdseg.errors import temp_host

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])
SHAPE = (40, 36, 8)


@dataclass
class World:
    """One case's folder plus the shared trained checkpoint and ONNX export."""

    tmp: Path
    ckpt: Path
    onnx: Path
    lits: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out" / "pred.nii.gz"

    def ct(self, name: str = "ct.nii.gz", data: np.ndarray | None = None, affine=AFFINE) -> Path:
        """A small CT-like NIfTI in the case folder (random HU unless ``data`` is given)."""
        if data is None:
            data = np.random.default_rng(0).integers(-1000, 300, SHAPE).astype(np.int16)
        path = self.tmp / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), str(path))
        return path

    def floats(self, fill: Callable[[np.ndarray], None], name: str = "ct.nii.gz") -> Path:
        data = np.random.default_rng(1).normal(-200, 300, SHAPE).astype(np.float32)
        fill(data)
        return self.ct(name, data)

    def copy_ckpt(self, edit: Callable[[dict], None] | None = None, name="model.ckpt") -> Path:
        """A private copy of the trained checkpoint, optionally edited (re-saved with torch)."""
        path = self.tmp / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if edit is None:
            shutil.copy(self.ckpt, path)
            return path
        ckpt = torch.load(self.ckpt, weights_only=True)
        edit(ckpt)
        torch.save(ckpt, path)
        return path

    def copy_onnx(self, edit: Callable[..., None]) -> Path:
        import onnx

        model = onnx.load(str(self.onnx))
        edit(model)
        path = self.tmp / "in" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
        return path

    def predict(
        self, input: Path | str, *extra: str, ckpt=None, output=None, artifact=None
    ) -> list[str]:
        """kdseg-predict arguments: the trained checkpoint (or ``artifact`` alone) on ``input``."""
        model = [f"ckpt={ckpt or self.ckpt}"] if artifact is None else ["ckpt=null"]
        model += [] if artifact is None else [f"artifact={artifact}"]
        return [*model, f"input={input}", f"output={output or self.out}", *extra]

    def lits_copy(self, how: str) -> Path:
        """A two-case LiTS folder in the case folder with case 1 broken ``how``."""
        root = self.tmp / "lits"
        root.mkdir(parents=True, exist_ok=True)
        for n in (0, 1):
            self.ct(f"../lits/volume-{n}.nii.gz")
            lab = np.zeros(SHAPE, np.uint8)
            lab[5:15, 5:15, 2:5] = 1
            nib.save(nib.Nifti1Image(lab, AFFINE), str(root / f"segmentation-{n}.nii.gz"))
        vol, seg = root / "volume-1.nii.gz", root / "segmentation-1.nii.gz"
        if how == "missing label":
            seg.unlink()
            return vol
        if how == "missing image":
            vol.unlink()
            return seg
        if how == "shape mismatch":
            nib.save(nib.Nifti1Image(np.zeros((40, 36, 7), np.uint8), AFFINE), str(seg))
        elif how == "affine mismatch":
            nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), np.diag([2.0, 1, 3, 1])), str(seg))
        elif how == "unknown labels":
            lab = np.zeros(SHAPE, np.uint8)
            lab[0, 0, 0] = 7
            nib.save(nib.Nifti1Image(lab, AFFINE), str(seg))
        elif how == "CT as label":  # the pair's two files swapped, or a scan copied over
            self.ct("../lits/segmentation-1.nii.gz")
        elif how == "no background":
            nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE), str(seg))
        elif how == "no image":
            vol.unlink()
        elif how == "NaN label":
            lab = np.zeros(SHAPE, np.float32)
            lab[1, 1, 1] = np.nan
            nib.save(nib.Nifti1Image(lab, AFFINE), str(seg))
        elif how == "corrupt":
            vol.write_bytes(b"this is not a nifti file at all" * 10)
            return vol
        elif how == "truncated":
            vol.write_bytes(vol.read_bytes()[:200])
            return vol
        elif how == "not 3D":
            nib.save(nib.Nifti1Image(np.zeros((40, 36), np.int16), AFFINE), str(vol))
            return vol
        elif how == "constant":
            nib.save(nib.Nifti1Image(np.full(SHAPE, -1000, np.int16), AFFINE), str(vol))
            return vol
        elif how == "NaN image":
            self.floats(lambda d: d.__setitem__((2, 2, 2), np.nan), "../lits/volume-1.nii.gz")
            return vol
        return seg

    def prepare(self, how: str) -> list[str]:
        culprit = self.lits_copy(how)
        self.culprit = culprit.name
        return [*TINY_DATA, f"data.root={self.tmp / 'lits'}"]


# ------------------------------------------------------------------ builders of broken inputs


def good_lits(w: World) -> list[str]:
    """A two-case LiTS folder with nothing wrong in it, for the options' rows."""
    w.lits_copy("none")
    return [*TINY_DATA, f"data.root={w.tmp / 'lits'}"]


def header_dims(w: World, name: str) -> Path:
    """A NIfTI whose header claims 8000 x 8000 x 4000 voxels over a few KB of data."""
    path = w.ct(name)
    raw = path.read_bytes()
    raw = bytearray(gzip.decompress(raw) if name.endswith(".gz") else raw)
    struct.pack_into("<8h", raw, 40, 3, 8000, 8000, 4000, 1, 1, 1, 1)
    path.write_bytes(gzip.compress(bytes(raw)) if name.endswith(".gz") else bytes(raw))
    return path


def singular_affine(w: World) -> Path:
    """sform row y all zeros, qform off: the voxel grid collapses onto a plane."""
    path = w.ct("ct.nii")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<4f", raw, 296, 0, 0, 0, 0)
    struct.pack_into("<h", raw, 252, 0)
    path.write_bytes(bytes(raw))
    return path


def rgb(w: World) -> Path:
    data = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return w.ct("ct.nii.gz", data)


def dicom(w: World, how: str) -> Path:
    from kdseg.data.dicom_write import write_dicom_series

    source = w.ct("ct.nii.gz")
    img = nib.load(str(source))
    img = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    source.unlink()
    folder = w.tmp / "in" / "series"
    files = write_dicom_series(img, folder)
    if how == "two series":
        write_dicom_series(img, w.tmp / "in" / "other")
        for i, f in enumerate(sorted((w.tmp / "in" / "other").iterdir())):
            f.rename(folder / f"other-{i}.dcm")
        (w.tmp / "in" / "other").rmdir()
    elif how == "missing slice":
        sorted(files)[3].unlink()
    elif how == "corrupt slice":
        sorted(files)[2].write_bytes(sorted(files)[2].read_bytes()[:-300])  # pixels cut short
    elif how in ("zero pixel spacing", "zero slope"):
        import pydicom

        path = sorted(files)[4]
        ds = pydicom.dcmread(path)
        if how == "zero slope":  # read as 1 before 2026-12-07: the wrong HU, no word
            ds.RescaleSlope = "0"
        else:
            ds.PixelSpacing = ["0", "0.7"]
        ds.save_as(path)
        w.culprit = path.name
    elif how in ("gantry tilt", "uneven spacing"):
        import pydicom

        for k, path in enumerate(sorted(files)):  # tilt: 1 mm more in-plane shift per slice
            ds = pydicom.dcmread(path)
            position = [float(v) for v in ds.ImagePositionPatient]
            if how == "gantry tilt":
                position[1] += 1.0 * k
            else:
                position[2] += 1.2 if k >= 4 else 0.0  # one step longer, under the gap limit
            ds.ImagePositionPatient = position
            ds.save_as(path)
    return folder


def pixdim(w: World, value: float) -> Path:
    """A NIfTI whose header's voxel size on axis 1 is ``value`` (qform only, as scanners
    write it)."""
    path = w.ct("ct.nii")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 80 + 4, value)  # pixdim[2]
    struct.pack_into("<h", raw, 254, 0)  # sform_code 0: the affine comes from the qform
    path.write_bytes(bytes(raw))
    return path


def no_orientation(w: World) -> Path:
    """A NIfTI whose qform and sform codes are both 0: nibabel guesses a mirrored layout."""
    path = w.ct("ct.nii")
    raw = bytearray(path.read_bytes())
    struct.pack_into("<hh", raw, 252, 0, 0)  # qform_code, sform_code
    path.write_bytes(bytes(raw))
    return path


def other_scan_at_output(w: World) -> list[str]:
    """A second scan sits where the output goes (beside the input, as in a scans folder)."""
    other = w.ct("other.nii.gz")
    w.culprit = "other.nii.gz"
    return w.predict(w.ct(), output=other)


def malicious(w: World) -> Path:
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {w.tmp / 'in' / 'pwned'}",))

    path = w.tmp / "in" / "evil.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Boom()}, f)
    return path


def nan_weights(ckpt: dict) -> None:
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][key].view(-1)[0] = float("nan")


def onnx_meta(task: str) -> Callable:
    def edit(model) -> None:
        entry = next(p for p in model.metadata_props if p.key == "kdseg")
        meta = json.loads(entry.value)
        meta["data"]["task"] = task
        entry.value = json.dumps(meta)

    return edit


def onnx_drop_node(model) -> None:
    del model.graph.node[len(model.graph.node) // 2]


def onnx_nan(model) -> None:
    from onnx import numpy_helper

    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).dtype.kind == "f")
    array = numpy_helper.to_array(init).copy()
    array.flat[0] = np.nan
    init.CopyFrom(numpy_helper.from_array(array, init.name))


def onnx_data(**changes) -> Callable:
    """An ONNX metadata edit: ``data`` keys (``preprocess`` keys merged) set to new values."""

    def edit(model) -> None:
        entry = next(p for p in model.metadata_props if p.key == "kdseg")
        meta = json.loads(entry.value)
        meta["data"]["preprocess"].update(changes.get("preprocess", {}))
        meta["data"].update({k: v for k, v in changes.items() if k != "preprocess"})
        entry.value = json.dumps(meta)

    return edit


def ckpt_data(**changes) -> Callable[[dict], None]:
    return lambda ckpt: ckpt["hyper_parameters"]["data"].update(changes)


def other_models_ckpt(w: World) -> list[str]:
    """An artefact of the organ-and-tumor model described by a tumor-only checkpoint."""
    tumor = w.copy_ckpt(ckpt_data(task="tumor", num_classes=2))
    return [f"ckpt={tumor}", f"artifact={w.copy_onnx(lambda m: None)}", f"input={w.ct()}", f"output={w.out}"]  # fmt: skip


def other_preprocess_ckpt(w: World) -> list[str]:
    """An artefact described by its own checkpoint with another HU window: the network would
    be fed what it never saw (a dynamic graph takes any grid or window)."""
    ckpt = w.copy_ckpt(lambda c: c["hyper_parameters"]["data"]["preprocess"].update(window=[-1000, 1000]))  # fmt: skip
    return [f"ckpt={ckpt}", f"artifact={w.copy_onnx(lambda m: None)}", f"input={w.ct()}", f"output={w.out}"]  # fmt: skip


def distill_into_teacher_run(w: World, inside: bool) -> list[str]:
    """A distillation whose run dir is its teacher's run folder (or a folder inside it)."""
    teacher = w.tmp / "teacher-run" / "checkpoints" / "best.ckpt"
    teacher.parent.mkdir(parents=True)
    shutil.copy(w.ckpt, teacher)
    (w.tmp / "teacher-run" / ".hydra").mkdir()  # the teacher's own record stays as it is
    (w.tmp / "teacher-run" / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (w.tmp / "teacher-run" / "train.log").write_text("the teacher's log\n")
    run = teacher.parent / "student" if inside else teacher.parent.parent
    return [*TINY_DATA, f"data.root={w.lits}", f"teacher.ckpt={teacher}", "student=enet", "student.width=0.25", f"hydra.run.dir={run}"]  # fmt: skip


def _run_args(w: World) -> list[str]:
    return [*TINY_DATA, "logger=csv", f"data.root={w.lits}", "trainer.max_epochs=1", f"hydra.run.dir={w.tmp / 'run'}"]  # fmt: skip


def train_args(w: World, *extra: str) -> list[str]:
    """A short kdseg-train run on the shared phantoms in the case folder, with ``extra``."""
    return [*_run_args(w), "model=enet", "model.width=0.25", *extra]


def distill_args(w: World, *extra: str) -> list[str]:
    """A short kdseg-distill run (EMKD) from a copy of the shared checkpoint, with ``extra``."""
    return [*_run_args(w), f"teacher.ckpt={w.copy_ckpt()}", "student=enet", "student.width=0.25", "distill=emkd", *extra]  # fmt: skip


def with_wandb(w: World, args: list[str]) -> list[str]:
    """``args`` logged as a run outside the tests logs, wandb offline beside the CSV (the
    default logger): a refusal after the loggers start leaves nothing of either."""
    w.env = {"WANDB_MODE": "offline"}
    return [a for a in args if a != "logger=csv"]


def no_gpu(w: World) -> list[str]:
    """A GPU run on a machine without one: Lightning refuses it after the loggers are made."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is there: trainer=gpu is not refused")
    return with_wandb(w, train_args(w, "trainer=gpu"))


def two_slice_sizes(w: World) -> list[str]:
    """The shared phantoms at their own matrix sizes (no in_plane_size): training cases of
    70 x 70 and 66 x 66 slices, which no batch of 4 holds."""
    return with_wandb(w, [f"data.root={w.lits}", "data.batch_size=4", "model=enet", "model.width=0.25", "trainer.max_epochs=1", f"hydra.run.dir={w.tmp / 'run'}"])  # fmt: skip


def resume_with(w: World, *changes: str) -> list[str]:
    """A copy of the shared run (its config and last.ckpt), rerun with ``changes``."""
    run = w.tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(w.ckpt.parent.parent / "config.yaml", run / "config.yaml")
    shutil.copy(w.ckpt.parent / "last.ckpt", run / "checkpoints" / "last.ckpt")
    return [*_run_args(w), *TRAINED_ENET, *changes]


def padded_gzip(w: World) -> Path:
    """A .nii.gz whose stream holds 8 MB of zeros after the image (a few kB on disk)."""
    path = w.ct()
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + bytes(8 << 20)))
    return path


def truncated_resume(w: World, prev: bool) -> list[str]:
    """A run dir whose last.ckpt is cut short, with (``prev``) or without a good previous one."""
    run = w.tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(w.ckpt.read_bytes()[:5000])
    return [
        *TINY_DATA,
        "logger=csv",
        f"data.root={w.lits}",
        "model=enet",
        "model.width=0.5",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run}",
    ]


def unwritable(w: World) -> str:
    """An output in a folder no process may write to (a chmod 555 folder does not stop root)."""
    if os.geteuid() != 0:
        ro = w.tmp / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return f"{ro}/pred.nii.gz"
    return "/proc/sys/kdseg-test/pred.nii.gz"


def bad_pickle_marker(w: World) -> None:
    assert not (w.tmp / "in" / "pwned").exists(), "the malicious pickle was executed"


# ------------------------------------------------------------------ the table

Build = Callable[[World], list[str]]
#: (id, command, build -> args, culprit text in the error line, run as a real subprocess)
CASES: list[tuple[str, str, Build, str, bool]] = [
    # data loss: outputs over inputs
    ("output is the input", "predict", lambda w: [f"ckpt={w.ckpt}", f"input={w.ct()}", f"output={w.ct()}"], "ct.nii.gz", True),
    ("output folder is the input folder", "predict", lambda w: [f"ckpt={w.ckpt}", f"input={w.ct().parent}", f"output={w.ct().parent}"], "in", False),
    ("output inside the input folder", "predict", lambda w: [f"ckpt={w.ckpt}", f"input={w.ct().parent}", f"output={w.tmp}/in/pred"], "in/pred", False),
    ("output inside a DICOM series", "predict", lambda w: [f"ckpt={w.ckpt}", f"input={dicom(w, 'ok')}", f"output={w.tmp}/in/series/p.nii.gz"], "series", False),
    ("output is the checkpoint", "predict", lambda w: [f"ckpt={w.copy_ckpt()}", f"input={w.ct()}", f"output={w.tmp}/in/model.ckpt"], "model.ckpt", False),
    ("two inputs, one output", "predict", lambda w: (w.ct("a.nii"), w.predict(w.ct("a.nii.gz").parent, output=w.tmp / "out"))[1], "a.nii.gz", False),
    ("export over its checkpoint", "export", lambda w: [f"ckpt={w.copy_ckpt(name='m.onnx')}", f"output={w.tmp}/in/m.onnx"], "m.onnx", False),
    ("eval output in the data folder", "eval", lambda w: [*TINY_DATA, f"ckpt={w.ckpt}", f"data.root={w.lits}", f"output_dir={w.lits}/eval"], "eval", False),
    # output paths that cannot be written
    ("output parent is a file", "predict", lambda w: w.predict(w.ct(), output=f"{w.ct('f.nii')}/x/p.nii.gz"), "x/p.nii.gz", False),
    ("output folder is unwritable", "predict", lambda w: w.predict(w.ct(), output=unwritable(w)), "pred.nii.gz", False),
    ("output is an existing folder", "predict", lambda w: (w.out.mkdir(parents=True), w.predict(w.ct()))[1], "pred.nii.gz", False),
    # garbage voxels and headers
    ("NaN voxels", "predict", lambda w: w.predict(w.floats(lambda d: d.__setitem__((1, 2, 3), np.nan))), "ct.nii.gz", True),
    ("Inf voxels", "predict", lambda w: w.predict(w.floats(lambda d: d.__setitem__((1, 2, 3), np.inf))), "ct.nii.gz", False),
    ("all-NaN volume", "predict", lambda w: w.predict(w.floats(lambda d: d.fill(np.nan))), "ct.nii.gz", False),
    ("constant volume", "predict", lambda w: w.predict(w.ct(data=np.full(SHAPE, 40, np.int16))), "ct.nii.gz", False),
    ("header dims > data (.nii)", "predict", lambda w: w.predict(header_dims(w, "ct.nii")), "ct.nii", False),
    ("header dims > data (.nii.gz)", "predict", lambda w: w.predict(header_dims(w, "ct.nii.gz")), "ct.nii.gz", False),
    ("RGB voxels", "predict", lambda w: w.predict(rgb(w)), "ct.nii.gz", False),
    ("complex voxels", "predict", lambda w: w.predict(w.ct(data=np.ones(SHAPE, np.complex64))), "ct.nii.gz", False),
    ("singular affine", "predict", lambda w: w.predict(singular_affine(w)), "ct.nii", False),
    ("unknown nonfinite=", "predict", lambda w: w.predict(w.ct(), "nonfinite=mean"), "nonfinite", False),
    ("voxel size 0 in the header", "predict", lambda w: w.predict(pixdim(w, 0.0)), "ct.nii", True),
    ("voxel size in metres x 1e6", "predict", lambda w: w.predict(w.ct(affine=np.diag([1.5e6, 1.5e6, 3e6, 1.0]))), "ct.nii.gz", False),
    ("voxel size 3e-9 mm", "predict", lambda w: w.predict(w.ct(affine=np.diag([3e-9, 3e-9, 3e-9, 1.0]))), "ct.nii.gz", False),
    ("values beyond any CT scale", "predict", lambda w: w.predict(w.ct(data=np.full(SHAPE, 2_000_000_000, np.int32) - np.eye(40, 36, dtype=np.int32)[..., None])), "ct.nii.gz", False),
    ("values not in HU (int16 extremes)", "predict", lambda w: w.predict(w.ct(data=np.where(np.indices(SHAPE).sum(0) % 2, 32767, -32768).astype(np.int16))), "ct.nii.gz", False),
    ("float +-1e30 voxels", "predict", lambda w: w.predict(w.floats(lambda d: d.__setitem__(slice(None), np.where(d > -200, 1e30, -1e30)))), "ct.nii.gz", False),
    ("no orientation (qform and sform codes 0)", "predict", lambda w: w.predict(no_orientation(w)), "ct.nii: the header gives no orientation", False),
    ("unknown unoriented=", "predict", lambda w: w.predict(no_orientation(w), "unoriented=ras"), "unoriented=ras", False),
    ("voxel size NaN in the header", "predict", lambda w: w.predict(pixdim(w, np.nan)), "ct.nii", False),
    ("image one voxel wide", "predict", lambda w: w.predict(w.ct(data=np.random.default_rng(0).integers(-1000, 300, (40, 1, 8)).astype(np.int16))), "ct.nii.gz", False),
    ("gzip stream padded after the image", "predict", lambda w: w.predict(padded_gzip(w)), "ct.nii.gz", False),
    ("DICOM: PixelSpacing 0", "predict", lambda w: w.predict(dicom(w, "zero pixel spacing")), "series", False),
    ("DICOM: RescaleSlope 0", "predict", lambda w: w.predict(dicom(w, "zero slope")), "series", False),
    ("DICOM: gantry tilt", "predict", lambda w: w.predict(dicom(w, "gantry tilt")), "series", False),
    ("DICOM: uneven slice spacing", "predict", lambda w: w.predict(dicom(w, "uneven spacing")), "series", False),
    ("normalised (z-scored) image", "predict", lambda w: w.predict(w.floats(lambda d: d.__setitem__(slice(None), (d + 400) / 400))), "ct.nii.gz", False),
    ("gzip bytes named .nii", "predict", lambda w: w.predict((p := w.tmp / "in/ct.nii", p.write_bytes(w.ct().read_bytes()))[0]), "ct.nii", False),
    ("output is another scan", "predict", other_scan_at_output, "other.nii.gz", False),
    ("empty input=", "predict", lambda w: [f"ckpt={w.ckpt}", "input=", f"output={w.out}"], "input", True),
    (".dcm output for NIfTI labels", "predict", lambda w: w.predict(w.ct(), output=w.tmp / "out" / "p.dcm"), "p.dcm", False),
    ("empty output=", "predict", lambda w: [f"ckpt={w.ckpt}", f"input={w.ct()}", "output="], "output", False),
    ("threshold=7", "predict", lambda w: w.predict(w.ct(), "threshold=7"), "threshold", False),
    ("threshold on a multiclass model", "predict", lambda w: w.predict(w.ct(), "threshold=0.3"), "threshold", False),
    ("stage-2 model alone", "predict", lambda w: w.predict(w.ct(), ckpt=w.copy_ckpt(lambda c: c["hyper_parameters"]["data"]["preprocess"].update(roi="organ"))), "model.ckpt", False),
    ("phantom root=", "phantom", lambda w: ["dataset=lits", "root=", "n_cases=1"], "root", False),
    ("report output_dir=", "report", lambda w: [f"runs=[{w.ckpt.parent.parent}]", "output_dir="], "output_dir", False),
    # files that already failed cleanly (keep holding)
    ("input not found", "predict", lambda w: w.predict(w.tmp / "in" / "nope.nii.gz"), "nope.nii.gz", False),
    ("corrupt NIfTI", "predict", lambda w: w.predict((w.ct(), (w.tmp / "in/ct.nii.gz").write_bytes(b"\x1f\x8bjunk" * 50))[0]), "ct.nii.gz", False),
    ("truncated NIfTI", "predict", lambda w: w.predict((p := w.ct(), p.write_bytes(p.read_bytes()[:300]))[0]), "ct.nii.gz", False),
    ("empty file", "predict", lambda w: w.predict((p := w.ct(), p.write_bytes(b""))[0]), "ct.nii.gz", False),
    ("not a NIfTI", "predict", lambda w: w.predict((p := w.tmp / "in/ct.txt", p.parent.mkdir(parents=True), p.write_text("hi"))[0]), "ct.txt", False),
    ("2D image", "predict", lambda w: w.predict(w.ct(data=np.ones((40, 36), np.int16))), "ct.nii.gz", False),
    ("4D image", "predict", lambda w: w.predict(w.ct(data=np.arange(40 * 36 * 8 * 2, dtype=np.int16).reshape(40, 36, 8, 2))), "ct.nii.gz", False),
    ("a NIfTI suffix of mixed case in an input folder", "predict", lambda w: (p := w.ct("a.nii.gz"), p.with_name("B.Nii.Gz").write_bytes(p.read_bytes()), w.predict(p.parent, output=w.tmp / "out"))[-1], "B.Nii.Gz: a NIfTI suffix of mixed case", False),
    ("two inputs of one output name in an input folder", "predict", lambda w: (p := w.ct("x.nii.gz"), w.ct("x.nii"), w.predict(p.parent, output=w.tmp / "out"))[-1], "x.nii.gz: shares the output 'x.nii.gz' with x.nii", False),
    ("input names that differ only in case", "predict", lambda w: (p := w.ct("a.nii.gz"), w.ct("A.nii.gz"), w.predict(p.parent, output=w.tmp / "out"))[-1], "a.nii.gz: output 'a.nii.gz' and A.nii.gz's 'A.nii.gz' differ only in case", False),
    ("a NIfTI suffix of mixed case", "predict", lambda w: w.predict((p := w.ct("ct.nii"), p.rename(p.with_name("CT.Nii")))[1]), "CT.Nii: a NIfTI suffix of mixed case", False),
    ("folder without images", "predict", lambda w: w.predict((p := w.tmp / "in/empty", p.mkdir(parents=True))[0]), "empty", False),
    ("DICOM: one slice file instead of its series folder", "predict", lambda w: w.predict(dicom(w, "ok") / "IM00002.dcm"), "IM00002.dcm: one DICOM slice; pass its series folder: input=", False),
    ("DICOM: two series", "predict", lambda w: w.predict(dicom(w, "two series")), "series", False),
    ("DICOM: missing slice", "predict", lambda w: w.predict(dicom(w, "missing slice")), "series", False),
    ("DICOM: corrupt slice", "predict", lambda w: w.predict(dicom(w, "corrupt slice")), "series", False),
    # checkpoints
    ("checkpoint with NaN weights", "predict", lambda w: w.predict(w.ct(), ckpt=w.copy_ckpt(nan_weights)), "model.ckpt", False),
    ("checkpoint: unknown model", "predict", lambda w: w.predict(w.ct(), ckpt=w.copy_ckpt(lambda c: c["hyper_parameters"]["model"].update(name="nonet"))), "model.ckpt", False),
    ("checkpoint: no state_dict", "predict", lambda w: w.predict(w.ct(), ckpt=w.copy_ckpt(lambda c: c.pop("state_dict"))), "model.ckpt", False),
    ("checkpoint: no preprocess", "predict", lambda w: w.predict(w.ct(), ckpt=w.copy_ckpt(lambda c: c["hyper_parameters"]["data"].pop("preprocess"))), "model.ckpt", False),
    ("checkpoint: unknown task", "predict", lambda w: w.predict(w.ct(), ckpt=w.copy_ckpt(lambda c: c["hyper_parameters"]["data"].update(task="brain"))), "model.ckpt", False),
    ("checkpoint: corrupt", "predict", lambda w: w.predict(w.ct(), ckpt=(p := w.copy_ckpt(), p.write_bytes(os.urandom(4000)))[0]), "model.ckpt", False),
    ("checkpoint: truncated", "predict", lambda w: w.predict(w.ct(), ckpt=(p := w.copy_ckpt(), p.write_bytes(p.read_bytes()[:3000]))[0]), "model.ckpt", False),
    ("checkpoint: malicious pickle", "predict", lambda w: w.predict(w.ct(), ckpt=malicious(w)), "evil.ckpt", False),
    ("checkpoint: in_channels not the context's", "predict", lambda w: w.predict(w.ct(), ckpt=w.copy_ckpt(ckpt_data(in_channels=3))), "model.ckpt", False),
    ("checkpoint: num_classes not the task's", "predict", lambda w: w.predict(w.ct(), ckpt=w.copy_ckpt(ckpt_data(num_classes=2))), "model.ckpt", False),
    ("checkpoint: a folder", "predict", lambda w: w.predict(w.ct(), ckpt=(p := w.tmp / "in" / "runs", p.mkdir(parents=True))[0]), "runs: a folder, not a checkpoint file", False),
    ("checkpoint not found", "predict", lambda w: w.predict(w.ct(), ckpt=w.tmp / "in/none.ckpt"), "none.ckpt", False),
    # ONNX artefacts
    ("ONNX: unknown task in metadata", "predict", lambda w: w.predict(w.ct(), artifact=w.copy_onnx(onnx_meta('brain'))), "model.onnx", False),
    ("ONNX: node removed", "predict", lambda w: w.predict(w.ct(), artifact=w.copy_onnx(onnx_drop_node)), "model.onnx", True),
    ("ONNX: NaN weights", "predict", lambda w: w.predict(w.ct(), artifact=w.copy_onnx(onnx_nan)), "model.onnx", False),
    ("ONNX: checkpoint of another model", "predict", other_models_ckpt, "model.onnx", False),
    ("ONNX: checkpoint with another preprocessing", "predict", other_preprocess_ckpt, "model.onnx", False),
    ("ONNX: metadata says 2 classes, graph gives 3", "predict", lambda w: w.predict(w.ct(), artifact=w.copy_onnx(onnx_data(task="tumor", num_classes=2))), "model.onnx", False),
    ("ONNX: metadata says 3 input slices, graph takes 1", "predict", lambda w: w.predict(w.ct(), artifact=w.copy_onnx(onnx_data(context=1, in_channels=3))), "model.onnx", False),
    ("ONNX: in_plane_size 0 in metadata", "predict", lambda w: w.predict(w.ct(), artifact=w.copy_onnx(onnx_data(preprocess={"in_plane_size": [0, 0]}))), "model.onnx", False),
    ("ONNX: axcodes XYZ in metadata", "predict", lambda w: w.predict(w.ct(), artifact=w.copy_onnx(onnx_data(preprocess={"axcodes": "XYZ"}))), "model.onnx", False),
    ("ONNX: a folder", "predict", lambda w: w.predict(w.ct(), artifact=(p := w.tmp / "in" / "m.onnx", p.mkdir(parents=True))[0]), "m.onnx: a folder, not an artefact file", False),
    ("ONNX: corrupt", "predict", lambda w: w.predict(w.ct(), artifact=(p := w.tmp / "in/m.onnx", p.write_bytes(b"garbage" * 99))[0]), "m.onnx", False),
    # options
    ("batch_size=abc", "predict", lambda w: w.predict(w.ct(), "batch_size=abc"), "batch_size", False),
    ("threads=abc", "predict", lambda w: w.predict(w.ct(), "threads=abc"), "threads", False),
    ("missing input=", "predict", lambda w: [f"ckpt={w.ckpt}", f"output={w.out}"], "input", True),
    ("unknown option", "predict", lambda w: w.predict(w.ct(), "bogus=1"), "bogus", True),
    ("postprocess=auto in predict", "predict", lambda w: w.predict(w.ct(), "postprocess=auto"), "postprocess=auto is decided by kdseg-eval on split=val", False),
    ("postprocess=biggest", "predict", lambda w: w.predict(w.ct(), "postprocess=biggest"), "postprocess must be one of none, largest", False),
    ("eval: postprocess=auto on test", "eval", lambda w: [f"ckpt={w.ckpt}", f"data.root={w.lits}", "postprocess=auto"], "postprocess=auto decides on the validation cases (split=val), not split=test", False),
    ("postprocess=largest, a model without data.organ", "predict", lambda w: w.predict(w.ct(), "postprocess=largest", ckpt=w.copy_ckpt(lambda c: c["hyper_parameters"]["data"].pop("organ"))), "neither preprocess.roi_components nor an organ kdseg knows (data.organ=None", False),  # was: kept 1, a pair's half deleted
    ("eval: postprocess=auto, a model of an unknown organ", "eval", lambda w: [f"ckpt={w.copy_ckpt(lambda c: c['hyper_parameters']['data'].update(organ='spleen'))}", f"data.root={w.lits}", "split=val", "postprocess=auto"], "data.organ='spleen'", False),
    ("eval: postprocess=largest protocol=paper", "eval", lambda w: [f"ckpt={w.ckpt}", f"data.root={w.lits}", "protocol=paper", "postprocess=largest"], "protocol=paper is the paper's protocol: use postprocess=none", False),
    ("eval: protocol threshold=abc", "eval", lambda w: [f"ckpt={w.ckpt}", f"data.root={w.lits}", "protocol=paper", "paper_threshold=abc"], "paper_threshold", False),
    ("eval: protocol=paper on a multiclass model", "eval", lambda w: [f"ckpt={w.ckpt}", f"data.root={w.lits}", "protocol=paper"], "protocol=paper applies to binary models", False),  # once named threshold=, which eval lacks
    ("eval: data.task=organ on a multiclass model", "eval", lambda w: [f"ckpt={w.ckpt}", f"data.root={w.lits}", "data.task=organ"], "data.task=organ: this model's task is multiclass", False),  # was ignored: the checkpoint's task was scored
    ("eval: data.task=tumor protocol=paper on a multiclass model", "eval", lambda w: [f"ckpt={w.ckpt}", f"data.root={w.lits}", "data.task=tumor", "protocol=paper"], "one trained with data.task=tumor", False),
    ("eval: paper_threshold=7", "eval", lambda w: [f"ckpt={w.ckpt}", f"data.root={w.lits}", "protocol=paper", "paper_threshold=7"], "paper_threshold=7.0: a probability", False),
    # dataset faults in prepare
    ("prepare: missing label", "prepare", lambda w: w.prepare("missing label"), "volume-1", False),
    ("prepare: a label without its scan", "prepare", lambda w: w.prepare("missing image"), "segmentation-1.nii.gz: missing image volume-1.nii[.gz]", False),
    ("prepare: HU window low = high", "prepare", lambda w: [*good_lits(w), "data.preprocess.window=[100,100]"], "preprocess.window", False),
    ("prepare: HU window reversed", "prepare", lambda w: [*good_lits(w), "data.preprocess.window=[140,-60]"], "preprocess.window", False),
    ("prepare: shape mismatch", "prepare", lambda w: w.prepare("shape mismatch"), "segmentation-1", False),
    ("prepare: affine mismatch", "prepare", lambda w: w.prepare("affine mismatch"), "segmentation-1", False),
    ("prepare: unknown labels", "prepare", lambda w: w.prepare("unknown labels"), "segmentation-1", False),
    ("prepare: a CT as label", "prepare", lambda w: w.prepare("CT as label"), "segmentation-1", False),
    ("prepare: a label without background", "prepare", lambda w: w.prepare("no background"), "segmentation-1", False),
    ("prepare: a label without its image", "prepare", lambda w: w.prepare("no image"), "segmentation-1", False),
    ("prepare: NaN in a label", "prepare", lambda w: w.prepare("NaN label"), "segmentation-1", True),
    ("prepare: NaN in an image", "prepare", lambda w: w.prepare("NaN image"), "volume-1", False),
    ("prepare: constant image", "prepare", lambda w: w.prepare("constant"), "volume-1", False),
    ("prepare: corrupt image", "prepare", lambda w: w.prepare("corrupt"), "volume-1", False),
    ("prepare: truncated image", "prepare", lambda w: w.prepare("truncated"), "volume-1", False),
    ("prepare: 2D image", "prepare", lambda w: w.prepare("not 3D"), "volume-1", False),
    ("prepare: workers=two", "prepare", lambda w: [*TINY_DATA, f"data.root={w.lits}", "workers=two"], "workers", False),
    # training
    ("train: truncated last.ckpt, no good previous", "train", lambda w: truncated_resume(w, prev=False), "last.ckpt", True),
    ("train: max_epochs=abc", "train", lambda w: [*truncated_resume(w, prev=False), "trainer.max_epochs=abc"], "max_epochs", False),
    ("train: a rerun that would resume another seed", "train", lambda w: resume_with(w, "seed=5"), "seed: 123 -> 5", False),
    ("train: a rerun that would resume another network", "train", lambda w: resume_with(w, "model=resnet18"), "model.name: enet -> resnet18", False),
    ("train: a rerun that would resume with another batch size", "train", lambda w: resume_with(w, "data.batch_size=4"), "data.batch_size: 8 -> 4", False),
    ("train: resume= a checkpoint of another width", "train", lambda w: train_args(w, f"resume={w.copy_ckpt()}"), "resume checkpoint of a run of other settings (model.width: 0.5 -> 0.25", False),
    ("train: resume= a checkpoint without its settings, of another width", "train", lambda w: train_args(w, f"resume={w.copy_ckpt(lambda c: c.pop('hyper_parameters'))}"), "resume checkpoint holds other weights than this run's network", False),
    ("train: resume= a checkpoint with another learning rate", "train", lambda w: train_args(w, "model.width=0.5", f"resume={w.copy_ckpt()}", "optim.lr=0.5"), "resume checkpoint of a run of other settings (optim.lr: 0.01 -> 0.5", False),
    ("train: resume= the run's own last.ckpt with another seed", "train", lambda w: resume_with(w, f"resume={w.tmp / 'run' / 'checkpoints' / 'last.ckpt'}", "seed=99", "optim.lr=0.5", "data.augment.flip=false"), "resume checkpoint of a run of other settings (seed: 123 -> 99, optim.lr: 0.01 -> 0.5", False),
    ("train: a rerun in a run folder, data folder not found", "train", lambda w: resume_with(w, "data.root=/nonexistent/lits"), "/nonexistent/lits", False),
    ("train: a rerun in a run folder, trainer.devices=0", "train", lambda w: resume_with(w, "trainer.devices=0"), "devices", False),
    ("train: a rerun in a run folder with more epochs, data.num_workers=-1", "train", lambda w: resume_with(w, "trainer.max_epochs=5", "data.num_workers=-1"), "data.num_workers", False),
    ("train: trainer.max_epochs=0", "train", lambda w: train_args(w, "trainer.max_epochs=0"), "trainer.max_epochs=0: use a whole number >= 1", False),
    ("train: trainer.max_steps=0", "train", lambda w: train_args(w, "trainer.max_steps=0"), "trainer.max_steps=0: use a whole number >= 1", False),
    ("train: checkpoint.monitor misspelled", "train", lambda w: train_args(w, "checkpoint.monitor=val/dice_tumour"), "checkpoint.monitor=val/dice_tumour: not a score this run logs; use one of val/dice_mean, ", False),
    ("distill: checkpoint.monitor misspelled", "distill", lambda w: distill_args(w, "checkpoint.monitor=val/loss"), "checkpoint.monitor=val/loss: not a score this run logs", False),
    ("train: data.num_workers=-1", "train", lambda w: train_args(w, "data.num_workers=-1"), "data.num_workers", False),
    ("train: trainer.precision=bogus", "train", lambda w: train_args(w, "trainer.precision=bogus"), "trainer.precision=bogus", False),
    ("train: trainer.accumulate_grad_batches=0", "train", lambda w: train_args(w, "trainer.accumulate_grad_batches=0"), "trainer.accumulate_grad_batches=0", False),
    ("train: trainer.gradient_clip_val=nan", "train", lambda w: train_args(w, "trainer.gradient_clip_val=nan"), "trainer.gradient_clip_val=nan", False),
    ("train: trainer.gradient_clip_val=-1", "train", lambda w: train_args(w, "trainer.gradient_clip_val=-1"), "trainer.gradient_clip_val=-1", False),
    ("train: checkpoint.every_n_train_steps=2.5", "train", lambda w: train_args(w, "checkpoint.every_n_train_steps=2.5"), "checkpoint.every_n_train_steps=2.5", False),
    ("train: resume= a scan", "train", lambda w: train_args(w, f"resume={w.ct()}"), "ct.nii.gz: resume checkpoint is unreadable (not a weights-only pickle)", False),
    ("train: seed=-1", "train", lambda w: train_args(w, "seed=-1"), "seed", False),
    ("train: seed=null", "train", lambda w: train_args(w, "seed=null"), "seed", False),
    ("train: data.batch_size=0", "train", lambda w: train_args(w, "data.batch_size=0"), "batch_size", False),
    ("train: data.sampling=targt", "train", lambda w: train_args(w, "data.sampling=targt"), "sampling", False),
    ("train: trainer.deterministic=wran", "train", lambda w: train_args(w, "trainer.deterministic=wran"), "deterministic", False),
    ("train: trainer.max_epochs=-5", "train", lambda w: train_args(w, "trainer.max_epochs=-5"), "max_epochs", False),
    ("train: +trainer.max_epoch=5", "train", lambda w: train_args(w, "+trainer.max_epoch=5"), "trainer.max_epoch: not a pytorch_lightning.Trainer argument", False),
    ("train: a rerun that would resume with gradient accumulation", "train", lambda w: resume_with(w, "+trainer.accumulate_grad_batches=2"), "trainer.accumulate_grad_batches", False),
    ("distill: unknown student tap", "distill", lambda w: distill_args(w, "distill.terms.imd_low.student_tap=bogus"), "bogus", False),
    ("distill: negative weight", "distill", lambda w: distill_args(w, "distill.terms.pmd.weight=-1"), "weight", False),
    ("distill: an option the loss lacks", "distill", lambda w: distill_args(w, "+distill.terms.pmd.options.temprature=2"), "temprature", True),
    ("distill: unknown mix", "distill", lambda w: distill_args(w, "+distill.mix=cutmixx"), "cutmixx", False),
    ("distill: run dir is the teacher's run", "distill", lambda w: distill_into_teacher_run(w, inside=False), "teacher-run", False),
    ("distill: run dir inside the teacher's run", "distill", lambda w: distill_into_teacher_run(w, inside=True), "teacher-run/checkpoints/student", False),
    ("train: run dir inside the unlabeled scans", "train", lambda w: (w.ct(), [*TINY_DATA, f"data.root={w.lits}", f"data.unlabeled_root={w.tmp}/in", f"hydra.run.dir={w.tmp}/in/run"])[1], "in/run", False),
    ("train: trainer=gpu without a GPU, wandb on", "train", no_gpu, "No supported gpu backend found", True),  # left wandb_id.txt
    ("train: slices of two sizes, wandb on", "train", two_slice_sizes, "batches need one size", True),  # refused in the Trainer's setup: left wandb/ and csv/
    ("train: no end to the learning-rate schedule, wandb on", "train", lambda w: with_wandb(w, train_args(w, "trainer.max_epochs=-1")), "the cosine learning-rate schedule needs an end", True),  # refused at the training start, after wandb's run folder and csv/hparams.yaml, before the run's config.yaml
    ("train: new run dir deep inside the unlabeled scans", "train", lambda w: (w.ct(), [*TINY_DATA, f"data.root={w.lits}", f"data.unlabeled_root={w.tmp}/in", f"hydra.run.dir={w.tmp}/in/runs/a/b"])[1], "in/runs/a/b", False),
]  # fmt: skip

#: what a refused training run may leave in a run dir that was there before: its log (with
#: the error line); ``config.yaml`` and ``.hydra/`` are written when training starts, so the
#: saved config of the run there stays (``before`` is compared byte for byte below)
HYDRA_BOOKKEEPING = (".hydra", ".log", "config.yaml")


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _in_process(command: str, args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``kdseg-<command>``'s entry function here, as the console script would."""
    result = kdseg_here(command, *args, cwd=cwd, check=False)
    return result.returncode, result.stdout, result.stderr


def _subprocess(
    command: str, args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [str(BIN / f"kdseg-{command}"), *args], capture_output=True, text=True, cwd=cwd, env=env
    )
    return result.returncode, result.stdout, result.stderr


#: the options naming a folder a command reads (the dataset, export's, the unlabeled scans and
#: their organ masks, a teacher's stored predictions): nothing may be written into them
READ_FOLDERS = (
    "data.root",
    "data.unlabeled_root",
    "data.unlabeled_roi_labels",
    "data_root",
    "teacher.predictions",
)
NULLS = ("", "null", "None")


@pytest.fixture(scope="module")
def shared(trained_enet: Path, trained_onnx: Path, phantom_lits: Path) -> dict[str, Path]:
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    files = {"ckpt": ckpt, "onnx": trained_onnx}
    before = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()}
    yield {**files, "lits": phantom_lits}
    after = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items()}
    assert before == after, "a case changed the shared checkpoint or ONNX file"


@pytest.mark.parametrize(
    "command,build,culprit,sub", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_fault(
    shared: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    build: Build,
    culprit: str,
    sub: bool,
) -> None:
    world = World(tmp_path, shared["ckpt"], shared["onnx"], shared["lits"])
    args = [str(a) for a in build(world)]
    culprit = getattr(world, "culprit", culprit)
    (tmp_path / "cwd").mkdir()
    # the default cache root in this row's folder (a real process inherits it): what a refused
    # command leaves there is seen, and nothing may appear in the dataset folders it read
    monkeypatch.setenv("KDSEG_CACHE_DIR", str(tmp_path / "cache"))
    data_roots = [
        Path(a.split("=", 1)[1]).resolve()
        for a in args
        if a.split("=", 1)[0].lstrip("+") in READ_FOLDERS and a.split("=", 1)[1] not in NULLS
    ]
    before = _snapshot(tmp_path)
    folders = {p for p in tmp_path.rglob("*") if p.is_dir()}
    lits_before = _snapshot(shared["lits"]) if command == "eval" else None
    env = getattr(world, "env", None)
    assert sub or env is None, "a row with its own environment runs as a real process"
    if sub:
        code, stdout, stderr = _subprocess(command, args, tmp_path / "cwd", env)
    else:
        code, stdout, stderr = _in_process(command, args, tmp_path / "cwd")
    report = f"exit {code}\nstdout:\n{stdout[-2000:]}\nstderr:\n{stderr[-3000:]}"
    lines = error_lines(stderr)  # after any warning line (prepared phantoms: the HU window)
    assert code == 2, report
    assert len(lines) == 1, report
    assert culprit in lines[0] and "Traceback" not in stderr, report
    after = _snapshot(tmp_path)
    new = set(after) - set(before)
    if command in ("train", "distill"):  # a run's record, in a run dir that was there before
        new = {
            p
            for p in new
            if not any(part in p for part in HYDRA_BOOKKEEPING)
            or not any(k.startswith(p.split("/")[0] + "/") for k in before)
        }
    # nothing, not even the cache or a split, is written into a dataset folder a command reads
    into_data = sorted(
        p for p in after if any(r in (tmp_path / p).resolve().parents for r in data_roots)
    )
    assert {p: after[p] for p in into_data} == {p: before.get(p) for p in into_data}, (
        f"written into a dataset folder: {[p for p in into_data if before.get(p) != after[p]]}"
    )
    if command == "prepare":  # the cache of the good case stays (and stays valid)
        new = {
            p
            for p in new
            if "volume-1" in p or Path(p).name.startswith(".") or not p.startswith("cache/")
        }
    elif command in ("train", "distill", "export"):  # refused once its data is prepared
        new = {p for p in new if not p.startswith("cache/")}
    assert not new, f"files left behind: {sorted(new)}"
    if command in ("train", "distill"):  # a run refused before it starts leaves no run dir
        made = {p for p in tmp_path.rglob("*") if p.is_dir()} - folders
        made = {p for p in made if p != tmp_path / "cache" and tmp_path / "cache" not in p.parents}
        assert not made or any(k.startswith("run/") for k in before), sorted(map(str, made))
    assert {k: after.get(k) for k in before} == before, "an input's bytes changed"
    if lits_before is not None:
        assert _snapshot(shared["lits"]) == lits_before
    bad_pickle_marker(world)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 35 and len({c[0] for c in CASES}) == len(CASES)
    assert sum(c[4] for c in CASES) >= 5  # a handful run as real processes


# ------------------------------------------------------------------ faults that must succeed


def test_rerun_sweeps_stale_temps_and_writes_label_with_report(
    shared: dict[str, Path], tmp_path: Path
) -> None:
    """Temporaries of a killed earlier run (dead pid) are removed by the rerun; a live writer's
    temporary is left alone, and so is a file named like a temporary without a pid (anybody's
    file: once, kdseg's names had no pid); label and report both appear."""
    world = World(tmp_path, shared["ckpt"], shared["onnx"], shared["lits"])
    out = world.out
    out.parent.mkdir(parents=True)
    child = subprocess.Popen(["true"])
    child.wait()  # a finished process: its pid is a killed writer's
    host = temp_host()  # this host's temporaries: another's may be in flight
    stale = [
        out.parent / f".pred-{host}-{child.pid}-abcd1234.nii.gz",
        out.parent / f".pred-{host}-{child.pid}-abcd1234.lesions.json",
    ]
    live = out.parent / f".pred-{host}-{os.getppid()}-live0000.nii.gz"
    foreign = out.parent / ".pred-zz99yy88.nii.gz"  # no pid: not provably a kdseg temporary
    for path in [*stale, live, foreign]:
        path.write_bytes(b"half-written")
    code, stdout, stderr = _in_process("predict", world.predict(world.ct()), tmp_path)
    assert code == 0, stderr
    assert not any(p.exists() for p in stale) and live.exists()
    assert {p.name for p in out.parent.iterdir()} == {
        "pred.nii.gz",
        "pred.lesions.json",
        "pred.lesions.txt",
        live.name,
        foreign.name,
    }


def test_eval_takes_a_data_task_that_is_the_models_own(
    shared: dict[str, Path], tmp_path: Path
) -> None:
    """``data.task=`` on kdseg-eval's command line is checked against the model's task (the
    corpus refuses another one); the model's own is accepted and scored as without it."""
    out = tmp_path / "eval"
    args = [f"ckpt={shared['ckpt']}", f"data.root={shared['lits']}", f"output_dir={out}"]
    code, stdout, stderr = _in_process("eval", [*args, "data.task=multiclass"], tmp_path)
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "multiclass" and set(summary["summary"]) == {"organ", "tumor"}


def test_nonfinite_min_replaces_nan_voxels(shared: dict[str, Path], tmp_path: Path) -> None:
    world = World(tmp_path, shared["ckpt"], shared["onnx"], shared["lits"])
    image = world.floats(lambda d: d.__setitem__((slice(0, 4), 0, 0), np.nan))
    code, _, stderr = _in_process(
        "predict", world.predict(image, "nonfinite=min", "report=false"), tmp_path
    )
    assert code == 0, stderr
    assert nib.load(str(world.out)).shape == SHAPE


def test_unoriented_analyze_reads_a_header_without_orientation(
    shared: dict[str, Path], tmp_path: Path
) -> None:
    """``unoriented=analyze`` takes nibabel's ANALYZE layout for a header with qform and sform
    codes 0 (refused by default: a corpus row), and the label keeps the input's header."""
    world = World(tmp_path, shared["ckpt"], shared["onnx"], shared["lits"])
    image = no_orientation(world)
    code, _, stderr = _in_process(
        "predict", world.predict(image, "unoriented=analyze", "report=false"), tmp_path
    )
    assert code == 0, stderr
    label = nib.load(str(world.out))
    assert label.shape == SHAPE
    assert int(label.header["qform_code"]) == 0 and int(label.header["sform_code"]) == 0
    np.testing.assert_allclose(label.affine, nib.load(str(image)).affine)


def test_onnx_artifact_predicts(shared: dict[str, Path], tmp_path: Path) -> None:
    """The session's ONNX export is good: the ONNX corpus rows fail for their fault alone."""
    world = World(tmp_path, shared["ckpt"], shared["onnx"], shared["lits"])
    args = world.predict(world.ct(), "report=false", artifact=shared["onnx"])
    code, _, stderr = _in_process("predict", args, tmp_path)
    assert code == 0, stderr
    assert world.out.is_file()
    # with its report: stdout says where every file went (the label first, the report last)
    code, stdout, stderr = _in_process("predict", [*args[:-1], "overwrite=true"], tmp_path)
    assert code == 0 and stderr == "", stderr
    lines = stdout.splitlines()
    assert lines[0].endswith(f"-> {world.out}"), stdout
    report = world.out.parent / "pred.lesions.txt"
    assert lines[-1] == f"lesion report: {report} and pred.lesions.json", stdout
    assert report.is_file() and report.with_suffix(".json").is_file()


def test_odd_but_valid_headers_and_hidden_files(shared: dict[str, Path], tmp_path: Path) -> None:
    """A header that places voxels by its sform alone (``pixdim`` left at 1 mm, as plain
    nibabel writes it) is measured in the sform's millimetres; the label does not inherit the
    CT's display range and says it is a label map; a macOS ``._`` file beside a scan in an
    input folder is not a case."""
    world = World(tmp_path, shared["ckpt"], shared["onnx"], shared["lits"])
    data = np.asanyarray(nib.load(str(world.ct())).dataobj)
    header = nib.Nifti1Header()
    header.set_sform(AFFINE, code=2)
    header["cal_min"], header["cal_max"] = -1024, 2000
    scan = tmp_path / "in" / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, None, header=header), str(scan))
    assert nib.load(str(scan)).header.get_zooms() == (1.0, 1.0, 1.0)  # what the file says
    (tmp_path / "in" / "._ct.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    code, _, stderr = _in_process("predict", world.predict(scan.parent, output=tmp_path / "out"), tmp_path)  # fmt: skip
    assert code == 0 and not stderr, stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ct.lesions.json",
        "ct.lesions.txt",
        "ct.nii.gz",
    ]
    report = json.loads((tmp_path / "out" / "ct.lesions.json").read_text())
    assert report["spacing_mm"] == [1.5, 1.5, 3.0]
    label = nib.load(str(tmp_path / "out" / "ct.nii.gz"))
    assert np.array_equal(label.affine, nib.load(str(scan)).affine)
    assert (label.header["cal_min"], label.header["cal_max"]) == (0, 0)
    assert label.header.get_intent()[0] == "label"
    # what else the folder holds is passed over in one line (it was without a word)
    (tmp_path / "in" / "notes.txt").write_text("scanned on the new CT")
    code, _, stderr = _in_process("predict", world.predict(scan.parent, output=tmp_path / "out"), tmp_path)  # fmt: skip
    assert code == 0 and stderr.splitlines() == [
        f"kdseg-predict: warning: {scan.parent}: passed over 1 entry: 1 not NIfTI (notes.txt)"
    ], stderr


def test_a_rerun_of_a_run_saved_before_newer_options_is_the_same_run(
    shared: dict[str, Path], tmp_path: Path
) -> None:
    """A run folder whose ``config.yaml`` predates options kdseg added since (here
    ``data.unlabeled_fraction``, ``data.patch_size`` and ``loss.mix`` are taken out of it) is
    not a run of other settings: the rerun finds it finished, exit 0."""
    world = World(tmp_path, shared["ckpt"], shared["onnx"], shared["lits"])
    args = resume_with(world)
    saved = tmp_path / "run" / "config.yaml"
    old = ("unlabeled_fraction:", "patch_size:", "mix:")
    lines = [line for line in saved.read_text().splitlines() if not line.strip().startswith(old)]
    saved.write_text("\n".join(lines) + "\n")
    (tmp_path / "cwd").mkdir()
    code, stdout, stderr = _in_process("train", args, tmp_path / "cwd")
    assert code == 0, stderr[-3000:]


#: a run's record, which a rerun rewrites once it trains (kdseg.cli.record_run)
RUN_RECORD = ("config.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")


@pytest.mark.parametrize(
    "extra",
    [
        "data.root=/nonexistent/lits",
        "trainer.devices=0",
        "data.num_workers=-1 trainer.max_epochs=5",
        "trainer.max_epochs=5 checkpoint.monitor=val/dice_tumour",
        "trainer.max_epochs=-1",  # refused at the training start, the loggers started
        "resume={last} seed=99 optim.lr=0.5 data.augment.flip=false",
    ],
)
def test_a_refused_rerun_keeps_the_runs_saved_config(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path, extra: str
) -> None:
    """A rerun in a run folder refused (exit 2) by its data, a trainer or loader option (at
    the training start too: a schedule without an end), or ``resume=`` its own checkpoint
    with another seed, optimizer and augmentation, leaves the run's ``config.yaml`` and
    ``.hydra/`` byte for byte: they were rewritten with the refused settings before the
    checks ran (``config.yaml`` then said ``root: /nonexistent/lits``)."""
    run = tmp_path / "run"
    shutil.copytree(trained_enet, run)
    before = {name: (run / name).read_bytes() for name in RUN_RECORD}
    last = run / "checkpoints" / "last.ckpt"
    args = [*TINY_DATA, "logger=csv", f"data.root={phantom_lits}", *TRAINED_ENET, f"hydra.run.dir={run}", *extra.format(last=last).split()]  # fmt: skip
    code, stdout, stderr = _in_process("train", args, tmp_path)
    assert code == 2 and len(error_lines(stderr)) == 1 and "Traceback" not in stderr, stderr
    assert {name: (run / name).read_bytes() for name in RUN_RECORD} == before


def test_a_rerun_that_trains_records_its_settings(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    """The record is written when training starts: a rerun that trains one more epoch
    (``trainer.max_epochs`` may change) saves its own settings, and so does ``resume=`` the
    run's own ``last.ckpt`` with the run's settings."""
    run = tmp_path / "run"
    shutil.copytree(trained_enet, run)
    args = [*TINY_DATA, "logger=csv", f"data.root={phantom_lits}", *TRAINED_ENET, f"hydra.run.dir={run}"]  # fmt: skip
    resume = f"resume={run / 'checkpoints' / 'last.ckpt'}"
    code, _, stderr = _in_process("train", [*args, "trainer.max_epochs=4", resume], tmp_path)
    assert code == 0, stderr[-3000:]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 4 and saved["resume"] == resume.split("=", 1)[1]
    assert "trainer.max_epochs=4" in (run / ".hydra" / "overrides.yaml").read_text()
    assert json.loads((run / "summary.json").read_text())["epochs"] == 4


def test_a_resumed_run_refused_after_the_loggers_start_keeps_all_it_had(
    shared: dict[str, Path], tmp_path: Path
) -> None:
    """A rerun in a run folder that wandb logged (offline) refused after the loggers started
    (here at the training start: no end to the schedule; and by Lightning, trainer=gpu on a
    machine without one): the wandb run folder it made is removed and wandb's links point
    where they did, so the folder holds what it held, byte for byte, but the log (the refusal
    is appended to it): the run's saved config, the wandb id, the checkpoints, the CSV log and
    the earlier wandb run stay as they were."""
    run = tmp_path / "run"
    args = [*TINY_DATA, f"data.root={shared['lits']}", "model=enet", "model.width=0.25", "trainer.max_epochs=1", f"hydra.run.dir={run}"]  # fmt: skip
    wandb = {"WANDB_MODE": "offline"}
    code, _, stderr = _subprocess("train", args, tmp_path, wandb)
    assert code == 0, stderr[-3000:]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # the run wandb logged

    def state() -> dict[str, str]:
        files = _snapshot(run)
        links = {str(p.relative_to(run)): f"-> {os.readlink(p)}" for p in run.rglob("*") if p.is_symlink()}  # fmt: skip
        folders = {str(p.relative_to(run)): "/" for p in run.rglob("*") if p.is_dir() and not p.is_symlink()}  # fmt: skip
        return {**files, **links, **folders}

    before = state()
    record = ("train.log",)
    refusals = [("trainer.max_epochs=-1", "the cosine learning-rate schedule needs an end")]
    if not torch.cuda.is_available():  # the same precision: else refused as other settings
        refusals.append(("trainer=gpu trainer.precision=32-true", "No supported gpu backend"))
    for extra, culprit in refusals:
        code, _, stderr = _subprocess("train", [*args, *extra.split()], tmp_path, wandb)
        assert code == 2 and culprit in stderr and "Traceback" not in stderr, stderr[-3000:]
        after = state()
        assert set(after) == set(before), sorted(set(after) ^ set(before))
        changed = [k for k in before if after[k] != before[k] and not k.startswith(record)]
        assert not changed, changed
    # a folder killed before its first checkpoint: the rerun starts afresh with a new wandb id
    # (tests/test_validation_line.py); refused, it puts the folder's id back
    shutil.rmtree(run / "checkpoints")
    shutil.rmtree(run / "csv")
    before = state()
    code, _, stderr = _subprocess("train", [*args, "trainer.max_epochs=-1"], tmp_path, wandb)
    assert code == 2 and "needs an end" in stderr, stderr[-3000:]
    after = state()
    assert set(after) == set(before), sorted(set(after) ^ set(before))
    assert after["wandb_id.txt"] == before["wandb_id.txt"]
