"""Preprocessing in millimetres and the organ ROI: forward and inverse keep the input geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel import orientations as ornt

from kdseg.data.boxes import expand_box, jitter_box, organ_box
from kdseg.data.preprocess import Preprocessor
from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.errors import InputError

SPACING = (0.8, 0.7, 2.5)  # anisotropic in-plane and through-plane


def stored_volume(codes: str, organs=((10, 21, 8, 23, 3, 9),), shape=(40, 36, 12)):
    """Body, organ boxes (the first with a tumor) stored in orientation ``codes``; also the
    labels on the stored grid. Window [-60, 140]: body 40 HU -> 0.0, organ 120 HU -> 0.8,
    tumor 80 HU -> 0.4, air -> -1."""
    rng = np.random.default_rng(0)
    hu = rng.normal(-900, 5, shape).astype(np.int16)
    hu[2:38, 2:34, :] = 40
    labels = np.zeros(shape, np.uint8)
    for x0, x1, y0, y1, z0, z1 in organs:
        labels[x0:x1, y0:y1, z0:z1] = 1
    x0, _, y0, _, z0, _ = organs[0]
    labels[x0 + 2 : x0 + 5, y0 + 2 : y0 + 6, z0 + 1 : z0 + 3] = 2
    hu[labels == 1], hu[labels == 2] = 120, 80
    transform = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.axcodes2ornt(codes))
    affine = np.diag([*SPACING, 1.0]) @ ornt.inv_ornt_aff(transform, shape)
    affine[:3, 3] = (-17.0, 30.5, -102.25)
    return (
        nib.Nifti1Image(ornt.apply_orientation(hu, transform), affine),
        ornt.apply_orientation(labels, transform),
    )


def _round_trip(pre: Preprocessor, img: nib.Nifti1Image, labels: np.ndarray, roi=None):
    """Labels -> model grid -> perfect one-hot prediction -> back onto the input grid."""
    slices, geom = pre.image(img, roi)
    model_labels = pre.label(labels, img, geom)
    assert slices.shape == model_labels.shape and slices.shape[1:] == geom.model_size
    onehot = np.eye(3, dtype=np.float32)[model_labels].transpose(0, 3, 1, 2)
    boxed = pre.restore(onehot, geom).argmax(1)
    x0, x1, y0, y1 = geom.box
    z0, z1 = geom.slices
    canonical = np.zeros(geom.canonical_shape, np.uint8)
    canonical[x0:x1, y0:y1, z0:z1] = boxed.transpose(1, 2, 0)
    return pre.to_input_orientation(canonical, geom), geom


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SLP", "PIR"])
@pytest.mark.parametrize(
    "spacing, size",
    [((0.4, 0.35), None), ((0.4, 0.7), None), ((0.8, 0.35), (90, 120))],
    ids=["half", "half-x", "half-y-padded"],
)
def test_spacing_round_trip_is_exact(codes: str, spacing, size) -> None:
    """Whole-factor finer spacings (anisotropic, any storage order): the labels come back
    exactly, and the model grid has the requested spacing (and size, when given)."""
    img, labels = stored_volume(codes)
    pre = Preprocessor(PreprocessConfig(spacing_mm=spacing, in_plane_size=size))
    back, geom = _round_trip(pre, img, labels)
    assert back.shape == img.shape
    np.testing.assert_array_equal(back, labels)
    extent = np.array([40 * SPACING[0], 36 * SPACING[1]])
    np.testing.assert_allclose(extent / np.array(geom.resized), spacing)
    assert geom.model_size == (size or geom.resized)


@pytest.mark.parametrize("codes", ["LPS", "PIR"])
def test_coarser_spacing_keeps_geometry(codes: str) -> None:
    """Coarser than the input (resampled twice): same grid, the bulk of every label agrees."""
    img, labels = stored_volume(codes)
    pre = Preprocessor(PreprocessConfig(spacing_mm=(1.5, 1.5)))
    back, geom = _round_trip(pre, img, labels)
    assert geom.resized == (round(40 * 0.8 / 1.5), round(36 * 0.7 / 1.5))
    assert back.shape == img.shape
    assert (back == labels).mean() > 0.97
    assert ((back > 0) & (labels > 0)).sum() / (labels > 0).sum() > 0.85


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SLP"])
def test_roi_crop_and_paste_round_trip(codes: str) -> None:
    """Organ box plus margin: only the ROI's slices, and labels pasted back exactly."""
    img, labels = stored_volume(codes)
    pre = Preprocessor(PreprocessConfig(roi="organ", roi_margin_mm=3.0, spacing_mm=(0.4, 0.35)))
    roi = organ_box(pre.reorient(img, labels) > 0)
    assert roi == (10, 21, 8, 23, 3, 9)
    back, geom = _round_trip(pre, img, labels, roi)
    np.testing.assert_array_equal(back, labels)
    # 3 mm = 4 voxels of 0.8 mm, 5 of 0.7 mm, 2 of 2.5 mm (rounded up)
    assert geom.box == (6, 25, 3, 28) and geom.slices == (1, 11)
    assert pre.image(img, roi)[0].shape[0] == 10


def test_roi_at_the_volume_edge_and_tiny_organ() -> None:
    shape, spacing = (40, 36, 12), SPACING
    assert expand_box((0, 3, 30, 36, 10, 12), 5.0, spacing, shape) == (0, 10, 22, 36, 8, 12)
    assert expand_box((20, 21, 9, 10, 5, 6), 0.0, spacing, shape) == (20, 21, 9, 10, 5, 6)
    img, labels = stored_volume("LPS")
    edge = np.zeros_like(labels)
    canonical_edge = Preprocessor(PreprocessConfig()).reorient(img, edge)
    canonical_edge[0:3, 0:4, 10:12] = 1  # writes through the view into ``edge``
    pre = Preprocessor(PreprocessConfig(roi="organ", roi_margin_mm=10.0, spacing_mm=(0.4, 0.35)))
    back, geom = _round_trip(pre, img, edge, organ_box(canonical_edge))
    np.testing.assert_array_equal(back, edge)
    assert geom.box[0] == 0 and geom.box[2] == 0 and geom.slices[1] == 12
    tiny = np.zeros_like(labels)
    pre.reorient(img, tiny)[20, 17, 6] = 2  # one voxel
    fixed = Preprocessor(
        PreprocessConfig(roi="organ", spacing_mm=(0.8, 0.7), in_plane_size=(32, 32))
    )
    back, geom = _round_trip(fixed, img, tiny, organ_box(pre.reorient(img, tiny)))
    np.testing.assert_array_equal(back, tiny)
    assert geom.model_size == (32, 32)


def test_jitter_moves_faces_within_bounds() -> None:
    rng = np.random.default_rng(0)
    box = (10, 21, 8, 23, 3, 9)
    seen = set()
    for _ in range(50):
        j = jitter_box(box, 2.0, SPACING, rng)
        seen.add(j)
        for axis in range(3):
            reach = round(2.0 / SPACING[axis])
            assert abs(j[2 * axis] - box[2 * axis]) <= reach
            assert abs(j[2 * axis + 1] - box[2 * axis + 1]) <= reach
            assert j[2 * axis] < j[2 * axis + 1]
    assert len(seen) > 10
    assert jitter_box((5, 6, 5, 6, 5, 6), 30.0, SPACING, rng)[0] < 6  # never inverted


def test_config_rules() -> None:
    with pytest.raises(InputError, match="not both"):
        PreprocessConfig(spacing_mm=(1.0, 1.0), in_plane_size=(64, 64), crop_size=(48, 48))
    with pytest.raises(InputError, match="roi"):
        PreprocessConfig(roi="kidney")
    with pytest.raises(InputError, match="spacing_mm"):
        PreprocessConfig.from_dict({"spacing_mm": [1.0, float("nan")]})
    assert PreprocessConfig.from_dict({"spacing_mm": 1.5}).spacing_mm == (1.5, 1.5)
    # configs without the new keys keep their digest (and so their slice cache)
    assert PreprocessConfig().digest() == PreprocessConfig(roi_margin_mm=3.0).digest()
    assert PreprocessConfig().digest() != PreprocessConfig(spacing_mm=(1.5, 1.5)).digest()
    img, _ = stored_volume("RAS")
    with pytest.raises(InputError, match="stage 2 of a cascade"):
        Preprocessor(PreprocessConfig(roi="organ")).image(img)


def test_prepare_caches_roi_slices_only(tmp_path) -> None:
    """``roi: organ`` in prepare: the cache holds the (jittered) ground-truth box's slices,
    every organ voxel among them; a case without organ gives no slice."""
    from kdseg.data.cache import open_case
    from kdseg.data.prepare import prepare_case
    from kdseg.data.sources import Case

    cfg = PreprocessConfig(roi="organ", roi_margin_mm=6.0, roi_jitter_mm=3.0)
    cases = []
    for name, organs in (("one", ((10, 21, 8, 23, 3, 9),)), ("edge", ((0, 6, 30, 36, 8, 12),))):
        img, labels = stored_volume("PIR", organs, shape=(40, 36, 24))
        nib.save(img, str(tmp_path / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(labels, img.affine), str(tmp_path / f"{name}-seg.nii.gz"))
        cases.append((name, labels))
    img, labels = stored_volume("LPS")
    empty = np.zeros_like(labels)
    nib.save(img, str(tmp_path / "none.nii.gz"))
    nib.save(nib.Nifti1Image(empty, img.affine), str(tmp_path / "none-seg.nii.gz"))
    for name, labels in [*cases, ("none", empty)]:
        case = Case(name, tmp_path / f"{name}.nii.gz", tmp_path / f"{name}-seg.nii.gz")
        prepare_case(case, cfg, tmp_path / "cache")
        cached = open_case(tmp_path / "cache", name)
        assert int((np.asarray(cached.label) > 0).sum()) == int((labels > 0).sum())
        if name == "none":
            assert cached.n_slices == 0 and cached.image.shape[0] == 0
        else:
            # margin 3 slices (6 mm / 2.5 mm, rounded up) + jitter <= 1 slice, on each side
            assert cached.n_slices - len(cached.organ_slices) <= 8 and cached.n_slices < 16
    again = tmp_path / "again"
    prepare_case(Case("one", tmp_path / "one.nii.gz", tmp_path / "one-seg.nii.gz"), cfg, again)
    same = open_case(again, "one").image, open_case(tmp_path / "cache", "one").image
    np.testing.assert_array_equal(*same)  # the jitter is seeded: the same cache every time


def test_a_jitter_above_the_margin_never_cuts_the_organ_out_of_its_crop(tmp_path) -> None:
    """Faces move inwards by at most the margin: a training crop holds every organ voxel
    whatever ``roi_jitter_mm``; with a jitter within the margin the boxes are unchanged."""
    from kdseg.data.cache import open_case
    from kdseg.data.prepare import prepare_case
    from kdseg.data.sources import Case

    box, shape = (10, 21, 8, 23, 3, 9), (40, 36, 12)
    for seed in range(100):
        grown = expand_box(
            jitter_box(box, 8.0, SPACING, np.random.default_rng(seed), margin_mm=1.0),
            1.0,
            SPACING,
            shape,
        )
        for axis in range(3):
            assert grown[2 * axis] <= box[2 * axis] and grown[2 * axis + 1] >= box[2 * axis + 1]
        kept = jitter_box(box, 5.0, SPACING, np.random.default_rng(seed), margin_mm=5.0)
        assert kept == jitter_box(box, 5.0, SPACING, np.random.default_rng(seed))
    cfg = PreprocessConfig(roi="organ", roi_margin_mm=1.0, roi_jitter_mm=8.0)
    img, labels = stored_volume("LPS", shape=(40, 36, 24))
    nib.save(img, str(tmp_path / "one.nii.gz"))
    nib.save(nib.Nifti1Image(labels, img.affine), str(tmp_path / "one-seg.nii.gz"))
    for case_id in ("a", "b", "c", "d", "e", "f"):  # the draw is seeded by the case id
        case = Case(case_id, tmp_path / "one.nii.gz", tmp_path / "one-seg.nii.gz")
        prepare_case(case, cfg, tmp_path / "cache")
        cached = open_case(tmp_path / "cache", case_id)
        assert int((np.asarray(cached.label) > 0).sum()) == int((labels > 0).sum()), case_id


def test_label_resize_and_roi_components_train_on_the_same_boxes(tmp_path) -> None:
    """The ROI jitter is seeded by the config digest; keys that do not shape a ground-truth
    box (how labels are resized, how many components a predicted mask keeps) leave it alone:
    the image slices are the same, so a pilot of either changes only what it names."""
    from kdseg.data.cache import open_case
    from kdseg.data.prepare import prepare_case
    from kdseg.data.sources import Case

    img, labels = stored_volume("LPS", shape=(40, 36, 24))
    nib.save(img, str(tmp_path / "one.nii.gz"))
    nib.save(nib.Nifti1Image(labels, img.affine), str(tmp_path / "one-seg.nii.gz"))
    base = dict(roi="organ", roi_margin_mm=3.0, roi_jitter_mm=3.0, in_plane_size=(16, 16))
    images = []
    for extra in ({}, {"label_resize": "nearest-exact"}, {"roi_components": 2}):
        cfg = PreprocessConfig(**base, **extra)
        cache = tmp_path / cfg.digest()
        prepare_case(Case("c", tmp_path / "one.nii.gz", tmp_path / "one-seg.nii.gz"), cfg, cache)
        images.append(np.asarray(open_case(cache, "c").image))
    assert len({str(p.name) for p in tmp_path.iterdir() if p.is_dir()}) == 3  # three caches
    for other in images[1:]:
        np.testing.assert_array_equal(other, images[0])


@pytest.mark.parametrize("dtype", ["uint8", "int16", "bool", "bogus"])
def test_a_store_dtype_that_cannot_hold_the_slices_is_refused(dtype: str) -> None:
    """The slices are floats in [-1, 1]: an integer store type rounded them to -1 / 0 / 1
    (uint8: 0 / 1 / 255) without a word."""
    with pytest.raises(InputError, match="store_dtype"):
        PreprocessConfig.from_dict({"store_dtype": dtype})
    assert PreprocessConfig(store_dtype="float32").store_dtype == "float32"


@pytest.mark.parametrize(
    "bad",
    [
        {"in_plane_size": [0, 16]},
        {"in_plane_size": [64]},
        {"crop_size": [-4, 16]},
        {"crop_size": [16.5, 16]},
        {"body_margin": -3},
        {"axcodes": "RRS"},
        {"axcodes": "RA"},
        {"in_plane_size": 64.5},  # once: TypeError
        {"in_plane_size": [7, 64]},
        {"in_plane_size": [200000, 200000]},  # once: MemoryError
        {"crop_size": "abc"},
        {"spacing_mm": "abc"},  # once: ValueError
        {"spacing_mm": [1.0, float("nan")]},
        {"spacing_mm": 1e-9},  # once: "array is too big"
        {"spacing_mm": [1.0, 25.0]},
        {"spacing_mm": True},
        {"window": "abc"},  # once: ValueError
        {"window": ["a", "b"]},
        {"window": [-60, float("inf")]},
        {"body_margin": 1.5},  # once: truncated to 1
        {"body_margin": "abc"},
        {"body_crop": "false"},  # once: bool("false"), a body crop
        {"roi_margin_mm": float("nan")},
        {"roi_jitter_mm": "abc"},
    ],
)
def test_slice_sizes_and_margins_that_cannot_work_are_config_errors(bad: dict) -> None:
    """Refused with the key's name when the config is read, not with a ZeroDivisionError or
    an unpacking error in the first case (or, for a negative body margin, a body box cut
    into the body without a word)."""
    key = next(iter(bad))
    with pytest.raises(InputError, match=key):
        PreprocessConfig.from_dict(bad)
    assert PreprocessConfig.from_dict({"in_plane_size": 64}).in_plane_size == (64, 64)
    assert PreprocessConfig(crop_size=(np.int64(8), 8)).crop_size == (8, 8)
