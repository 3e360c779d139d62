"""Data that must survive and garbage that must not pass, beyond the fault corpus's table: a
found by a black-box audit of the command-line tools (2026-12-06). Each test runs the real
command or function on the situation the audit found and checks the standing rules: nothing
of the user's is replaced, one line on stderr, exit code 2, nothing half-written."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import kdseg, kdseg_here

from kdseg.data.hounsfield import HU10_MIN_SHARE
from kdseg.errors import InputError

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


def _ct(path: Path, data: np.ndarray | None = None) -> Path:
    if data is None:
        data = np.random.default_rng(0).integers(-1000, 300, (40, 36, 8)).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_exit_2(result, culprit: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    report = f"exit {result.returncode}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}"
    assert result.returncode == 2 and len(lines) == 1, report
    assert culprit in lines[0] and "Traceback" not in result.stderr, report


def test_predict_replaces_its_own_label_but_not_another_file(
    trained_enet: Path, tmp_path: Path
) -> None:
    """A rerun replaces the earlier prediction; a file kdseg did not write (a reference mask
    beside the scan) is refused unless ``overwrite=true``."""
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    scan = _ct(tmp_path / "scans" / "volume-1.nii.gz")
    out = tmp_path / "pred" / "p.nii.gz"
    for _ in range(2):
        kdseg_here("predict", f"ckpt={ckpt}", f"input={scan}", f"output={out}")
    assert bytes(nib.load(out).header["descrip"]).rstrip(b"\0") == b"kdseg label"

    mask = _ct(tmp_path / "scans" / "segmentation-1.nii.gz", np.zeros((40, 36, 8), np.uint8))
    before = _digest(mask)
    args = [f"ckpt={ckpt}", f"input={scan}", f"output={mask}"]
    refused = kdseg_here("predict", *args, check=False)
    _one_line_exit_2(refused, "segmentation-1.nii.gz")
    assert _digest(mask) == before
    assert sorted(p.name for p in mask.parent.iterdir()) == sorted([scan.name, mask.name])
    kdseg_here("predict", *args, "overwrite=true")
    assert _digest(mask) != before


def test_a_rerun_without_report_or_overlay_removes_the_earlier_ones(
    trained_enet: Path, tmp_path: Path
) -> None:
    """A rerun with ``report=false`` (or ``overlay=false``) that replaces a kdseg label used
    to leave the earlier run's ``.lesions.json``/``.txt`` and ``.png`` beside the new label:
    another model's numbers read as this one's. They go with the label's replacement; other
    files beside it, and the same names beside a label kdseg did not write, stay."""
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    scan = _ct(tmp_path / "scans" / "volume-1.nii.gz")
    out = tmp_path / "pred" / "p.nii.gz"
    kdseg_here("predict", f"ckpt={ckpt}", f"input={scan}", f"output={out}", "overlay=true")
    siblings = ["p.lesions.json", "p.lesions.txt", "p.png"]
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([*siblings, "p.nii.gz"])
    (out.parent / "p.notes.txt").write_text("a reader's own notes\n")
    kdseg_here("predict", f"ckpt={ckpt}", f"input={scan}", f"output={out}", "report=false")
    assert sorted(p.name for p in out.parent.iterdir()) == ["p.nii.gz", "p.notes.txt"]

    # beside a file kdseg did not write (replaced with overwrite=true) nothing else goes
    mask = _ct(tmp_path / "other" / "m.nii.gz", np.zeros((40, 36, 8), np.uint8))
    (mask.parent / "m.png").write_bytes(b"somebody's picture")
    args = [f"ckpt={ckpt}", f"input={scan}", f"output={mask}", "report=false"]
    kdseg_here("predict", *args, "overwrite=true")
    assert (mask.parent / "m.png").read_bytes() == b"somebody's picture"


def test_phantom_never_writes_over_a_dataset(tmp_path: Path) -> None:
    """A folder that holds a real scan under a phantom's name, or another seed's phantoms."""
    root = tmp_path / "data"
    scan = _ct(root / "volume-0.nii.gz")
    before = _digest(scan)
    tiny = "params={size_range: [48, 48], slices_range: [8, 8]}"
    refused = kdseg_here("phantom", "dataset=lits", f"root={root}", "n_cases=2", tiny, check=False)
    _one_line_exit_2(refused, "volume-0.nii.gz")
    assert _digest(scan) == before and sorted(p.name for p in root.iterdir()) == [scan.name]

    os.rename(scan, root / "volume-5.nii.gz")  # a real case at another index: no mixing in
    refused = kdseg_here("phantom", "dataset=lits", f"root={root}", "n_cases=2", tiny, check=False)
    _one_line_exit_2(refused, "volume-5.nii.gz")
    assert sorted(p.name for p in root.iterdir()) == ["volume-5.nii.gz"]

    phantoms = tmp_path / "phantoms"
    kdseg_here("phantom", "dataset=lits", f"root={phantoms}", "n_cases=1", "seed=1", tiny)
    # resumes
    kdseg_here("phantom", "dataset=lits", f"root={phantoms}", "n_cases=2", "seed=1", tiny)
    other = kdseg_here(
        "phantom", "dataset=lits", f"root={phantoms}", "n_cases=1", "seed=2", tiny, check=False
    )
    _one_line_exit_2(other, "volume-0.nii.gz")
    unknown = kdseg_here(
        "phantom", "dataset=lits", f"root={tmp_path / 'x'}", "params={size_rang: [1]}", check=False
    )
    _one_line_exit_2(unknown, "size_rang")


def test_zero_voxel_size_and_broken_scales_are_refused(tmp_path: Path) -> None:
    from kdseg.data.io import load_volume

    path = _ct(tmp_path / "ct.nii")
    header = nib.load(path).header
    raw = bytearray(path.read_bytes())
    raw[80:84] = np.float32(0).tobytes()  # pixdim[1]
    raw[254:256] = np.int16(0).tobytes()  # sform_code 0
    zero = tmp_path / "zero.nii"
    zero.write_bytes(bytes(raw))
    assert header["pixdim"][1] == 1.5
    with pytest.raises(InputError, match="zero.nii.*pixdim"):
        load_volume(zero)
    raw[80:84] = np.float32(-1.5).tobytes()  # negative: taken as its size, quietly
    negative = tmp_path / "negative.nii"
    negative.write_bytes(bytes(raw))
    assert np.allclose(np.abs(np.diag(load_volume(negative).affine))[:3], [1.5, 1.5, 3.0])
    # not HU: a PNG-like 0..255 export, a label map and values beyond any CT scale are
    # refused, naming the file; the same values shifted to hold air, or fat only, are a CT
    png = np.random.default_rng(1).integers(0, 256, (40, 36, 8)).astype(np.uint8)
    with pytest.raises(InputError, match=r"uint8\.nii\.gz.*none below 0 "):
        load_volume(_ct(tmp_path / "uint8.nii.gz", png))
    with pytest.raises(InputError, match="mask.nii.gz.*label map"):
        load_volume(_ct(tmp_path / "mask.nii.gz", (png > 128).astype(np.uint8)))
    with pytest.raises(InputError, match="huge.nii.gz.*beyond any CT scale"):
        load_volume(_ct(tmp_path / "huge.nii.gz", (png.astype(np.float32) + 1) * 1e6))
    load_volume(_ct(tmp_path / "hu.nii.gz", png.astype(np.int16) * 4 - 1000))
    load_volume(_ct(tmp_path / "fat.nii.gz", png.astype(np.int16) - 100))


def test_a_header_nibabel_complains_about_is_one_line_and_nibabel_says_nothing(
    tmp_path: Path, caplog, capfd
) -> None:
    """A bad magic string or an unknown data type: nibabel logs them at level 40 and 45, above
    the ERROR level it was held to, so they reached stderr and the console handler (one
    ``kdseg-...: error:`` line each) before the line that names the file. Nothing of
    nibabel's is logged now, and its logger's level is as it was."""
    from kdseg.data.io import load_volume

    raw = bytearray(_ct(tmp_path / "ct.nii").read_bytes())
    logger = nib.imageglobals.logger
    level = logger.level
    for name, offset, value in (("magic", 344, b"xxxx"), ("dtype", 70, b"\x0f\x27")):
        broken = bytearray(raw)
        broken[offset : offset + len(value)] = value
        path = tmp_path / f"{name}.nii"
        path.write_bytes(bytes(broken))
        with caplog.at_level(logging.DEBUG), pytest.raises(InputError, match=f"{name}.nii: "):
            load_volume(path)
    assert not caplog.records and capfd.readouterr().err == ""
    assert logger.level == level


def _scaled(tmp_path: Path, slope: float, inter: float) -> Path:
    """A CT whose header's ``scl_slope`` and ``scl_inter`` are as given, written as is."""
    raw = bytearray(_ct(tmp_path / "ct.nii").read_bytes())
    raw[112:120] = np.array([slope, inter], "<f4").tobytes()
    path = tmp_path / f"s{slope}_i{inter}.nii"
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    ("slope", "inter", "said"),
    [
        (np.inf, 0.0, "scl_slope is inf"),
        (-np.inf, 0.0, "scl_slope is -inf"),
        (1.0, np.inf, "scl_inter is inf"),
        (1.0, np.nan, "scl_inter is nan"),
        (0.0, -np.inf, "scl_inter is -inf"),
        (np.nan, -1024.0, "scl_slope is nan .no scaling. beside scl_inter -1024"),
        (0.0, -1024.0, "scl_slope is 0 .no scaling. beside scl_inter -1024"),
    ],
)
def test_a_voxel_scaling_that_is_not_a_number_is_refused(
    tmp_path: Path, slope: float, inter: float, said: str
) -> None:
    """An infinite slope, or NaN beside an intercept, made nibabel drop the scaling, the
    intercept with it (the wrong HU, without a word); a slope that scales beside an intercept
    that is not a number was "cannot read NIfTI (ImageFileError ...)". Each is one line
    naming the file and the field."""
    from kdseg.data.io import load_volume

    path = _scaled(tmp_path, slope, inter)
    with pytest.raises(InputError, match=f"{re.escape(path.name)}: {said}"):
        load_volume(path)


def test_an_unset_or_finite_voxel_scaling_is_read(tmp_path: Path) -> None:
    """What writers store for "no scaling" is read as stored: NaN and NaN (nibabel's own,
    as it saves any image), 0 and 0 (the NIfTI standard's), 0 and NaN; a finite scaling is
    applied."""
    from kdseg.data.io import load_volume

    stored = np.asarray(nib.load(_ct(tmp_path / "ct.nii")).dataobj)
    assert np.isnan(nib.load(tmp_path / "ct.nii").header["scl_slope"])  # nibabel's "unset"
    for slope, inter in ((np.nan, np.nan), (0.0, 0.0), (0.0, np.nan), (np.nan, 0.0)):
        got = np.asarray(load_volume(_scaled(tmp_path, slope, inter)).dataobj)
        np.testing.assert_array_equal(got, stored)
    got = np.asarray(load_volume(_scaled(tmp_path, 1.0, 24.0)).dataobj)
    np.testing.assert_array_equal(got, stored + 24.0)


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
def test_a_negative_dimension_in_the_header_is_one_line(tmp_path: Path, name: str) -> None:
    """``dim[2] = -5`` was an internal error (nibabel's memory map of a negative length)."""
    from kdseg.data.io import load_volume

    raw = bytearray(_ct(tmp_path / "ct.nii").read_bytes())
    raw[44:46] = np.int16(-5).tobytes()  # dim[2]
    path = tmp_path / "bad" / name
    path.parent.mkdir()
    path.write_bytes(gzip.compress(bytes(raw)) if name.endswith(".gz") else bytes(raw))
    with pytest.raises(InputError, match=r"dimensions \(40, -5, 8\) are not all positive"):
        load_volume(path)


def test_export_refuses_one_file_for_both_cascade_stages(
    trained_enet: Path, tmp_path: Path
) -> None:
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    out = tmp_path / "a.onnx"
    result = kdseg_here(
        "export",
        f"ckpt=[{ckpt},{ckpt}]",
        f"output=[{out},{tmp_path}/./a.onnx]",
        "check_slices=0",
        check=False,
    )
    _one_line_exit_2(result, "a.onnx")
    assert not out.exists()


def test_report_refuses_an_output_inside_a_run_it_reads(trained_enet: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_enet, run)
    before = sorted(str(p) for p in run.rglob("*"))
    result = kdseg_here("report", f"runs=[{run}]", f"output_dir={run}/report", check=False)
    _one_line_exit_2(result, "report")
    assert sorted(str(p) for p in run.rglob("*")) == before
    # a glob across folders reads the run as the report matches it (`**`: zero folders too);
    # the check matched it without `**` and wrote the report into the run
    pattern = f"{tmp_path}/**/run"
    result = kdseg_here("report", f"runs=[{pattern}]", f"output_dir={run}/report", check=False)
    _one_line_exit_2(result, "report")
    assert sorted(str(p) for p in run.rglob("*")) == before


@pytest.mark.parametrize(
    "args,culprit",
    [
        (["nonet"], "nonet"),
        (["--width", "-1", "enet"], "--width"),
        (["--width", "inf", "enet"], "--width"),
        (["--width", "1e308", "enet"], "--width"),  # was an OverflowError traceback
        (["--width", "64.5", "enet"], "--width 64.5: must be above 0 and at most 64"),
        (["--size", "0"], "--size"),
    ],
)
def test_models_errors_are_one_line(args: list[str], culprit: str) -> None:
    _one_line_exit_2(kdseg_here("models", *args, check=False), culprit)


def test_pseudolabel_errors_and_no_half_written_dataset(trained_enet: Path, tmp_path: Path) -> None:
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    scans = tmp_path / "scans"
    _ct(scans / "a.nii.gz")
    out = tmp_path / "pseudo"
    common = [f"ckpt={ckpt}", f"input={scans}", f"output={out}", "flip_check=false"]
    _one_line_exit_2(kdseg_here("pseudolabel", *common, "bogus=1", check=False), "bogus")
    file_input = kdseg_here(
        "pseudolabel", f"ckpt={ckpt}", f"input={scans / 'a.nii.gz'}", f"output={out}", check=False
    )
    _one_line_exit_2(file_input, "a.nii.gz")
    _one_line_exit_2(
        kdseg_here("pseudolabel", f"ckpt={ckpt}", "input=", f"output={out}", check=False), "input"
    )

    # the second case is garbage: the first one's files must not be left as a dataset
    bad = np.random.default_rng(2).normal(0, 300, (40, 36, 8)).astype(np.float32)
    bad[1, 2, 3] = np.nan
    _ct(scans / "b.nii.gz", bad)
    result = kdseg_here("pseudolabel", *common, check=False)
    _one_line_exit_2(result, "b.nii.gz")
    assert not out.exists() and not list(tmp_path.glob(".pseudo*"))

    os.remove(scans / "b.nii.gz")
    kdseg_here("pseudolabel", *common)
    assert (out / "dataset.json").is_file() and (out / "labelsTr" / "a.nii.gz").is_file()
    # reruns in place
    kdseg_here("pseudolabel", *common[:2], "output=.", "flip_check=false", cwd=out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["confidence.csv", "dataset.json", "imagesTr", "labelsTr"]
    )
    (out / "notes.txt").write_text("mine")  # a dataset folder with the user's file in it
    _one_line_exit_2(kdseg_here("pseudolabel", *common, check=False), "pseudo")
    assert (out / "notes.txt").read_text() == "mine"
    # a folder that is not a pseudo-label dataset is never replaced
    other = tmp_path / "other"
    _ct(other / "keep.nii.gz")
    refused = kdseg_here("pseudolabel", *common[:2], f"output={other}", check=False)
    _one_line_exit_2(refused, "other")
    assert [p.name for p in other.iterdir()] == ["keep.nii.gz"]


def test_bench_refuses_a_missing_checkpoint_before_measuring(tmp_path: Path) -> None:
    entries = f"entries=[{{name: x, ckpt: {tmp_path}/nope.ckpt, backend: torch}}]"
    result = kdseg_here(
        "bench", "quick=true", "dice=false", f"output_dir={tmp_path}/b", entries, check=False
    )
    _one_line_exit_2(result, "nope.ckpt")
    assert not (tmp_path / "b").exists()


def test_dicom_seg_writer_logs_nothing_at_info(tmp_path: Path, caplog) -> None:
    """highdicom logs a line per copied module at INFO; a command's stdout logging shows INFO."""
    from kdseg.data.dicom import load_dicom_series
    from kdseg.data.dicom_seg import write_dicom_seg
    from kdseg.data.dicom_write import write_dicom_series

    hu = np.random.default_rng(0).integers(-200, 200, size=(30, 26, 9)).astype(np.int16)
    write_dicom_series(nib.Nifti1Image(hu, AFFINE), tmp_path / "series")
    label = np.zeros(load_dicom_series(tmp_path / "series").shape, np.uint8)
    label[5:10, 5:10, 2:4] = 1
    caplog.set_level(logging.INFO)
    write_dicom_seg(label, tmp_path / "series", tmp_path / "seg.dcm")
    assert not [r for r in caplog.records if r.name.startswith("highdicom")]


def test_checkpoint_errors_never_advise_unsafe_loading(tmp_path: Path) -> None:
    import pickle

    from kdseg.eval.checkpoint import read_checkpoint

    path = tmp_path / "m.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"a": Path("x")}, f)
    for content in (path.read_bytes(), b"hello world, a text file\n", os.urandom(3000)):
        path.write_bytes(content)
        with pytest.raises(InputError) as info:
            read_checkpoint(path)
        message = str(info.value)
        assert (
            "m.ckpt" in message and "weights_only=False" not in message and "(101)" not in message
        )


def test_failed_predict_leaves_no_new_folder(
    trained_enet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output's folders, made for its temporaries, go again when the run fails there
    (here the lesion report's writer fails, as a SIGTERM during the write would stop it)."""
    from test_fault_corpus import _in_process

    import kdseg.eval.lesions

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(kdseg.eval.lesions, "write_lesion_report", boom)
    scan = _ct(tmp_path / "in" / "ct.nii.gz")
    out = tmp_path / "new" / "deeper" / "p.nii.gz"
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    code, _, stderr = _in_process(
        "predict", [f"ckpt={ckpt}", f"input={scan}", f"output={out}"], tmp_path
    )
    assert code == 1 and "boom" in stderr, stderr
    assert not (tmp_path / "new").exists()


def test_eval_default_output_of_a_bare_checkpoint_is_beside_it(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    """A checkpoint outside a run's ``checkpoints/`` folder: results beside it, not one folder
    up (a run's checkpoint keeps writing into its run, see test_pipeline)."""
    from conftest import TINY_DATA

    bare = tmp_path / "models" / "m.ckpt"
    bare.parent.mkdir()
    shutil.copy(trained_enet / "checkpoints" / "best.ckpt", bare)
    kdseg_here("eval", *TINY_DATA, f"data.root={phantom_lits}", f"ckpt={bare}")
    assert (bare.parent / "eval-test-full" / "summary.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_eval_never_writes_into_the_dataset_and_an_empty_split_is_one_line(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    """kdseg-eval only reads data.root: no kdseg_split.json (or anything else) appears in a
    folder without one; a split with no cases is exit 2 naming the folder, nothing written."""
    from conftest import TINY_DATA

    data = tmp_path / "lits"
    data.mkdir()
    for path in phantom_lits.glob("*.nii*"):
        shutil.copy(path, data / path.name)
    before = sorted(p.name for p in data.iterdir())
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    out = tmp_path / "out"
    kdseg_here("eval", *TINY_DATA, f"data.root={data}", f"ckpt={ckpt}", f"output_dir={out}")
    assert (out / "summary.json").is_file()
    assert sorted(p.name for p in data.iterdir()) == before
    one = tmp_path / "one"  # one case: the seeded split has no test case
    one.mkdir()
    volume = sorted(data.glob("volume-*"))[0]
    shutil.copy(volume, one / volume.name)
    label = volume.name.replace("volume-", "segmentation-")
    shutil.copy(data / label, one / label)
    result = kdseg_here(
        "eval",
        *TINY_DATA,
        f"data.root={one}",
        f"ckpt={ckpt}",
        f"output_dir={tmp_path / 'o2'}",
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"kdseg-eval: error: {one}: split 'test' holds no cases (1 case(s) in the folder)"
    ]
    assert not (tmp_path / "o2").exists() and len(list(one.iterdir())) == 2


def test_a_dataset_that_cannot_be_written_keeps_its_split_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only mount: the seeded split is made, used and not written (same cases, same
    seed, same split); read-only commands never try."""
    import errno

    from kdseg.data import manifest

    ids = [f"c{i}" for i in range(10)]
    store = tmp_path / "cache" / "lits-key" / manifest.FOLDER_SPLIT_NAME
    data = tmp_path / "data"
    data.mkdir()
    assert manifest.resolve_split(data, ids, persist=False, store=store) == manifest.make_split(ids)
    assert not store.exists() and list(data.iterdir()) == []
    assert manifest.resolve_split(data, ids) == manifest.make_split(ids)  # no store: in memory
    assert list(tmp_path.iterdir()) == [data] and list(data.iterdir()) == []

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch:
        patch.setattr(manifest, "write_split", read_only)
        assert manifest.resolve_split(data, ids, store=store) == manifest.make_split(ids)
    assert list(tmp_path.iterdir()) == [data] and list(data.iterdir()) == []


def test_the_persisted_split_keeps_its_test_cases_when_cases_are_added(tmp_path: Path) -> None:
    """The seeded split is written to the cache root (never into the dataset) and read back
    where the folder's own file would be: cases added later never move a test case to train;
    read-only commands read it too. A kdseg_split.json in the folder (the user's, or one an
    older kdseg wrote there) still comes first, as does data.split_file."""
    from kdseg.data import manifest

    data = tmp_path / "data"
    data.mkdir()
    store = tmp_path / "cache" / "lits-key" / manifest.FOLDER_SPLIT_NAME
    first = manifest.resolve_split(data, [f"c{i}" for i in range(10)], store=store)
    assert store.is_file() and list(data.iterdir()) == []
    more = [f"c{i}" for i in range(40)]
    assert manifest.make_split(more)["train"] != first["train"]  # a new seeded split would move
    assert manifest.resolve_split(data, more, store=store) == first
    assert manifest.resolve_split(data, more, store=store, persist=False) == first
    own = {"train": ["c1"], "val": ["c2"], "test": ["c3"]}
    manifest.write_split(own, data / manifest.FOLDER_SPLIT_NAME)
    assert manifest.resolve_split(data, more, store=store) == own
    explicit = {"train": ["c4"], "val": ["c5"], "test": ["c6"]}
    manifest.write_split(explicit, tmp_path / "mine.json")
    chosen = manifest.resolve_split(data, more, split_file=str(tmp_path / "mine.json"), store=store)
    assert chosen == explicit


def test_a_read_only_dataset_needs_no_setting(
    phantom_lits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only data.root (simulated: every write into it fails with EROFS, as root ignores
    chmod) prepares and trains with no option: the cache and the split go to the cache root."""
    import errno

    from conftest import TINY_DATA

    from kdseg import errors
    from kdseg.data.dataset import split_store

    data = tmp_path / "lits"
    shutil.copytree(phantom_lits, data)
    resolved = data.resolve()
    write = errors._new_temp

    def read_only_data(target: Path, *args: object, **kwargs: object) -> Path:
        if resolved in Path(target).resolve().parents:
            raise OSError(errno.EROFS, "Read-only file system", str(target))
        return write(target, *args, **kwargs)

    monkeypatch.setattr(errors, "_new_temp", read_only_data)
    before = {p: p.stat().st_mtime_ns for p in [data, *data.rglob("*")]}
    cache = tmp_path / "cache"
    monkeypatch.setenv("KDSEG_CACHE_DIR", str(cache))
    result = kdseg_here("prepare", *TINY_DATA, f"data.root={data}")
    assert "5 case(s) prepared in " + str(cache) in result.stdout
    assert {p: p.stat().st_mtime_ns for p in [data, *data.rglob("*")]} == before
    stores = list(cache.glob("lits-*/kdseg_split.json"))
    assert len(stores) == 1 and stores[0] == split_store({"name": "lits", "root": str(data)})
    inside = data / "cache"  # a cache root inside the dataset is refused, naming the option
    args = (f"data.root={data}", f"data.cache_root={inside}")
    result = kdseg_here("prepare", *TINY_DATA, *args, check=False)
    assert result.returncode == 2 and "data.cache_root lies inside data.root" in result.stderr
    assert not inside.exists()
    assert {p: p.stat().st_mtime_ns for p in [data, *data.rglob("*")]} == before


def test_kdseg_split_writes_where_runs_read_it_never_into_the_folder(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """kdseg-split writes the split to the cache root, where the runs on that folder with its
    seed read it, or to output= (refused inside data.root), and says where; nothing goes into
    the dataset folder. An existing split is replaced only with force=true (the runs so far
    used it); another seed writes a split of its own beside it; a folder with its own
    kdseg_split.json, read first, is refused in one line naming the way out."""
    from conftest import error_lines
    from test_pipeline import _data_cfg

    from kdseg.data.dataset import resolve_data, split_store
    from kdseg.data.manifest import FOLDER_SPLIT_NAME, read_split

    data = tmp_path / "lits"
    shutil.copytree(phantom_lits, data)
    cache = tmp_path / "cache"
    before = {p: p.stat().st_mtime_ns for p in [data, *data.rglob("*")]}
    args = (f"data.root={data}", f"data.cache_root={cache}", "data.split_seed=7")
    cfg = {"name": "lits", "root": str(data), "cache_root": cache, "split_seed": 7}
    store = split_store(cfg)
    assert store.name == "kdseg_split-seed7.json"  # the default seed's file is another one
    result = kdseg_here("split", *args)
    assert result.stdout.strip().splitlines() == [
        f"{store}: train 3, val 1, test 1 (read by runs on {data} with data.split_seed=7 that "
        "name no data.split_file)"
    ]
    assert {p: p.stat().st_mtime_ns for p in [data, *data.rglob("*")]} == before
    written = read_split(store)
    seven = {"data.cache_root": cache, "data.split_seed": 7}
    assert resolve_data(_data_cfg(data, **seven)).split == written
    assert json.loads(store.read_text())["seed"] == 7
    result = kdseg_here("split", *args, check=False)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert str(store) in lines[0] and "split exists" in lines[0] and "force=true" in lines[0]
    assert "data.split_seed=7" in lines[0]
    assert read_split(store) == written
    kdseg_here("split", *args, "force=true")
    assert read_split(store) == written  # (the same seed and cases: the same split)
    kdseg_here("split", *args, "data.split_seed=8")  # a split of its own, beside seed 7's
    eight = read_split(split_store({**cfg, "split_seed": 8}))
    assert eight != written and read_split(store) == written  # (seeds 7 and 8 differ here)
    inside = data / "mine.json"
    result = kdseg_here("split", *args, f"output={inside}", check=False)
    assert result.returncode == 2 and not inside.exists()
    assert error_lines(result.stderr) == [
        f"kdseg-split: error: {inside}: output lies inside the input folder {data}; write it "
        "elsewhere"
    ]
    mine = tmp_path / "splits" / "mine.json"
    result = kdseg_here("split", *args, f"output={mine}")
    assert result.stdout.strip() == (
        f"{mine}: train 3, val 1, test 1; use it with data.split_file={mine}"
    )
    assert read_split(mine) == written
    refused = kdseg_here("split", *args, f"output={mine}", check=False)
    assert refused.returncode == 2 and "force=true" in error_lines(refused.stderr)[0]
    refused = kdseg_here("split", *args, f"data.split_file={mine}", check=False)  # to read
    assert refused.returncode == 2 and error_lines(refused.stderr) == [
        f"kdseg-split: error: data.split_file={mine}: kdseg-split writes a split and runs given "
        "data.split_file read that file instead; write to a file of your own with output="
    ]
    assert {p: p.stat().st_mtime_ns for p in [data, *data.rglob("*")]} == before
    own = data / FOLDER_SPLIT_NAME  # the folder's own split is read first: a store split
    shutil.copy(mine, own)  # would never be used
    stamp = store.stat().st_mtime_ns
    result = kdseg_here("split", *args, "force=true", check=False)
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kdseg-split: error: {own}: this folder's own split is read")
    assert str(store) in lines[0] and "output=" in lines[0] and "data.split_file=" in lines[0]
    assert store.stat().st_mtime_ns == stamp


def test_each_split_seed_keeps_a_persisted_split_of_its_own(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """kdseg-prepare with two seeds on one folder: two splits, each persisted in a file of its
    own and read back (a case added later is in no set of either; no case moves). The default
    seed's file keeps its name. A split a kdseg before 2026-12-07 persisted under the default
    name for another seed (seed 7) is read in place by runs of seed 7 (its cases keep their
    sets in the grown folder) and refused for the default seed in one line naming it and
    where it belongs; a seed with a split file it does not cut is one warning line."""
    from conftest import TINY_DATA, WARNING_LINE, error_lines

    from kdseg.data.dataset import dataset_key, split_store
    from kdseg.data.manifest import make_split, read_split, write_split

    data = tmp_path / "lits"
    shutil.copytree(phantom_lits, data)
    cache = tmp_path / "cache"
    args = (*TINY_DATA, f"data.root={data}", f"data.cache_root={cache}")
    cfg = {"name": "lits", "root": str(data), "cache_root": cache}
    default, five = split_store(cfg), split_store({**cfg, "split_seed": 5})
    assert default == cache / dataset_key(cfg) / "kdseg_split.json"  # as before
    assert five == default.with_name("kdseg_split-seed5.json")
    assert split_store({**cfg, "split_fractions": [0.6, 0.2, 0.2]}).name == (
        "kdseg_split-seed123-fractions0.6-0.2-0.2.json"
    )
    kdseg_here("prepare", *args)
    kdseg_here("prepare", *args, "data.split_seed=5")
    ids = [f"volume-{i}" for i in range(5)]
    assert read_split(default) == make_split(ids)
    assert read_split(five) == make_split(ids, seed=5) != read_split(default)
    assert json.loads(five.read_text())["seed"] == 5
    for name in ("volume", "segmentation"):  # a case added since: neither split is cut again
        shutil.copy2(data / f"{name}-0.nii.gz", data / f"{name}-9.nii.gz")
    for seed, store in ((123, default), (5, five)):
        result = kdseg_here("prepare", *args, f"data.split_seed={seed}")
        assert "5 case(s) prepared" in result.stdout
        assert f"1 case(s) in {data} are in no set of {store} ('volume-9')" in result.stderr
        assert read_split(store) == make_split(ids, seed=seed)
    stale = make_split(ids, seed=7)  # kdseg-prepare data.split_seed=7 before 2026-12-07
    write_split(stale, default, seed=7, fractions=[0.7, 0.1, 0.2], root=str(data.resolve()))
    kept = kdseg_here("prepare", *args, "data.split_seed=7")
    assert "5 case(s) prepared" in kept.stdout  # volume-9, added since, in no set of it
    assert f"1 case(s) in {data} are in no set of {default} ('volume-9')" in kept.stderr
    assert read_split(default) == stale and not default.with_name("kdseg_split-seed7.json").exists()
    refused = kdseg_here("split", *args, "data.split_seed=7", check=False)  # the runs read it
    assert refused.returncode == 2 and error_lines(refused.stderr)[0].startswith(
        f"kdseg-split: error: {default}: split exists (the runs on {data} with data.split_seed=7"
    )
    assert not default.with_name("kdseg_split-seed7.json").exists()
    refused = kdseg_here("prepare", *args, check=False)
    assert refused.returncode == 2
    assert error_lines(refused.stderr) == [
        f"kdseg-prepare: error: {default}: this persisted split records seed 7 and fractions "
        "[0.7, 0.1, 0.2], not the data.split_seed=123 and data.split_fractions=[0.7, 0.1, 0.2] "
        "this run asks for (kdseg keeps one split per seed and fractions): move it to "
        f"{default.with_name('kdseg_split-seed7.json')} (where runs with that seed read it) or "
        "delete it for a seeded split of this seed, or pass data.split_file=<it>"
    ]
    assert read_split(default) == stale  # refused, not rewritten
    mine = tmp_path / "mine.json"
    write_split(make_split(ids, seed=1), mine)
    result = kdseg_here("prepare", *args, f"data.split_file={mine}", "data.split_seed=5")
    warned = [line for line in result.stderr.splitlines() if "unused" in line]
    assert warned == [
        f"kdseg-prepare: warning: split: data.split_seed=5 is unused: the split is read from "
        f"{mine} (a seed cuts only a folder without a split file, a kdseg_split.json of its "
        "own or a complete versioned manifest)"
    ]
    assert WARNING_LINE.match(warned[0])
    result = kdseg_here("prepare", *args, f"data.split_file={mine}")  # the default: no line
    assert "unused" not in result.stderr


def test_a_cache_that_cannot_be_written_is_one_line_naming_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache root that cannot be written (a read-only mount): exit 2 naming the folder and
    the option (or environment variable) that moves it, not an internal error."""
    import errno

    from kdseg.data import prepare
    from kdseg.data.preprocess_config import PreprocessConfig
    from kdseg.errors import InputError

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(prepare, "write_text_atomic", read_only)
    line = rf"into {re.escape(str(tmp_path))} \(Read-only file system\); .*data\.cache_root="
    with pytest.raises(InputError, match=line + r".*KDSEG_CACHE_DIR") as err:
        prepare.prepare_cases([], PreprocessConfig(), tmp_path / "cache", progress=False)
    assert err.value.path == str(tmp_path / "cache")
    # a complete cache whose record an earlier kdseg wrote, before keys were added to the
    # config (label_resize, roi_components): the same config, read as it is, not rewritten
    cfg = PreprocessConfig()
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("label_resize", "roi_components")}
    (tmp_path / "cache").mkdir()
    record = {"config": old, "digest": cfg.digest(), "source": ""}
    (tmp_path / "cache" / "preprocess.json").write_text(json.dumps(record, indent=1))
    prepare.prepare_cases([], cfg, tmp_path / "cache", progress=False)  # no write, no error


def test_an_input_named_like_a_dead_writers_temporary_is_never_swept(tmp_path: Path) -> None:
    """The sweep of a killed run's temporaries spares the files a command reads."""
    import subprocess

    from kdseg.errors import remove_stale_temps, temp_host
    from kdseg.guards import check_output

    child = subprocess.Popen(["true"])
    child.wait()  # a finished process: its pid is a killed writer's
    scan = tmp_path / f".ct-{temp_host()}-{child.pid}-abcd1234.nii.gz"
    stale = tmp_path / f".ct-{temp_host()}-{child.pid}-efgh5678.nii.gz"
    scan.write_bytes(b"the only copy")
    stale.write_bytes(b"half-written")
    check_output(tmp_path / "ct.nii.gz", [scan])
    assert remove_stale_temps(tmp_path / "ct.nii.gz") == [stale]
    assert scan.read_bytes() == b"the only copy"


@pytest.mark.parametrize(
    ("one", "other"),
    [("node-1", "node.1"), ("w" * 40 + "-worker-0", "w" * 40 + "-worker-1")],
)
def test_two_hosts_never_share_a_temporary_tag(
    monkeypatch: pytest.MonkeyPatch, one: str, other: str
) -> None:
    """Hosts whose names differ only in the characters a tag replaces, or beyond its length
    (a StatefulSet's long pod names), get tags of their own: a shared tag let one host sweep
    the other's temporaries in flight (its writer's pid is dead there)."""
    import socket

    from kdseg.errors import temp_host

    tags = []
    for name in (one, other):
        monkeypatch.setattr(socket, "gethostname", lambda name=name: name)
        tags.append(temp_host())
    assert tags[0] != tags[1] and all(re.fullmatch(r"\w{1,31}_[0-9a-f]{8}", t) for t in tags)


@pytest.mark.parametrize(
    "variable", ["RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK", "GROUP_RANK"]
)
def test_a_process_of_another_node_is_not_the_first(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """A multi-node launch by hand sets NODE_RANK (Lightning) or GROUP_RANK (torchrun) on each
    node, and its local rank 0 there has RANK unset until the process group starts: it wrote
    config.yaml and minted a wandb id of its own. A node's rank is read only in a launch of
    several processes (WORLD_SIZE over 1): a NODE_RANK left in a node's environment does not
    make a run of one process there a worker that writes nothing."""
    from kdseg.errors import NODE_RANK_VARIABLES, RANK_VARIABLES, first_process

    for name in (*RANK_VARIABLES, *NODE_RANK_VARIABLES, "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert first_process()
    monkeypatch.setenv(variable, "1")
    assert first_process() == (variable in NODE_RANK_VARIABLES)  # one process: the first
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert not first_process()


def test_only_this_hosts_temporaries_are_swept(tmp_path: Path) -> None:
    """A temporary's name carries its writer's host and pid, and a sweep removes only this
    host's whose writer is gone: on a shared file system another host's writer may be
    running under a pid that is dead here (before, a process on one node deleted another
    node's checkpoint temporary in flight). A temporary named as before (pid, no host) may
    be any host's, and stays too. pseudolabel's build folders and the earlier datasets it
    moves aside likewise."""
    import os
    import subprocess

    from kdseg.errors import atomic_path, remove_stale_temps, temp_host
    from kdseg.eval.pseudolabel import _sweep_partials

    child = subprocess.Popen(["true"])
    child.wait()  # a finished process: its pid is a killed writer's
    host, dead = temp_host(), child.pid
    assert host and all(c.isalnum() or c == "_" for c in host)
    stale = tmp_path / f".best-{host}-{dead}-abcd1234.ckpt"
    elsewhere = tmp_path / f".best-{host}x-{dead}-abcd1234.ckpt"  # another node's
    before = tmp_path / f".best-{dead}-abcd1234.ckpt"  # the names of earlier versions
    for path in (stale, elsewhere, before):
        path.write_bytes(b"half-written")
    with atomic_path(tmp_path / "best.ckpt") as tmp:
        assert tmp.name.startswith(f".best-{host}-{os.getpid()}-")
        tmp.write_bytes(b"whole")
    assert not stale.exists() and elsewhere.exists() and before.exists()
    assert remove_stale_temps(tmp_path / "best.ckpt") == []
    assert (tmp_path / "best.ckpt").read_bytes() == b"whole"
    partials = [
        tmp_path / f".ds.partial-{host}-{dead}",
        tmp_path / f".ds.partial-{host}x-{dead}",
        tmp_path / f".ds.partial-{dead}",
        tmp_path / f".ds.old-{host}-{dead}",  # an earlier dataset moved aside, then killed
        tmp_path / f".ds.old-{host}x-{dead}",
    ]
    (tmp_path / "ds").mkdir()  # the dataset in place: the one moved aside is the older
    for folder in partials:
        folder.mkdir()
    _sweep_partials(tmp_path / "ds")
    assert [folder.exists() for folder in partials] == [False, True, True, False, True]
    (tmp_path / "ds").rmdir()  # killed between its two renames: the earlier one put back
    partials[3].mkdir()
    (partials[3] / "dataset.json").write_text("{}")
    _sweep_partials(tmp_path / "ds")
    assert not partials[3].exists() and (tmp_path / "ds" / "dataset.json").is_file()


def test_pseudolabel_refuses_an_input_inside_the_folder_it_replaces(tmp_path: Path) -> None:
    """Relabelling an earlier dataset in place would replace its images with the folder."""
    from kdseg.errors import InputError
    from kdseg.eval.pseudolabel import check_destination

    (tmp_path / "ds" / "imagesTr").mkdir(parents=True)
    with pytest.raises(InputError, match="lies inside this output folder"):
        check_destination(tmp_path / "ds" / "imagesTr", tmp_path / "ds")
    notes = tmp_path / "notes.txt"  # a file is never replaced by the dataset folder
    notes.write_text("mine")
    with pytest.raises(InputError, match="is a file"):
        check_destination(tmp_path / "ds" / "imagesTr", notes)
    assert notes.read_text() == "mine"


def test_an_image_copied_for_its_label_keeps_its_singleton_axis(tmp_path: Path) -> None:
    """kdseg-pseudolabel copies non-.nii.gz images: image and label keep the stored shape."""
    from kdseg.data.io import label_image, load_volume, stored_image

    ct = np.random.default_rng(0).integers(-1000, 1000, (12, 10, 4, 1)).astype(np.int16)
    nib.save(nib.Nifti1Image(ct, np.diag([0.9, 0.9, 5.0, 1.0])), tmp_path / "ct.nii")
    image = load_volume(tmp_path / "ct.nii")
    assert image.shape == (12, 10, 4)
    copy = stored_image(image)
    assert copy.shape == label_image(np.zeros(image.shape, np.uint8), image).shape == ct.shape
    np.testing.assert_array_equal(np.asanyarray(copy.dataobj), ct)


@pytest.mark.parametrize("hparams", ["model data", 5, ["model", "data"]])
def test_a_checkpoint_whose_config_is_not_a_mapping_is_one_input_error(
    tmp_path: Path, hparams: object
) -> None:
    """``hyper_parameters`` that is a string, a number or a list (a foreign file loadable with
    ``weights_only=True``) is refused naming the file, not a TypeError (exit 1)."""
    import torch

    from kdseg.eval.checkpoint import read_checkpoint

    path = tmp_path / "odd.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": {}}, path)
    with pytest.raises(InputError, match="odd.ckpt: checkpoint carries no kdseg model/data"):
        read_checkpoint(path)


def test_a_nifti_named_in_capitals_is_read_and_its_label_named_after_it(tmp_path: Path) -> None:
    """``B.NII.GZ`` (a scanner export's naming) was refused by kdseg-predict; nibabel and
    kdseg's readers take an all-capitals suffix (the gzip is told by the name in any case), so
    it is read and its label is ``B.nii.gz``. A suffix of mixed case (``.Nii``) stays refused:
    nibabel looks for a file of another name (``c.nii``) and fails."""
    from test_preprocess import _volume

    from kdseg.cli.predict import plan_outputs
    from kdseg.data.io import load_volume
    from kdseg.data.sources import discover_images

    img, _ = _volume("RAS")
    scans = tmp_path / "scans"
    scans.mkdir()
    nib.save(img, str(scans / "a.nii.gz"))
    (scans / "B.NII.GZ").write_bytes((scans / "a.nii.gz").read_bytes())
    nib.save(img, str(scans / "C.NII"))
    out = tmp_path / "out"
    pairs = plan_outputs(scans, out)
    assert [(s.name, o) for s, o in pairs] == [
        ("B.NII.GZ", out / "B.nii.gz"),
        ("C.NII", out / "C.nii.gz"),
        ("a.nii.gz", out / "a.nii.gz"),
    ]
    assert plan_outputs(scans / "B.NII.GZ", out) == [(scans / "B.NII.GZ", out / "B.nii.gz")]
    for name in ("B.NII.GZ", "C.NII"):
        np.testing.assert_array_equal(load_volume(scans / name).get_fdata(), img.get_fdata())
    assert [case.case_id for case in discover_images(scans)] == ["B", "C", "a"]
    (scans / "d.Nii").write_bytes((scans / "C.NII").read_bytes())
    with pytest.raises(InputError, match="d.Nii: a NIfTI suffix of mixed case"):
        plan_outputs(scans, out)
    with pytest.raises(InputError, match="d.Nii: a NIfTI suffix of mixed case"):
        load_volume(scans / "d.Nii")
    # as an output: the same refusal (``dout/Mixed.Nii.Gz`` became a folder of that name)
    for source in (scans / "B.NII.GZ", scans):
        with pytest.raises(InputError, match="Mixed.Nii.Gz: a NIfTI suffix of mixed case"):
            plan_outputs(source, tmp_path / "dout" / "Mixed.Nii.Gz")
    refused = kdseg_here(
        "predict", "ckpt=missing.ckpt", f"input={scans / 'a.nii.gz'}",
        f"output={tmp_path / 'dout' / 'Mixed.Nii.Gz'}", check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"kdseg-predict: error: {tmp_path / 'dout' / 'Mixed.Nii.Gz'}: a NIfTI suffix of mixed "
        "case, which nibabel cannot read; name it .nii.gz or .nii"
    ], refused.stderr
    assert not (tmp_path / "dout").exists()


def test_a_folder_of_scans_refuses_what_it_would_lose_or_write_twice(tmp_path: Path) -> None:
    """kdseg-pseudolabel passed over ``c.Nii.gz`` without a word (kdseg-predict refused it);
    ``x.nii`` beside ``x.nii.gz`` wrote one case over the other, and ``a.nii.gz`` beside
    ``A.nii.gz`` does so on macOS and Windows. Both commands refuse each up front, in one line
    naming both inputs; so are an empty scan, a link to nothing, a symlink loop (said to be a
    link to nothing) and DICOM slices lying beside other scans (the folder would be read as
    one series, the rest left out)."""
    from test_dicom import AFFINE_FLIPPED
    from test_dicom import _volume as _dicom_volume

    from kdseg.cli.predict import plan_outputs
    from kdseg.data.dicom_write import write_dicom_series
    from kdseg.data.io import load_volume
    from kdseg.data.sources import discover_images

    scans, out = tmp_path / "scans", tmp_path / "out"
    first = _ct(scans / "a.nii.gz")

    def refused(match: str, *extra: Path) -> None:
        for find in (lambda: plan_outputs(scans, out), lambda: discover_images(scans)):
            with pytest.raises(InputError, match=match):
                find()
        for path in extra:
            path.unlink()

    refused(r"c\.Nii\.gz: a NIfTI suffix of mixed case", shutil.copy(first, scans / "c.Nii.gz"))
    refused(
        r"scans/a\.nii\.gz: .* and A\.nii\.gz's .* differ only in case, one file on macOS",
        shutil.copy(first, scans / "A.nii.gz"),
    )
    refused(
        r"scans/x\.nii\.gz: shares the .*'x.* with x\.nii; rename one",
        shutil.copy(first, scans / "x.nii.gz"),
        _ct(scans / "x.nii"),
    )
    (scans / "e.nii").touch()
    refused(r"e\.nii: an empty file \(0 bytes\)", scans / "e.nii")
    (scans / "l.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    refused(r"l\.nii\.gz: a link to nothing", scans / "l.nii.gz")
    (scans / "loop.nii.gz").symlink_to("loop.nii.gz")  # read alone: was "file not found"
    with pytest.raises(InputError, match=r"loop\.nii\.gz: a symlink loop"):
        load_volume(scans / "loop.nii.gz")
    refused(r"loop\.nii\.gz: a symlink loop \(loop\.nii\.gz leads back", scans / "loop.nii.gz")
    slices = write_dicom_series(_dicom_volume(AFFINE_FLIPPED), scans)
    refused(r"scans: holds DICOM slices beside 1 other scan\(s\) \(a\.nii\.gz\)", *slices)
    write_dicom_series(_dicom_volume(AFFINE_FLIPPED), scans / "series")  # a series folder: fine
    assert [s.name for s, _ in plan_outputs(scans, out)] == ["a.nii.gz", "series"]
    assert [c.case_id for c in discover_images(scans)] == ["a", "series"]
    with pytest.raises(InputError, match="series: is one DICOM series, not a folder of scans"):
        discover_images(scans / "series")  # kdseg-pseudolabel: said "no NIfTI files ..."


def test_a_folder_of_scans_says_what_it_passes_over(tmp_path: Path) -> None:
    """Hidden files, files that are not NIfTI and folders without a DICOM series were passed
    over without a word: one line counts them (a clean folder, the operating system's own
    files included, gets none), and a folder with no scan says what it holds instead."""
    from kdseg.cli.predict import plan_outputs
    from kdseg.data.sources import discover_images

    scans, out = tmp_path / "scans", tmp_path / "out"
    _ct(scans / "sub" / "b.nii.gz")
    with pytest.raises(InputError, match=r"no NIfTI .* \(passed over 1 entry: 1 folder without"):
        plan_outputs(scans, out)
    with pytest.raises(InputError) as raised:
        discover_images(scans)
    assert str(raised.value) == (  # the folder is named once, not again in its note
        f"{scans}: no NIfTI files, DICOM series or dataset layout in this folder "
        "(passed over 1 entry: 1 folder without a DICOM series (sub))"
    )
    _ct(scans / "a.nii.gz")
    for name in (".DS_Store", "._a.nii.gz", "Thumbs.db"):
        (scans / name).write_bytes(b"\0\5\26\7")
    (scans / "sub").rename(tmp_path / "sub")
    notes: list[str] = []
    assert [s.name for s, _ in plan_outputs(scans, out, notes)] == ["a.nii.gz"] and not notes
    assert [c.case_id for c in discover_images(scans, notes)] == ["a"] and not notes
    (tmp_path / "sub").rename(scans / "sub")
    shutil.copy(scans / "a.nii.gz", scans / ".c.nii.gz")
    for name in ("notes.txt", "d.nrrd", "e.mha", "f.hdr"):
        (scans / name).write_text("x")
    said = (
        f"{scans}: passed over 6 entries: 1 hidden (.c.nii.gz), 4 not NIfTI (d.nrrd, e.mha, "
        "f.hdr, ...), 1 folder without a DICOM series (sub)"
    )
    plan_outputs(scans, out, notes)
    discover_images(scans, notes)
    assert notes == [said, said]


def test_pseudolabel_refuses_a_scan_it_would_pass_over_before_the_model_loads(
    tmp_path: Path,
) -> None:
    """``c.Nii.gz`` was left out of the dataset without a word; now it is refused in one line,
    before the teacher is read (here there is none) and before anything is written."""
    scans, out = tmp_path / "scans", tmp_path / "pseudo"
    shutil.copy(_ct(scans / "a.nii.gz"), scans / "c.Nii.gz")
    result = kdseg(
        "pseudolabel",
        f"ckpt={tmp_path / 'none.ckpt'}",
        f"input={scans}",
        f"output={out}",
        check=False,
    )
    _one_line_exit_2(result, "c.Nii.gz: a NIfTI suffix of mixed case")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scans"]


def test_a_folder_read_as_lits_says_what_it_passes_over(tmp_path: Path) -> None:
    """A folder with ``volume-N`` files is read as LiTS by kdseg-pseudolabel: another scan
    beside them was passed over without a word (now one line), ``volume-3.NII.GZ`` too (now
    refused, as kdseg-prepare refuses it)."""
    from kdseg.data.sources import discover_images

    scans = tmp_path / "scans"
    for name in ("volume-0.nii.gz", "segmentation-0.nii.gz", "scan.nii.gz"):
        _ct(scans / name)
    notes: list[str] = []
    assert [c.case_id for c in discover_images(scans, notes)] == ["volume-0"]
    assert notes == [
        f"{scans}: read as LiTS (volume-N); passed over 1 other NIfTI file (scan.nii.gz)"
    ]
    (scans / "scan.nii.gz").rename(scans / "volume-3.NII.GZ")
    with pytest.raises(InputError, match=r"volume-3\.NII\.GZ: a LiTS name with capitals"):
        discover_images(scans)


REAL_CT = Path(__file__).parent / "data" / "real_ct" / "ct.nii.gz"


def _real_ct() -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(REAL_CT)
    return np.asanyarray(image.dataobj).astype(np.float32), image.affine


def _outside_field_of_view(shape: tuple[int, ...]) -> np.ndarray:
    """A mask of the corners outside a circle (48 % of the real CT's slices): padding."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    circle = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 > (0.37 * shape[0]) ** 2
    return np.broadcast_to(circle[..., None], shape)


def test_a_ct_in_tenths_of_hu_is_refused_and_warned_about(tmp_path: Path) -> None:
    """A CT whose rescale slope 0.1 was lost (air at -10000) passed every check and was
    labelled as garbage without a word: its voxels above -1100 (soft tissue x10) are in range."""
    from kdseg.data.io import load_volume

    hu, affine = _real_ct()
    path = tmp_path / "tenths.nii.gz"
    nib.save(nib.Nifti1Image((hu * 10).astype(np.int16), affine), path)
    with pytest.raises(InputError, match=r"tenths\.nii\.gz: .*tenths of HU.*divide it by 10$"):
        load_volume(path)  # commands without the option: no hint at it
    with pytest.raises(InputError, match=r"tenths\.nii\.gz: .*tenths of HU.*hu_check=warn"):
        load_volume(path, hu_check="error")  # kdseg-predict's default
    with pytest.warns(UserWarning, match=r"tenths\.nii\.gz: .*tenths of HU"):
        image = load_volume(path, hu_check="warn")
    assert np.asanyarray(image.dataobj).min() == hu.min() * 10
    with pytest.raises(InputError, match="hu_check=maybe"):
        load_volume(REAL_CT, hu_check="maybe")
    # inside a large matrix padded with -32768 (the padding is not counted)
    big = np.full((300, 260, hu.shape[2]), -32768, np.int16)
    big[: hu.shape[0], : hu.shape[1]] = hu * 10
    nib.save(nib.Nifti1Image(big, affine), tmp_path / "padded.nii.gz")
    with pytest.raises(InputError, match="padded.nii.gz: .*tenths of HU"):
        load_volume(tmp_path / "padded.nii.gz")


def _middle_of_body(data: np.ndarray) -> np.ndarray:
    """The middle half (in x and y) of the box of the voxels above -500: no air left."""
    found = np.argwhere(data > -500)
    low, high = found.min(0), found.max(0)
    inset = ((high - low) // 4).astype(int)
    return data[low[0] + inset[0] : high[0] - inset[0], low[1] + inset[1] : high[1] - inset[1]]


def test_a_ct_in_tenths_of_hu_cropped_inside_the_body_is_warned_about(tmp_path: Path) -> None:
    """Cropped to the middle of the body there is no air at -10000 to tell a CT in tenths of
    HU by; its soft tissue near +500 and fat near -1000 may: a warning line, not a refusal,
    since a CT in HU of mostly contrast beside lung looks alike (a synthetic cardiac CTA: read,
    with the same warning). The same crop in HU is read without a word, and so is it inside
    padding; with its intercept lost (+1024) it has a warning of its own."""
    import warnings

    from kdseg.data.io import load_volume

    hu, affine = _real_ct()
    middle = _middle_of_body(hu)
    assert middle.min() > -1100 and (middle * 10 < -1500).mean() < HU10_MIN_SHARE
    rng = np.random.default_rng(0)
    tissues = [(0.3, -850, 60), (0.25, 450, 30), (0.1, 120, 20), (0.1, -100, 20), (0.15, 40, 15)]
    cta = np.concatenate([rng.normal(m, sd, int(f * 200_000)) for f, m, sd in tissues])
    cases = {"hu": middle, "shifted": middle + 1024, "tenths": middle * 10}
    padded = np.full((middle.shape[0] + 20, *middle.shape[1:]), -3024, np.float32)
    padded[10:-10] = middle
    cases["padded"] = padded
    cases["cta"] = np.concatenate([cta, rng.normal(700, 250, 20_000)]).reshape(100, 100, 20)
    for name, data in cases.items():
        nib.save(nib.Nifti1Image(data.astype(np.int16), affine), tmp_path / f"{name}.nii.gz")
    for name in ("tenths", "cta"):
        with pytest.warns(UserWarning, match=rf"{name}\.nii\.gz: most voxels lie at .*tenths"):
            load_volume(tmp_path / f"{name}.nii.gz")  # no refusal, also under hu_check=error
        with pytest.warns(UserWarning, match="tenths of HU"):
            load_volume(tmp_path / f"{name}.nii.gz", hu_check="error")
    for name in ("hu", "padded"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_volume(tmp_path / f"{name}.nii.gz")
    with pytest.warns(UserWarning, match="intercept"):
        load_volume(tmp_path / "shifted.nii.gz")


@pytest.mark.parametrize("padding", [-1024, -2048, -3024, -31744, -32768])
def test_real_ct_with_padding_blending_and_metal_is_read(tmp_path: Path, padding: int) -> None:
    """The tenths-of-HU check never refuses a CT in HU: padding outside the field of view (one
    value, half the voxels), a resampling that blended it into air, metal at +30000, dark
    streaks at -1500 to -3500."""
    from scipy.ndimage import gaussian_filter, zoom

    from kdseg.data.io import load_volume

    hu, affine = _real_ct()
    hu[_outside_field_of_view(hu.shape)] = padding
    hu[50:56, 40:46, 10:12] = 30000
    streaks = np.random.default_rng(0).random(hu.shape) < 0.03
    hu[streaks] = np.random.default_rng(1).uniform(-3500, -1500, int(streaks.sum()))
    variants = {
        "stored": hu.astype(np.int16),
        "blended": gaussian_filter(hu, (2, 2, 0)),
        "downsampled": zoom(hu, (0.25, 0.25, 1), order=3),
    }
    for name, data in variants.items():
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), path)
        load_volume(path)  # no refusal


def test_phantoms_in_hu_are_read_and_in_tenths_refused(phantom_lits: Path, tmp_path: Path) -> None:
    import warnings

    from kdseg.data.io import load_volume

    for volume in sorted(phantom_lits.glob("volume-*.nii*")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nor the lost-intercept warning
            image = load_volume(volume)
        data = np.asanyarray(image.dataobj).astype(np.float32) * 10
        path = tmp_path / volume.name
        nib.save(nib.Nifti1Image(data, image.affine), path)
        with pytest.raises(InputError, match="tenths of HU"):
            load_volume(path)


def test_prepare_refuses_a_ct_in_tenths_of_hu_in_one_line(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """kdseg-prepare (and kdseg-eval, through the same check) refuses it, naming the case,
    without offering an option it does not have."""
    root = tmp_path / "lits"
    shutil.copytree(phantom_lits, root)
    volume = sorted(root.glob("volume-*.nii*"))[0]
    image = nib.load(volume)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj) * np.int16(10), image.affine), volume)
    result = kdseg_here(
        "prepare",
        "experiment=demo",
        "data.preprocess.in_plane_size=[48,48]",
        f"data.root={root}",
        check=False,
    )
    _one_line_exit_2(result, f"{volume.name}: ")
    assert "tenths of HU" in result.stderr and "hu_check" not in result.stderr


def test_predict_refuses_a_ct_in_tenths_of_hu_in_one_line(
    trained_enet: Path, tmp_path: Path
) -> None:
    ckpt = trained_enet / "checkpoints" / "best.ckpt"
    hu, affine = _real_ct()
    scan = tmp_path / "scans" / "ct.nii.gz"
    scan.parent.mkdir()
    nib.save(nib.Nifti1Image((hu * 10).astype(np.int16), affine), scan)
    out = tmp_path / "pred" / "ct.nii.gz"
    args = [f"ckpt={ckpt}", f"input={scan}", f"output={out}"]
    _one_line_exit_2(kdseg_here("predict", *args, check=False), "ct.nii.gz: ")
    assert not out.parent.exists()  # nothing written, the folder it made removed
    warned = kdseg_here("predict", *args, "hu_check=warn", "report=false")
    assert out.exists()
    assert [line for line in warned.stderr.splitlines() if "tenths of HU" in line]
    assert "Traceback" not in warned.stderr
    # the real scan itself, and as a DICOM series, is predicted without a word on stderr
    from kdseg.data.dicom_write import write_dicom_series

    series = tmp_path / "series"
    write_dicom_series(nib.Nifti1Image(hu.astype(np.int16), affine), series)
    for source in (REAL_CT, series):
        target = tmp_path / "real" / f"{source.name.split('.')[0]}.nii.gz"
        result = kdseg_here("predict", f"ckpt={ckpt}", f"input={source}", f"output={target}")
        assert target.exists() and not result.stderr.strip(), result.stderr


def test_a_ct_that_lost_its_intercept_is_warned_about(tmp_path: Path) -> None:
    """The real CT plus 1024 (a rescale intercept of -1024 lost, stored signed: noise takes
    its air a little below 0) passed every check without a word. It is warned about, not
    refused; the CT as stored, a crop inside its body, and the phantoms are read quietly."""
    import warnings

    from kdseg.data.io import load_volume

    hu, affine = _real_ct()
    shifted = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image((hu + 1024).astype(np.int16), affine), shifted)
    assert (hu + 1024).min() < 0  # the none-negative check does not catch it
    with pytest.warns(UserWarning, match=r"shifted\.nii\.gz: .*intercept \(-1024\) was lost"):
        load_volume(shifted)
    crop = tmp_path / "crop.nii.gz"  # soft tissue and fat only, no air
    nib.save(nib.Nifti1Image(hu[45:75, 40:60, 10:20].astype(np.int16), affine), crop)
    assert hu[45:75, 40:60, 10:20].min() > -300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_volume(REAL_CT)
        load_volume(crop)
