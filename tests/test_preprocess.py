"""Preprocessing forward/inverse: geometry is restored exactly, whatever the input orientation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt

from kdseg.data.preprocess import Preprocessor
from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.errors import InputError


def _volume(codes: str, shape=(40, 36, 12)) -> tuple[nib.Nifti1Image, np.ndarray]:
    """A RAS volume with a bright box, stored in orientation ``codes``; also its RAS labels."""
    rng = np.random.default_rng(0)
    hu = rng.normal(-900, 5, shape).astype(np.int16)
    hu[5:30, 6:30, :] = 40  # body
    labels = np.zeros(shape, np.uint8)
    labels[10:20, 8:22, 3:9] = 1
    labels[12:15, 10:13, 4:6] = 2
    hu[labels == 1] = 120
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    transform = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt(codes))
    stored = ornt.apply_orientation(hu, transform)
    stored_labels = ornt.apply_orientation(labels, transform)
    stored_affine = affine @ ornt.inv_ornt_aff(transform, shape)
    return nib.Nifti1Image(stored, stored_affine), stored_labels


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SLP", "PIR"])
@pytest.mark.parametrize(
    "cfg",
    [
        PreprocessConfig(),
        PreprocessConfig(body_crop=True, body_margin=1, in_plane_size=(16, 16)),
        PreprocessConfig(in_plane_size=(20, 24), crop_size=(18, 28)),
    ],
)
def test_labels_round_trip_to_input_geometry(codes: str, cfg: PreprocessConfig) -> None:
    img, labels = _volume(codes)
    pre = Preprocessor(cfg)
    slices, geom = pre.image(img)
    model_labels = pre.label(labels, img, geom)
    assert slices.shape == model_labels.shape
    assert slices.shape[1:] == tuple(geom.model_size)
    assert slices.min() >= -1 and slices.max() <= 1
    # a perfect one-hot "prediction" on the model grid must come back as the input labels
    onehot = np.eye(3, dtype=np.float32)[model_labels].transpose(0, 3, 1, 2)
    x0, x1, y0, y1 = geom.box
    canonical = np.zeros(geom.canonical_shape, np.uint8)
    boxed = pre.restore(onehot, geom).argmax(1).astype(np.uint8)
    canonical[x0:x1, y0:y1] = boxed.transpose(1, 2, 0)
    back = pre.to_input_orientation(canonical, geom)
    assert back.shape == img.shape
    if cfg.in_plane_size is None:
        np.testing.assert_array_equal(back, labels)
    else:  # resampled twice: boundaries may move by a voxel, the bulk must agree
        assert (back == labels).mean() > 0.97
        assert ((back > 0) & (labels > 0)).sum() / (labels > 0).sum() > 0.8


def test_canonical_orientation_independent_of_storage() -> None:
    pre = Preprocessor(PreprocessConfig())
    ref, _ = pre.image(_volume("RAS")[0])
    for codes in ("LPS", "SLP", "IRA"):
        other, geom = pre.image(_volume(codes)[0])
        np.testing.assert_array_equal(ref, other)
        assert geom.spacing == pytest.approx((0.8, 0.7, 2.5))


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SLP"])
def test_body_box_and_centre_crop_offset_are_exact(codes: str) -> None:
    """The body box is the half-open bounding box of the voxels above -500 HU (x 5:30, y 6:30
    in _volume) plus ``body_margin`` on each side, clipped to the volume, whatever the storage
    order; the centre crop starts at floor((size - crop) / 2), padding included. Round trips
    cannot see an error in either: a box one voxel short, or a crop one pixel off centre, is
    undone as exactly as it was done (and shifts a saved model's input by a pixel)."""
    img, _ = _volume(codes)
    boxes = {0: (5, 30, 6, 30), 1: (4, 31, 5, 31), 8: (0, 38, 0, 36)}  # 8: clipped at both ends
    for margin, box in boxes.items():
        _, geom = Preprocessor(PreprocessConfig(body_crop=True, body_margin=margin)).image(img)
        assert geom.box == box, (margin, geom.box)
    full, _ = Preprocessor(PreprocessConfig(body_crop=True, body_margin=0)).image(img)  # 25 x 24
    for crop, offset in {(22, 19): (1, 2), (28, 27): (-2, -2)}.items():
        cfg = PreprocessConfig(body_crop=True, body_margin=0, crop_size=crop)
        slices, geom = Preprocessor(cfg).image(img)
        assert geom.crop_offset == offset
        (a, b), (h, w) = offset, crop
        want = np.full((full.shape[0], h, w), -1.0, np.float32)  # padding is air: -1
        src = full[:, max(a, 0) : a + h, max(b, 0) : b + w]
        pa, pb = max(-a, 0), max(-b, 0)
        want[:, pa : pa + src.shape[1], pb : pb + src.shape[2]] = src
        np.testing.assert_array_equal(slices, want)


def test_window_scales_hu_to_unit_range() -> None:
    img = nib.Nifti1Image(
        np.array([[[-1000, -60, 40, 140, 1000]]], np.int16).reshape(1, 1, 5), np.eye(4)
    )
    slices, _ = Preprocessor(PreprocessConfig(window=(-60, 140))).image(img)
    np.testing.assert_allclose(slices.ravel(), [-1, -1, 0, 1, 1], atol=1e-3)


def test_digest_changes_with_config() -> None:
    assert PreprocessConfig().digest() != PreprocessConfig(window=(-200, 300)).digest()
    assert (
        PreprocessConfig().digest() == PreprocessConfig.from_dict({"window": [-60, 140]}).digest()
    )


@pytest.mark.parametrize(
    "grid",
    [
        {"in_plane_size": (16, 16)},
        {"in_plane_size": (30, 28), "crop_size": (24, 32)},  # crops one axis, pads the other
    ],
)
@pytest.mark.parametrize("task, threshold", [("multiclass", None), ("organ", 0.4)])
def test_predictor_skipping_background_slices_changes_no_label(task: str, threshold, grid) -> None:
    """Slices with no foreground on the model grid skip the resampling, and the others restore
    only the window their foreground pixels reach; labels are identical to deciding every
    slice after :meth:`Preprocessor.restore`."""
    from kdseg.data.tasks import Task
    from kdseg.eval.inference import Predictor, softmax

    def backend(x: np.ndarray) -> np.ndarray:  # body (x = 0) background, bright box (0.8) organ
        channels = [np.full_like(x, 0.5), 2 * x, 4 * x - 2.5][: 3 if task == "multiclass" else 2]
        return np.concatenate(channels, axis=1)

    img, labels = _volume("LPS")
    cfg = PreprocessConfig(body_crop=True, body_margin=1, **grid)
    predictor = Predictor(backend, cfg, Task(task), batch_size=4, threshold=threshold)
    pred = predictor.predict(img)

    pre = Preprocessor(cfg)
    slices, geom = pre.image(img)
    probs = softmax(backend(slices[:, None]))
    x0, x1, y0, y1 = geom.box
    canonical = np.zeros(geom.canonical_shape, np.uint8)
    decided = predictor._decide(pre.restore(probs, geom))
    canonical[x0:x1, y0:y1] = np.asarray(Task(task).to_dataset(decided)).transpose(1, 2, 0)
    np.testing.assert_array_equal(pred, pre.to_input_orientation(canonical, geom))
    assert pred.flags.f_contiguous
    assert ((pred > 0) == (labels > 0)).mean() > 0.97  # and the box is found


@pytest.mark.parametrize(
    "shape, size",
    [((61, 47), (16, 16)), ((16, 16), (61, 47)), ((40, 40), (40, 29)), ((9, 9), (9, 9))],
)
def test_numpy_resampling_matches_torch(shape, size) -> None:
    """The torch-free resampling of the prediction path equals torch's interpolate kernels."""
    import torch
    import torch.nn.functional as F

    from kdseg.data.resample import resize

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2, *shape)).astype(np.float32)
    for antialias in (False, True):
        ref = F.interpolate(
            torch.from_numpy(x),
            size=size,
            mode="bilinear",
            align_corners=False,
            antialias=antialias,
        ).numpy()
        np.testing.assert_allclose(resize(x, size, "bilinear", antialias), ref, atol=1e-5)
    labels = rng.integers(0, 3, size=(3, *shape)).astype(np.uint8)
    ref = F.interpolate(torch.from_numpy(labels)[:, None].float(), size=size, mode="nearest")
    got = resize(labels, size, "nearest")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref[:, 0].to(torch.uint8).numpy())
    ref = F.interpolate(torch.from_numpy(labels)[:, None].float(), size=size, mode="nearest-exact")
    np.testing.assert_array_equal(
        resize(labels, size, "nearest-exact"), ref[:, 0].to(torch.uint8).numpy()
    )


@pytest.mark.parametrize("grid", [{"in_plane_size": (64, 64)}, {"spacing_mm": (1.5, 1.5)}])
def test_label_resize_nearest_exact_puts_labels_on_the_image(grid: dict) -> None:
    """A disc shrunk to the model grid: torch's ``nearest`` (the default, every recorded run)
    moves its label about half a model pixel off the bilinear image; ``nearest-exact`` keeps
    the two centroids together. The default's digest and slices stay what they were."""
    n = 320
    yy, xx = np.mgrid[:n, :n]
    disc = (xx - 150.3) ** 2 + (yy - 170.6) ** 2 < 60**2
    hu = np.where(disc, 200, -100).astype(np.int16)[:, :, None].repeat(3, axis=2)
    img = nib.Nifti1Image(hu, np.diag([0.8, 0.8, 2.5, 1.0]))
    label = disc.astype(np.uint8)[:, :, None].repeat(3, axis=2)

    def shift(cfg: PreprocessConfig) -> float:
        pre = Preprocessor(cfg)
        slices, geom = pre.image(img)
        lab = pre.label(label, img, geom)[1].astype(float)
        bright = (slices[1].astype(float) > 0).astype(float)  # the disc as the image shows it
        centroid = lambda m: np.array(np.nonzero(m)).mean(axis=1)  # noqa: E731
        return float(np.abs(centroid(lab) - centroid(bright)).max())

    legacy = PreprocessConfig(**grid)
    exact = PreprocessConfig(**grid, label_resize="nearest-exact")
    assert shift(legacy) > 0.3 and shift(exact) < 0.1
    assert PreprocessConfig(**grid, label_resize="nearest") == legacy
    assert legacy.digest() != exact.digest()
    assert PreprocessConfig.from_dict({**legacy.to_dict(), "label_resize": None}) == legacy
    with pytest.raises(InputError, match="label_resize"):
        PreprocessConfig(label_resize="linear")


def test_softmax_and_channel_argmax_match_torch() -> None:
    import torch

    from kdseg.eval.inference import channel_argmax, softmax

    logits = np.random.default_rng(2).normal(size=(4, 3, 8, 9)).astype(np.float32) * 5
    logits[0, :, 0, 0] = 1.0  # a tie: the first maximum wins, as in argmax
    ref = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(softmax(logits), ref, atol=1e-6)
    np.testing.assert_array_equal(channel_argmax(softmax(logits)), ref.argmax(1))


@pytest.mark.parametrize("window", [(-60.0, 140.0), (-60.5, 140.25), (-40000.0, 40000.0)])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_scale_equals_the_window_formula(window, dtype) -> None:
    """The fast in-place HU window gives the formula's float32 values bit for bit, whether it
    clips in the CT's integer dtype or in float32, and leaves its input unchanged."""
    hu = np.random.default_rng(2).integers(-1024, 3000, (3, 17, 19)).astype(dtype)
    before = hu.copy()
    lo, hi = window
    want = (np.clip(hu, lo, hi, dtype=np.float32) - lo) * (2.0 / (hi - lo)) - 1.0
    got = Preprocessor(PreprocessConfig(window=window)).scale(hu)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(hu, before)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize(
    "cfg, roi",
    [
        (PreprocessConfig(body_crop=True, body_margin=1, in_plane_size=(16, 20)), None),
        (PreprocessConfig(in_plane_size=(20, 24), crop_size=(18, 28)), None),
        (PreprocessConfig(roi="organ", roi_margin_mm=2.0, spacing_mm=(1.5, 1.5)), None),
    ],
)
def test_image_in_blocks_equals_the_whole_stack(threads: int, cfg, roi) -> None:
    """Blocks of slices (on one thread or several) give the values the whole stack gives:
    with a body crop, with a centre crop, and for an organ ROI that starts mid-volume."""
    from kdseg.data import preprocess
    from kdseg.data.preprocess import CHUNK_SLICES

    img, labels = _volume("LPS", shape=(40, 36, 3 * CHUNK_SLICES + 5))
    pre = Preprocessor(cfg)
    if cfg.roi == "organ":
        roi = (10, 20, 8, 22, CHUNK_SLICES - 3, 2 * CHUNK_SLICES + 4)  # canonical, >1 block
    got, geom = pre.image(img, roi, threads=threads)
    canonical = pre.reorient(img)
    whole = pre.scale(pre._box_slices(canonical, geom))
    want = pre._to_model_grid(whole, geom, "bilinear", fill=-1.0)
    want = want.astype(np.float16).astype(np.float32)
    assert geom.slices[1] - geom.slices[0] > CHUNK_SLICES and got.shape == want.shape
    assert preprocess.CHUNK_SLICES == CHUNK_SLICES
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SLP", "PIR", "ILA"])
def test_predict_writes_the_input_orientation_directly(codes: str) -> None:
    """Labels written through the output's canonical view equal the canonical labels mapped
    back with to_input_orientation (the copy the direct write replaces)."""
    from kdseg.data.tasks import Task
    from kdseg.eval.inference import Predictor

    img, _ = _volume(codes, shape=(40, 36, 21))

    def backend(x: np.ndarray) -> np.ndarray:  # organ where bright, tumor where brightest
        logits = np.zeros((len(x), 3, *x.shape[2:]), np.float32)
        logits[:, 1] = 4 * x[:, 0]
        logits[:, 2] = 8 * (x[:, 0] - 0.5)
        return logits

    cfg = PreprocessConfig(body_crop=True, body_margin=1, in_plane_size=(16, 16))
    predictor = Predictor(backend, cfg, Task("multiclass"), batch_size=4)
    direct = predictor.predict(img)
    canonical, geom = predictor.predict_canonical(img)
    np.testing.assert_array_equal(direct, predictor.pre.to_input_orientation(canonical, geom))
    assert direct.flags.f_contiguous and direct.shape == img.shape and direct.any()


def test_prepare_warns_when_the_window_clips_the_organ(tmp_path) -> None:
    """A liver brighter than the window's top is named in one warning line; one inside it not."""
    import json

    from kdseg.data.cache import case_folder
    from kdseg.data.prepare import outside_window, window_warning

    cfg = PreprocessConfig(window=(-60.0, 140.0))
    label = np.zeros((4, 4, 2), np.uint8)
    label[1:3, 1:3] = 1
    for case_id, liver_hu in (("dim", 100), ("bright", 178)):
        hu = np.where(label > 0, liver_hu, -1000).astype(np.int16)
        shares = outside_window(hu, label, cfg)
        assert shares == ([0.0, 0.0] if liver_hu < 140 else [0.0, 1.0])
        folder = case_folder(tmp_path, case_id)
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(json.dumps({"organ_outside_window": shares}))
    assert window_warning(tmp_path, ["dim"], cfg.window) is None
    line = window_warning(tmp_path, ["dim", "bright"], cfg.window)
    assert line and "1 of 2 case(s)" in line and "bright, 100% at or above 140 HU" in line


def test_prepare_prints_the_window_warning_once_per_process(tmp_path, capsys) -> None:
    """A training run prepares twice (before Lightning starts, then in prepare_data), and
    kdseg-export prepares its val and train cases, then its train cases alone (another count
    in the line): the warning is printed the first time only."""
    import json

    from kdseg.data.cache import case_folder
    from kdseg.data.prepare import case_source, prepare_cases
    from kdseg.data.sources import Case

    cases = []
    for case_id in ("bright", "brighter"):
        folder = case_folder(tmp_path, case_id)
        folder.mkdir(parents=True)  # a prepared case (meta.json) whose organ the window clips
        for name in ("image.npy", "label.npy"):
            np.save(folder / name, np.zeros((1, 4, 4), np.uint8))
        case = Case(case_id, tmp_path / f"{case_id}.nii.gz", tmp_path / f"{case_id}-l.nii.gz")
        meta = {"organ_outside_window": [0.0, 1.0], "source": case_source(case)}
        (folder / "meta.json").write_text(json.dumps(meta))
        cases.append(case)
    config = PreprocessConfig(window=(-60.0, 140.0))
    for _ in range(2):
        assert prepare_cases(cases, config, tmp_path, progress=False) == ["bright", "brighter"]
    assert prepare_cases(cases[:1], config, tmp_path, progress=False) == ["bright"]
    out, err = capsys.readouterr()
    assert "outside the HU window" not in out  # a warning: stderr, not stdout with the results
    assert err.count("outside the HU window") == 1 and "2 of 2 case(s)" in err


@pytest.mark.parametrize("where", ["top", "bottom", "left", "right"])
def test_foreground_only_in_the_padding_predicts_background(where: str) -> None:
    """A padded model grid (``crop_size`` larger than the body box, no resize) whose only
    foreground lies in the padding: no box pixel is foreground, and the prediction finishes
    (it used to fail on a negative window when the padding was at the top or the left)."""
    from kdseg.data.tasks import Task
    from kdseg.eval.inference import Predictor

    def backend(x: np.ndarray) -> np.ndarray:
        fg = np.zeros_like(x[:, 0])
        edge = {"top": (slice(None), slice(0, 3)), "bottom": (slice(None), slice(-3, None))}
        edge |= {"left": (slice(None), slice(None), slice(0, 3))}
        edge |= {"right": (slice(None), slice(None), slice(-3, None))}
        fg[edge[where]] = 1
        return np.stack([1 - fg, fg, np.zeros_like(fg)], axis=1) * 10

    img, _ = _volume("RAS")
    cfg = PreprocessConfig(body_crop=True, body_margin=0, crop_size=(48, 48))
    pred = Predictor(backend, cfg, Task("multiclass"), batch_size=4).predict(img)
    assert pred.shape == img.shape and not pred.any()


def test_the_moved_names_still_import_from_kdseg_data_preprocess() -> None:
    """The config and the box helpers moved out of ``kdseg.data.preprocess`` (into
    ``preprocess_config`` and ``boxes``); older scripts and pickles that name them by their old
    module get the very same objects."""
    import pickle

    from kdseg.data import boxes, preprocess, preprocess_config

    moved = {
        preprocess_config: ("PreprocessConfig", "ROI_KINDS", "WINDOW_LEVELS", "LABEL_RESIZES"),
        boxes: ("Box3D", "organ_box", "organ_level", "expand_box", "jitter_box"),
    }
    for home, names in moved.items():
        for name in names:
            assert getattr(preprocess, name) is getattr(home, name), name
            assert name in preprocess.__all__
    cfg = PreprocessConfig(roi="organ", spacing_mm=(0.8, 0.8))
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    old = pickle.dumps(cfg, protocol=0).replace(
        b"kdseg.data.preprocess_config\n", b"kdseg.data.preprocess\n"
    )
    assert b"kdseg.data.preprocess\n" in old and pickle.loads(old) == cfg


@pytest.mark.parametrize("context", [1, 2])
def test_inference_stacks_context_slices_in_the_training_order(tmp_path, context: int) -> None:
    """A 2.5D model's input channel k is slice z - context + k (clamped at the volume ends)
    in training (:class:`SliceDataset`) and in prediction (:func:`context_stack`, also the
    int8 calibration slices): reversed in one of them, the network would see the volume
    upside down in its context channels, and no round trip would tell."""
    import torch

    from kdseg.data.cache import CachedCase
    from kdseg.data.slices import SliceDataset
    from kdseg.data.tasks import Task
    from kdseg.eval.inference import context_stack

    n = 5
    image = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 3, 4), np.float32)
    folder = tmp_path / "case"
    folder.mkdir()
    np.save(folder / "image.npy", image)
    np.save(folder / "label.npy", np.zeros(image.shape, np.uint8))
    case = CachedCase("case", folder, n, (), (), (1.0, 1.0, 1.0))
    train = SliceDataset([case], Task("multiclass"), context=context)
    stacked = context_stack(image, np.arange(n), context)
    for z in range(n):
        want = np.clip(np.arange(z - context, z + context + 1), 0, n - 1).astype(np.float32)
        assert stacked[z, :, 0, 0].tolist() == want.tolist()
        torch.testing.assert_close(train[z]["image"], torch.from_numpy(stacked[z]))


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SLP"])
@pytest.mark.parametrize("mode", [None, "nearest-exact"])
def test_lesions_kept_counts_the_lesions_the_model_grid_loses(codes: str, mode: str | None) -> None:
    """A 3x3-voxel lesion survives a 4x in-plane downsample; a one-voxel lesion between the
    sampled pixels does not; the stored orientation changes neither count."""
    img, labels = _volume("RAS", shape=(64, 64, 8))  # RAS: the tiny lesion's index as written
    labels[41, 43, 1] = 2  # off every 4th row and column (and off their centres)
    labels[15, 13, 6] = 2  # touches the big lesion's corner (12:15, 10:13, 4:6) diagonally: one
    transform = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt(codes))
    stored = nib.Nifti1Image(
        ornt.apply_orientation(np.asanyarray(img.dataobj), transform),
        img.affine @ ornt.inv_ornt_aff(transform, img.shape),
    )
    stored_labels = ornt.apply_orientation(labels, transform)
    pre = Preprocessor(PreprocessConfig(in_plane_size=(16, 16), label_resize=mode))
    _, geom = pre.image(stored)
    assert pre.lesions_kept(stored_labels, stored, geom) == (2, 1)
    assert pre.lesions_kept(np.where(labels == 2, 1, labels), img, geom) == (0, 0)
    grid = Preprocessor(PreprocessConfig(label_resize=mode))
    _, full = grid.image(stored)
    assert grid.lesions_kept(stored_labels, stored, full) == (2, 2)  # no resize: none lost


def test_prepare_warns_once_when_lesions_vanish_on_the_model_grid(tmp_path, capsys) -> None:
    """Cases whose ``meta.json`` counts lesions the grid lost are summed in one stderr line
    naming the worst case; counts without a loss, or a cache without counts, say nothing."""
    import json

    from kdseg.data.cache import case_folder
    from kdseg.data.prepare import case_source, lost_lesion_warning, prepare_cases
    from kdseg.data.sources import Case

    cases = []
    for case_id, counts in (("a", [4, 3]), ("b", [6, 4]), ("c", [2, 2]), ("old", None)):
        folder = case_folder(tmp_path, case_id)
        folder.mkdir(parents=True)
        for name in ("image.npy", "label.npy"):
            np.save(folder / name, np.zeros((1, 4, 4), np.uint8))
        case = Case(case_id, tmp_path / f"{case_id}.nii.gz", tmp_path / f"{case_id}-l.nii.gz")
        meta = {"source": case_source(case), **({"tumor_lesions": counts} if counts else {})}
        (folder / "meta.json").write_text(json.dumps(meta))
        cases.append(case)
    assert lost_lesion_warning(tmp_path, ["c", "old"]) is None
    line = lost_lesion_warning(tmp_path, ["a", "b", "c", "old"])
    assert line and line.startswith("3 of 12 tumor lesion(s), in 2 case(s), keep no voxel")
    assert "(worst: b, 2 of 6)" in line
    for _ in range(2):
        prepare_cases(cases, PreprocessConfig(), tmp_path, progress=False)
    out, err = capsys.readouterr()
    assert "tumor lesion" not in out and err.count("3 of 12 tumor lesion(s)") == 1
