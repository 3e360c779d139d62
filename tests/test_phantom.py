"""The synthetic CT phantom: file layouts, labels, HU ranges, geometry and determinism."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from dataclasses import asdict, replace

import nibabel as nib
import numpy as np
import pytest

from kdseg.data.phantom import (
    TRUTH_FILE,
    PhantomConfig,
    case_files,
    generate_case,
    write_dataset,
)
from kdseg.errors import InputError

SMALL = {"size_range": (72, 88), "slices_range": (18, 26)}


def small(dataset: str = "lits", **overrides) -> PhantomConfig:
    """A config for tiny, fast cases."""
    return PhantomConfig(dataset=dataset, **{**SMALL, **overrides})


def canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """RAS array and affine of an image."""
    ras = nib.as_closest_canonical(img)
    return np.asanyarray(ras.dataobj), ras.affine


@pytest.mark.parametrize("dataset", ["lits", "kits"])
def test_case_dtypes_labels_and_hu(dataset: str) -> None:
    for seed in range(3):
        image, label, truth = generate_case(small(dataset), seed)
        hu, lab = np.asanyarray(image.dataobj), np.asanyarray(label.dataobj)
        assert hu.dtype == np.int16 and lab.dtype == np.uint8
        assert hu.shape == lab.shape and np.allclose(image.affine, label.affine)
        values = set(np.unique(lab).tolist())
        assert values == ({0, 1, 2} if truth["tumors"] else {0, 1})
        assert 40 <= hu[lab == 1].mean() <= 200
        assert hu.min() >= -1024 and hu.max() <= 3071
        ras, _ = canonical(image)
        assert np.median(ras[:, -2:, :]) <= -990  # anterior edge rows of the field: air
        assert truth["organ_voxels"] == int((lab == 1).sum())
        assert "".join(nib.aff2axcodes(image.affine)) == truth["orientation"]
        assert truth["spacing"] == pytest.approx(image.header.get_zooms(), abs=1e-3)


def test_tumor_truth_matches_label() -> None:
    for seed in range(4):
        _, label, truth = generate_case(small(max_tumors=4, p_no_tumor=0.0), seed)
        assert truth["tumors"], "p_no_tumor=0 draws at least one tumor"
        assert all(t["voxels"] > 0 for t in truth["tumors"])
        assert sum(t["voxels"] for t in truth["tumors"]) == int(
            (np.asanyarray(label.dataobj) == 2).sum()
        )
        for tumor in truth["tumors"]:
            assert 3.0 <= tumor["diameter_mm"] <= 40.0 and tumor["organ"] == "liver"


def test_no_tumor_cases_have_labels_0_1() -> None:
    _, label, truth = generate_case(small(p_no_tumor=1.0), 5)
    assert truth["tumors"] == [] and set(np.unique(label.dataobj).tolist()) == {0, 1}


def test_deterministic_per_seed() -> None:
    cfg = small()
    a, b = generate_case(cfg, 7), generate_case(cfg, 7)
    assert np.array_equal(a[0].dataobj, b[0].dataobj) and np.array_equal(a[1].dataobj, b[1].dataobj)
    assert np.array_equal(a[0].affine, b[0].affine) and a[2] == b[2]
    assert not np.array_equal(a[0].dataobj, generate_case(cfg, 8)[0].dataobj)


def test_flipped_and_permuted_storage_canonicalises_to_the_same_anatomy() -> None:
    plain = small(flip_prob=0.0, permute_prob=0.0)
    turned = replace(plain, flip_prob=1.0, permute_prob=1.0)
    for seed in range(3):
        img_a, lab_a, truth_a = generate_case(plain, seed)
        img_b, lab_b, truth_b = generate_case(turned, seed)
        assert truth_a["orientation"] == "RAS" and set(truth_b["orientation"]) == set("LPI")
        assert truth_b["orientation"] != "LPI"  # axes permuted too
        (ra, aff_a), (rb, aff_b) = canonical(img_a), canonical(img_b)
        assert np.array_equal(ra, rb) and np.allclose(aff_a, aff_b)
        assert np.array_equal(canonical(lab_a)[0], canonical(lab_b)[0])
        assert truth_a["tumors"] == truth_b["tumors"]


def test_liver_on_patient_right_kidneys_both_sides() -> None:
    for seed in range(3):
        _, label, _ = generate_case(small("lits"), seed)
        lab, affine = canonical(label)
        centroid = affine[:3, :3] @ np.argwhere(lab == 1).mean(axis=0) + affine[:3, 3]
        assert centroid[0] > 20  # RAS+: +x is the patient's right; body midline at x = 0
    _, label, _ = generate_case(small("kits"), 0)
    lab, affine = canonical(label)
    x = (affine[:3, :3] @ np.argwhere(lab == 1).T + affine[:3, 3:])[0]
    assert (x > 20).sum() > 0 and (x < -20).sum() > 0


def test_organ_only_in_a_sub_range_of_slices() -> None:
    for dataset in ("lits", "kits"):
        lab, _ = canonical(generate_case(small(dataset), 1)[1])
        has_organ = (lab > 0).any(axis=(0, 1))
        assert has_organ.any() and not has_organ.all()


def test_contrast_knob_keeps_anatomy() -> None:
    cfg = small(p_no_tumor=0.0)
    _, lab_a, truth_a = generate_case(cfg, 3)
    _, lab_b, truth_b = generate_case(replace(cfg, tumor_contrast=0.0), 3)
    assert np.array_equal(lab_a.dataobj, lab_b.dataobj)
    assert all(t["contrast_hu"] == 0 for t in truth_b["tumors"])
    assert [t["voxels"] for t in truth_a["tumors"]] == [t["voxels"] for t in truth_b["tumors"]]


def test_tumor_depth_keeps_tumors_whole_and_the_organ_as_it_was() -> None:
    """tumor_depth=1 draws centres a radius deep: rim slivers go, the organ's outline stays."""
    cfg = small(p_no_tumor=0.0, max_tumors=2, tumor_mm_range=(15.0, 30.0))
    kept: dict[float, list[float]] = {0.0: [], 1.0: []}
    organs: dict[float, list[np.ndarray]] = {0.0: [], 1.0: []}
    for depth, seed in itertools.product(kept, range(4)):
        _, label, truth = generate_case(replace(cfg, tumor_depth=depth), seed)
        organs[depth].append(np.asarray(label.dataobj) > 0)
        volume = float(np.prod(truth["spacing"]))
        for t in truth["tumors"]:  # the share of its ellipsoid's volume a tumor keeps
            kept[depth].append(t["voxels"] * volume / (np.pi / 6 * t["diameter_mm"] ** 3))
    assert all(np.array_equal(a, b) for a, b in zip(organs[0.0], organs[1.0], strict=True))
    assert np.median(kept[1.0]) > 1.3 * np.median(kept[0.0])  # measured: 0.72 against 0.48


def test_write_lits_layout_truth_and_idempotence(tmp_path) -> None:
    cfg = small("lits", p_no_tumor=0.0)
    paths = write_dataset(tmp_path, cfg, n_cases=2, seed=3, progress=False)
    assert [p.name for p in paths] == ["volume-0.nii.gz", "volume-1.nii.gz"]
    truth = json.loads((tmp_path / TRUTH_FILE).read_text())
    assert list(truth) == ["volume-0", "volume-1"]
    for index in range(2):
        image_path, label_path = case_files(tmp_path, "lits", index)
        assert label_path.name == f"segmentation-{index}.nii.gz"
        image, label = nib.load(image_path), nib.load(label_path)
        lab = np.asanyarray(label.dataobj)
        assert np.asanyarray(image.dataobj).dtype == np.int16 and lab.dtype == np.uint8
        entry = truth[f"volume-{index}"]
        assert sum(t["voxels"] for t in entry["tumors"]) == int((lab == 2).sum())
        assert entry["organ_voxels"] == int((lab == 1).sum())
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    write_dataset(tmp_path, cfg, n_cases=2, seed=3, progress=False)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_write_kits_layout_in_parallel_matches_serial(tmp_path) -> None:
    cfg = small("kits", size_range=(64, 64), slices_range=(16, 16))
    write_dataset(tmp_path / "pool", cfg, n_cases=2, workers=2, progress=False)
    write_dataset(tmp_path / "serial", cfg, n_cases=2, progress=False)
    for index in range(2):
        folder = tmp_path / "pool" / f"case_{index:05d}"
        assert (folder / "imaging.nii.gz").exists() and (folder / "segmentation.nii.gz").exists()
        for name in ("imaging.nii.gz", "segmentation.nii.gz"):
            a = nib.load(folder / name)
            b = nib.load(tmp_path / "serial" / folder.name / name)
            assert np.array_equal(a.dataobj, b.dataobj)
    truth = json.loads((tmp_path / "pool" / TRUTH_FILE).read_text())
    assert list(truth) == ["case_00000", "case_00001"]


def test_rewrites_a_case_whose_file_is_missing(tmp_path) -> None:
    cfg = small()
    write_dataset(tmp_path, cfg, n_cases=1, progress=False)
    image_path, label_path = case_files(tmp_path, "lits", 0)
    kept = label_path.stat().st_mtime_ns
    image_path.unlink()
    write_dataset(tmp_path, cfg, n_cases=1, progress=False)
    assert image_path.exists() and label_path.stat().st_mtime_ns != kept


@pytest.mark.parametrize(
    "overrides",
    [
        {"dataset": "brats"},
        {"size_range": (64, 32)},
        {"flip_prob": 1.5},
        {"noise_hu": -1.0},
        {"tumor_depth": -0.5},
        {"tumor_contrast": float("nan")},  # once: tumors of HU 0 still labelled tumor
        {"noise_hu": float("nan")},  # once: silently no noise
        {"noise_hu": "high"},
        {"blur_sigma_mm": float("inf")},
        {"blur_sigma_mm": 1e9},  # once: the worker ran out of memory
        {"fov_mm_range": (320.0, float("inf"))},
        {"size_range": (64.5, 72)},
        {"max_tumors": True},
        # voxel sizes: once 0 after rounding (ZeroDivisionError, an internal error), or files
        # written that kdseg's own reader refuses (outside 0.05-20 mm)
        {"slice_mm_range": (0.001, 0.004)},
        {"fov_mm_range": (0.001, 0.001)},
        {"fov_mm_range": (100.0, 420.0), "size_range": (2048, 2048)},  # 0.049 mm pixels
        {"slice_mm_range": (30.0, 30.0)},
        {"fov_mm_range": (1500.0, 1500.0), "size_range": (64, 64)},
    ],
)
def test_bad_config_is_an_input_error(overrides: dict) -> None:
    with pytest.raises(InputError, match=next(iter(overrides))):
        PhantomConfig(**overrides)


def test_voxel_sizes_at_the_readers_limits_are_kept() -> None:
    """The spacing check refuses only what fails: 0.05 and 20 mm are read back."""
    PhantomConfig(fov_mm_range=(100.0, 100.0), size_range=(2000, 2000), slice_mm_range=(0.05, 20.0))
    PhantomConfig(fov_mm_range=(640.0, 640.0), size_range=(32, 32))


def test_a_refused_seed_names_the_seed_and_leaves_no_folder(tmp_path) -> None:
    root = tmp_path / "new"
    with pytest.raises(InputError, match="seed must be a whole number >= 0, got -1"):
        write_dataset(root, PhantomConfig(size_range=(40, 40), slices_range=(8, 8)), 2, seed=-1)
    assert not root.exists()


def _stop_at_save(monkeypatch, after: int) -> None:
    """Make the ``after + 1``-th ``nib.save`` of the phantom writer stop the run, as SIGTERM or
    Ctrl-C would."""
    import kdseg.data.phantom.dataset as dataset

    real_save = dataset.nib.save
    saved = []

    def save_then_stop(img, path):
        if len(saved) >= after:
            raise KeyboardInterrupt
        saved.append(path)
        real_save(img, path)

    monkeypatch.setattr(dataset.nib, "save", save_then_stop)


def test_a_run_stopped_between_image_and_label_leaves_neither(tmp_path, monkeypatch) -> None:
    """Stopped between a case's image and its label: the pair is one atomic group, so no image
    is left without its label (and a folder that holds no case is no phantom folder)."""
    cfg = PhantomConfig(size_range=(40, 40), slices_range=(8, 8))
    _stop_at_save(monkeypatch, after=1)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "ph", cfg, n_cases=2, seed=1, progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "ph").exists()
    paths = write_dataset(tmp_path / "ph", cfg, n_cases=2, seed=1, progress=False)
    assert all(p.exists() for p in paths)


def test_a_kits_run_stopped_before_any_file_leaves_no_empty_case_folder(
    tmp_path, monkeypatch
) -> None:
    cfg = PhantomConfig(dataset="kits", size_range=(40, 40), slices_range=(8, 8))
    (tmp_path / "ph").mkdir()
    _stop_at_save(monkeypatch, after=0)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "ph", cfg, n_cases=2, seed=1, progress=False)
    assert list((tmp_path / "ph").iterdir()) == []  # no case_00000/, no truth file


TINY = PhantomConfig(size_range=(40, 40), slices_range=(8, 8))


def _real_kits(root) -> dict:
    """A stand-in for a real KiTS19 folder (no truth file); returns each file's bytes."""
    folder = root / "case_00000"
    folder.mkdir(parents=True)
    (folder / "imaging.nii.gz").write_bytes(b"real imaging")
    (folder / "segmentation.nii.gz").write_bytes(b"real segmentation")
    return {p: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("dataset", ["lits", "kits"])
def test_a_real_kits_folder_is_refused_for_either_layout(tmp_path, dataset: str) -> None:
    """Once: dataset=lits wrote its truth file into a real KiTS folder, and dataset=kits then
    overwrote the real case_00000 (a truth file existed)."""
    real = _real_kits(tmp_path)
    with pytest.raises(InputError, match=r"case_00000.imaging\.nii\.gz: is a case"):
        write_dataset(tmp_path, replace(TINY, dataset=dataset), n_cases=1, progress=False)
    assert {p: p.read_bytes() for p in real} == real
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_00000"]


def test_a_lone_label_is_refused_never_overwritten(tmp_path) -> None:
    label = tmp_path / "segmentation-0.nii.gz"
    label.write_bytes(b"a real label")
    with pytest.raises(InputError, match=r"segmentation-0\.nii\.gz: is a case"):
        write_dataset(tmp_path, TINY, n_cases=1, progress=False)
    assert label.read_bytes() == b"a real label" and list(tmp_path.iterdir()) == [label]


def test_a_case_the_truth_file_does_not_name_is_refused(tmp_path) -> None:
    """A phantom folder (truth file present) with a real case added: refused, not redrawn."""
    write_dataset(tmp_path, TINY, n_cases=1, progress=False)
    (tmp_path / "case_00000").mkdir()
    for name in ("volume-1.nii", "case_00000/segmentation.nii.gz"):
        (tmp_path / name).write_bytes(b"real")
        with pytest.raises(InputError, match=f"{name}: is a case that {TRUTH_FILE} does not"):
            write_dataset(tmp_path, replace(TINY, dataset="kits"), n_cases=2, progress=False)
        with pytest.raises(InputError, match=name):
            write_dataset(tmp_path, TINY, n_cases=2, progress=False)
        assert (tmp_path / name).read_bytes() == b"real"
        (tmp_path / name).unlink()


def test_a_killed_run_resumes_from_its_pending_file(tmp_path) -> None:
    """The state a SIGKILL leaves between a case's two renames: its image on disk, its label
    not, no truth entry, the case named in the pending file. The rerun finishes the folder
    byte for byte as an uninterrupted run writes it; without the pending entry the image would
    be a foreign file."""
    from kdseg.data.phantom.config import PENDING_FILE

    write_dataset(tmp_path, TINY, n_cases=2, seed=4, progress=False)
    finished = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    truth = json.loads((tmp_path / TRUTH_FILE).read_text())
    entry = truth.pop("volume-1")
    (tmp_path / TRUTH_FILE).write_text(json.dumps(truth, indent=1))
    (tmp_path / "segmentation-1.nii.gz").unlink()
    with pytest.raises(InputError, match="volume-1.nii.gz: is a case that"):
        write_dataset(tmp_path, TINY, n_cases=2, seed=4, progress=False)
    mark = {"volume-1": {"seed": entry["seed"], "config": entry["config"]}}
    (tmp_path / PENDING_FILE).write_text(json.dumps(mark))
    write_dataset(tmp_path, TINY, n_cases=2, seed=4, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == finished


def test_a_stopped_run_leaves_no_pending_case_without_files(tmp_path, monkeypatch) -> None:
    """Stopped in its second case after the first was written: the first has its truth entry,
    nothing is pending (no case file without its entry), and the rerun completes."""
    from kdseg.data.phantom.config import PENDING_FILE

    _stop_at_save(monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path, TINY, n_cases=2, progress=False)
    monkeypatch.undo()
    assert list(json.loads((tmp_path / TRUTH_FILE).read_text())) == ["volume-0"]
    assert not (tmp_path / PENDING_FILE).exists()
    write_dataset(tmp_path, TINY, n_cases=2, progress=False)
    assert not (tmp_path / PENDING_FILE).exists()
    assert list(json.loads((tmp_path / TRUTH_FILE).read_text())) == ["volume-0", "volume-1"]


def test_a_stopped_pool_starts_no_case_after_the_stop(tmp_path, monkeypatch) -> None:
    """Stopped (Ctrl-C, SIGTERM) after the first case of a pool run: once, the workers took
    the queued cases one after the other after the "unfinished outputs removed" line, files
    that no truth entry named. Now no case starts after the stop, and the workers are gone
    when the run returns; what is on disk is what the truth file records."""
    import time

    import kdseg.data.phantom.dataset as dataset
    from kdseg.data.phantom.config import PENDING_FILE

    @contextlib.contextmanager
    def stop_after_first_case(enabled, total, description):
        def advance(n: int) -> None:
            if n:
                raise KeyboardInterrupt

        yield advance

    monkeypatch.setattr(dataset, "_progress", stop_after_first_case)
    root = tmp_path / "ph"
    with pytest.raises(KeyboardInterrupt):
        write_dataset(root, TINY, n_cases=8, seed=2, workers=2, progress=False)
    recorded = list(json.loads((root / TRUTH_FILE).read_text()))
    time.sleep(1.0)  # a surviving worker would write its next case meanwhile
    assert len(recorded) == 1
    assert sorted(dataset._cases_on_disk(root)) == recorded
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [TRUTH_FILE, *(p.name for p in case_files(root, "lits", int(recorded[0][7:])))]
    )
    assert not (root / PENDING_FILE).exists()
    monkeypatch.undo()
    paths = write_dataset(root, TINY, n_cases=8, seed=2, workers=2, progress=False)
    assert all(p.exists() for p in paths)


def test_a_killed_runs_finished_cases_refuse_another_seed(tmp_path) -> None:
    """SIGKILL after the last truth entry, before the pending file was settled: the pending
    entries are finished cases. Once, a rerun of another seed replaced them silently."""
    from kdseg.data.phantom.config import PENDING_FILE

    write_dataset(tmp_path, TINY, n_cases=2, seed=0, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    truth = json.loads((tmp_path / TRUTH_FILE).read_text())
    marks = {k: {"seed": v["seed"], "config": v["config"]} for k, v in truth.items()}
    (tmp_path / PENDING_FILE).write_text(json.dumps(marks))
    with pytest.raises(InputError, match="volume-0.nii.gz: is a phantom of another seed"):
        write_dataset(tmp_path, TINY, n_cases=2, seed=1, progress=False)
    write_dataset(tmp_path, TINY, n_cases=2, seed=0, progress=False)  # settles the file
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("fov", [(20.0, 20.0), (99.0, 300.0)])
def test_a_field_of_view_too_small_for_a_trunk_is_refused(fov) -> None:
    """Once: 1e-3 mm was allowed, and under ~25 mm the drawing failed (an internal error)."""
    with pytest.raises(InputError, match=r"fov_mm_range must be \(low, high\) with 100.0"):
        PhantomConfig(fov_mm_range=fov)


@pytest.mark.parametrize("dataset", ["lits", "kits"])
def test_the_smallest_field_of_view_draws(dataset: str) -> None:
    cfg = PhantomConfig(
        dataset=dataset, fov_mm_range=(100.0, 100.0), size_range=(32, 32), slices_range=(8, 8)
    )
    for seed in range(3):
        image, label, _ = generate_case(cfg, seed)
        assert np.asanyarray(label.dataobj).any()


def test_a_file_where_a_kits_case_folder_goes_is_refused(tmp_path) -> None:
    """Once: FileExistsError from mkdir, an internal error."""
    (tmp_path / "case_00000").write_bytes(b"notes")
    with pytest.raises(InputError, match="case_00000: is no folder"):
        write_dataset(tmp_path, replace(TINY, dataset="kits"), n_cases=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_00000"]
    assert (tmp_path / "case_00000").read_bytes() == b"notes"


def test_whole_and_float_params_are_one_config(tmp_path) -> None:
    """``noise_hu: 12`` and ``12.0``, ``max_tumors: 2.0`` and ``2``: one config, one
    fingerprint, so the rerun is no "other params"; the defaults keep their fingerprint
    (folders and caches keyed by it stay valid)."""
    from kdseg.data.phantom.dataset import _config_digest

    assert _config_digest(PhantomConfig()) == "7ab7acc9182af5b1"  # as before normalising
    assert _config_digest(PhantomConfig(dataset="kits")) == "bea469c57b9f48d2"
    floats = PhantomConfig(noise_hu=12, max_tumors=2.0, size_range=(40.0, 40), p_no_tumor=0)
    ints = PhantomConfig(noise_hu=12.0, max_tumors=2, size_range=(40, 40), p_no_tumor=0.0)
    assert floats == ints and _config_digest(floats) == _config_digest(ints)
    assert type(floats.max_tumors) is int and type(floats.noise_hu) is float
    assert floats.size_range == (40, 40) and type(floats.size_range[0]) is int
    assert type(PhantomConfig(fov_mm_range=[320, 420]).fov_mm_range[0]) is float
    with pytest.raises(InputError, match="max_tumors must be a whole number"):
        PhantomConfig(max_tumors=2.5)
    write_dataset(tmp_path, replace(TINY, noise_hu=12), n_cases=1, progress=False)
    kept = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    write_dataset(tmp_path, replace(TINY, noise_hu=12.0), n_cases=1, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == kept
    # a folder drawn before the normalising recorded the int: still this config's own
    legacy = hashlib.sha256(
        json.dumps({**asdict(TINY), "noise_hu": 12}, sort_keys=True).encode()
    ).hexdigest()[:16]
    truth = json.loads((tmp_path / TRUTH_FILE).read_text())
    truth["volume-0"]["config"] = legacy
    (tmp_path / TRUTH_FILE).write_text(json.dumps(truth))
    write_dataset(tmp_path, replace(TINY, noise_hu=12), n_cases=1, progress=False)
    assert (tmp_path / "volume-0.nii.gz").stat().st_mtime_ns == kept["volume-0.nii.gz"]


def test_a_failed_first_run_removes_the_folders_it_made(tmp_path, monkeypatch) -> None:
    """root=<new>/sub/deep stopped before any case: once, root alone went and the empty
    folders above it stayed."""
    _stop_at_save(monkeypatch, after=0)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "new" / "sub" / "deep", TINY, n_cases=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_busy_worker_ignores_a_second_sigterm_while_it_unwinds(monkeypatch) -> None:
    """A process-group kill (SLURM's scancel) and then the pool's terminate send a busy worker
    two SIGTERMs: the second cut short the unwinding that removes the case's files, which were
    left behind in 4 of 25 group kills. The first is final."""
    import signal

    from kdseg.data.phantom import dataset

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(dataset, "_BUSY", True)
    try:
        with pytest.raises(dataset._Stopped):
            dataset._on_worker_sigterm(signal.SIGTERM, None)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)
