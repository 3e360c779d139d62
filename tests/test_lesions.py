"""Lesion counts, volumes and diameters on synthetic shapes with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from kdseg.eval import lesions
from kdseg.eval.lesions import (
    connectivity_structure,
    format_lesion_report,
    hull_candidates,
    lesion_diameter_mm,
    lesion_report,
    write_lesion_report,
)

SPACING = (0.7, 0.7, 5.0)
VOXEL_ML = 0.7 * 0.7 * 5.0 / 1000


def _ellipsoid(shape, centre, radius_mm, spacing=SPACING) -> np.ndarray:
    """Voxels whose centres lie within ``radius_mm`` of ``centre`` in physical space."""
    grid = np.indices(shape).astype(float)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing, strict=True))
    return d2 <= radius_mm**2


def _liver_with_two_lesions():
    label = np.zeros((40, 40, 12), np.uint8)
    label[2:38, 2:38, 1:11] = 1  # organ: 36 x 36 x 10 voxels
    label[5:9, 5:10, 2:5] = 2  # box lesion: 4 x 5 x 3 = 60 voxels
    sphere = _ellipsoid(label.shape, (22, 22, 6), 10.0)
    label[sphere] = 2
    return label, sphere


def test_volumes_burden_and_lesions():
    label, sphere = _liver_with_two_lesions()
    report = lesion_report(label, SPACING)
    n_tumor = 60 + int(sphere.sum())
    assert report["organ_volume_ml"] == pytest.approx(36 * 36 * 10 * VOXEL_ML)
    assert report["tumor_volume_ml"] == pytest.approx(n_tumor * VOXEL_ML)
    assert report["tumor_burden_percent"] == pytest.approx(100 * n_tumor / (36 * 36 * 10))
    assert report["n_lesions"] == 2
    big, box = report["lesions"]
    assert (big["id"], box["id"]) == (1, 2)
    assert big["n_voxels"] == sphere.sum()
    assert big["centroid_voxel"] == pytest.approx([22, 22, 6])
    # The sphere's extreme voxels are the two 10 mm away along z (2 slices): 20 mm.
    assert big["max_diameter_mm"] == pytest.approx(20.0)
    assert box["volume_ml"] == pytest.approx(60 * VOXEL_ML)
    assert box["centroid_voxel"] == pytest.approx([6.5, 7.0, 3.0])
    assert box["max_diameter_mm"] == pytest.approx(math.sqrt(2.1**2 + 2.8**2 + 10.0**2))


def test_a_sheared_grid_measures_true_volumes_and_distances():
    """A NIfTI of a tilted gantry (slices shifted 30 degrees along y): each voxel holds
    |det| = 0.7 * 0.7 * 5 * cos(30) mm^3, not the product of the column lengths, and distances
    follow the tilted axes. An orthogonal affine (flipped, permuted) changes no number."""
    label, sphere = _liver_with_two_lesions()
    tilt = math.radians(30)
    affine = np.eye(4)
    affine[:3, :3] = [[0.7, 0, 0], [0, 0.7, 5 * math.sin(tilt)], [0, 0, 5 * math.cos(tilt)]]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    assert spacing == pytest.approx(SPACING)
    report = lesion_report(label, spacing, affine=affine)
    voxel_ml = VOXEL_ML * math.cos(tilt)
    assert report["organ_volume_ml"] == pytest.approx(36 * 36 * 10 * voxel_ml)
    assert report["tumor_volume_ml"] == pytest.approx((60 + int(sphere.sum())) * voxel_ml)
    big, box = report["lesions"]
    assert box["volume_ml"] == pytest.approx(60 * voxel_ml)
    box_voxels = np.zeros_like(sphere)  # every pair of voxels, in mm, for each lesion
    box_voxels[5:9, 5:10, 2:5] = True
    for lesion, mask in ((box, box_voxels), (big, sphere)):
        physical = np.argwhere(mask) @ affine[:3, :3].T
        assert lesion["max_diameter_mm"] == pytest.approx(pdist(physical).max())
    flipped = np.diag([-0.7, 0.7, 5.0, 1.0])[:, [1, 0, 2, 3]]  # axes swapped and flipped
    assert lesion_report(label, [0.7, 0.7, 5.0], affine=flipped) == lesion_report(label, SPACING)


def test_connectivity_and_min_size():
    label = np.zeros((6, 6, 4), np.uint8)
    label[1, 1, 1] = label[2, 2, 2] = 2  # touch at a corner only
    label[4:6, 4:6, 0] = 2  # 4 voxels, separate
    assert lesion_report(label, SPACING)["n_lesions"] == 2
    assert lesion_report(label, SPACING, connectivity=6)["n_lesions"] == 3
    filtered = lesion_report(label, SPACING, connectivity=6, min_size_voxels=2)
    assert filtered["n_lesions"] == 1
    assert filtered["tumor_volume_ml"] == pytest.approx(6 * VOXEL_ML)  # totals count every voxel
    assert connectivity_structure(2, 8).sum() == 9
    with pytest.raises(ValueError, match="connectivity"):
        connectivity_structure(3, 8)


def test_empty_volume():
    report = lesion_report(np.zeros((4, 4, 2), np.uint8), SPACING)
    assert report["n_lesions"] == 0 and report["tumor_burden_percent"] == 0.0
    assert "Lesions:" in format_lesion_report(report)


@pytest.mark.parametrize("name", ["disc-one-slice", "diagonal-line", "blob"])
def test_diameter_hull_paths(name, monkeypatch):
    """Many hull candidates go through qhull; flat and linear ones through the subspace
    fallback (the limit is lowered so that small shapes take that path)."""
    monkeypatch.setattr(lesions, "BRUTE_FORCE_MAX_POINTS", 4)
    if name == "disc-one-slice":  # rank 2: a one-slice disc of radius 20 voxels
        mask = _ellipsoid((45, 45, 1), (22, 22, 0), 20 * 0.7)
        expected = 40 * 0.7
    elif name == "diagonal-line":  # rank 1: 300 voxels along the xy diagonal
        mask = np.zeros((300, 300, 1), bool)
        mask[np.arange(300), np.arange(300), 0] = True
        expected = 299 * 0.7 * math.sqrt(2)
    else:  # random 3D blob, checked against all pairs of its voxels
        rng = np.random.default_rng(1)
        mask = rng.random((14, 14, 6)) > 0.3
        expected = pdist(np.argwhere(mask) * np.array(SPACING)).max()
    assert len(hull_candidates(mask)) > lesions.BRUTE_FORCE_MAX_POINTS
    assert lesion_diameter_mm(mask, SPACING) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(4))
def test_diameter_from_line_ends_is_exact(seed):
    """The line ends (hull candidates) give the all-voxel-pairs diameter, for non-convex blobs,
    and are far fewer than the voxels."""
    rng = np.random.default_rng(seed)
    mask = rng.random((12, 10, 7)) > 0.55
    mask[rng.integers(0, 12), :, :] = False  # a gap: two lumps
    expected = pdist(np.argwhere(mask) * np.array(SPACING)).max()
    candidates = hull_candidates(mask)
    assert len(candidates) < mask.sum() <= lesions.BRUTE_FORCE_MAX_POINTS
    assert lesion_diameter_mm(mask, SPACING) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("order", ["C", "F"])
def test_labelling_in_the_tumor_box_matches_the_whole_volume(order):
    """Lesions found inside the tumor's bounding box are those of the whole-volume labelling:
    same count, sizes, centroids and diameters, in the same order (ties included)."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    label = np.zeros((60, 50, 30), np.uint8)
    label[10:50, 8:45, 4:26] = 1
    blobs = ndimage.binary_dilation(rng.random(label.shape) > 0.9995, iterations=2)
    blobs[20:23, 20:23, 10:12] = True
    blobs[30:33, 30:33, 15:17] = True  # two lesions of the same size: ties keep their order
    label[blobs & (label == 1)] = 2
    label = np.asarray(label, order=order)
    report = lesion_report(label, SPACING, connectivity=6)

    components, _ = ndimage.label(label == 2, structure=connectivity_structure(3, 6))
    expected = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        mask = components[box] == index
        centroid = np.argwhere(mask).mean(axis=0) + [s.start for s in box]
        expected.append((int(mask.sum()), [round(float(c), 2) for c in centroid]))
    expected.sort(key=lambda item: item[0], reverse=True)
    assert report["n_lesions"] == len(expected) > 5
    got = [(lesion["n_voxels"], lesion["centroid_voxel"]) for lesion in report["lesions"]]
    assert got == expected
    assert report["tumor_volume_ml"] == pytest.approx((label == 2).sum() * VOXEL_ML)
    assert report["organ_volume_ml"] == pytest.approx((label > 0).sum() * VOXEL_ML)


def test_format_and_write(tmp_path):
    label, _ = _liver_with_two_lesions()
    report = lesion_report(label, SPACING)
    text = format_lesion_report(report, max_rows=1)
    assert "Tumor burden" in text and "20.0" in text and "1 smaller lesion" in text
    json_path, txt_path = write_lesion_report(report, tmp_path / "r.json", tmp_path / "r.txt")
    assert json.loads(json_path.read_text())["n_lesions"] == 2
    assert txt_path.read_text() == format_lesion_report(report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.txt"]


def test_report_measures_only_what_the_task_predicts(tmp_path):
    """A tumor-only model's report has no organ volume or burden (its "organ" would be its
    tumor, a burden of 100 %), an organ-only model's no tumor or lesions (0 mL would read as
    checked): null in the JSON, no line in the text."""
    from kdseg.data.tasks import Task
    from kdseg.eval.lesions import report_labels

    label, _ = _liver_with_two_lesions()
    tumor_only = np.where(label == 2, 2, 0).astype(np.uint8)
    organ_only = (label > 0).astype(np.uint8)
    assert report_labels(Task("multiclass").output_labels) == ((1, 2), 2)
    tumor = lesion_report(tumor_only, SPACING, *report_labels(Task("tumor").output_labels))
    organ = lesion_report(organ_only, SPACING, *report_labels(Task("organ").output_labels))
    full = lesion_report(label, SPACING)
    assert tumor["organ_volume_ml"] is None and tumor["tumor_burden_percent"] is None
    assert tumor["tumor_volume_ml"] == full["tumor_volume_ml"] > 0
    assert tumor["n_lesions"] == full["n_lesions"] == 2
    assert organ["organ_volume_ml"] == full["organ_volume_ml"] > 0
    for key in ("tumor_volume_ml", "tumor_burden_percent", "n_lesions", "lesions", "tumor_label"):
        assert organ[key] is None, key
    text = format_lesion_report(tumor)
    assert "Organ volume" not in text and "burden" not in text and "Lesions:" in text
    text = format_lesion_report(organ)
    assert "Organ volume" in text and "Tumor" not in text and "Lesions" not in text
    json_path, _ = write_lesion_report(organ, tmp_path / "r.json", tmp_path / "r.txt")
    assert json.loads(json_path.read_text())["tumor_volume_ml"] is None


# The overlay montage lives beside the lesion report (both are per-case visual/text summaries).


def test_select_slices_spans_organ_and_keeps_largest_tumor():
    from kdseg.eval.overlay import select_slices

    label, _ = _liver_with_two_lesions()
    label[5:35, 5:35, 9] = 2  # the largest tumor area (900 voxels, the sphere peaks near 600)
    slices = select_slices(label, 6)
    assert len(slices) == 6 and 9 in slices
    assert slices[0] == 1 and slices[-1] == 10  # the organ spans z = 1..10
    assert select_slices(np.zeros((4, 4, 3), np.uint8), 6) == [0, 1, 2]


def test_overlay_png_and_array(tmp_path):
    import matplotlib.image

    from kdseg.eval.overlay import overlay_figure_array, save_overlay

    label, _ = _liver_with_two_lesions()
    image = np.where(label > 0, 60.0, -100.0) + np.random.default_rng(0).normal(0, 20, label.shape)
    path = save_overlay(
        image, label, tmp_path / "case.png", n_slices=4, title="case 1", spacing=SPACING
    )
    assert path.stat().st_size > 0
    png = matplotlib.image.imread(path)
    assert png.ndim == 3 and png.shape[0] > 100
    rgb = overlay_figure_array(image, label, n_slices=4, title="case 1", spacing=SPACING)
    assert rgb.dtype == np.uint8 and rgb.shape == png.shape[:2] + (3,)
    assert (rgb[..., 0] > 200).any()  # red tumor outline is drawn
    assert [p.name for p in tmp_path.iterdir()] == ["case.png"]
    # a tumor-only model (labels 0 and 2): its tumor is outlined as tumor, and no "organ" is
    # drawn or named (with the defaults the tumor also counted as organ, in green)
    tumor_only = np.where(label == 2, 2, 0).astype(label.dtype)

    def lime(rgb: np.ndarray) -> bool:
        return bool(((rgb[..., 1] > 200) & (rgb[..., 0] < 80) & (rgb[..., 2] < 80)).any())

    assert lime(overlay_figure_array(image, tumor_only, n_slices=4))
    rgb = overlay_figure_array(image, tumor_only, n_slices=4, organ_labels=None, tumor_label=2)
    assert not lime(rgb) and (rgb[..., 0] > 200).any()


def test_nonzero_box_holds_every_nonzero_voxel_tightly() -> None:
    """The box the report counts in: every nonzero voxel inside, each face touching one."""
    from kdseg.eval.lesions import nonzero_box

    rng = np.random.default_rng(4)
    label = np.zeros((30, 20, 12), np.uint8, order="F")
    label[rng.integers(3, 25, 40), rng.integers(2, 15, 40), rng.integers(1, 9, 40)] = 2
    box = nonzero_box(label)
    assert box is not None
    inside = np.zeros(label.shape, bool)
    inside[box] = True
    assert not label[~inside].any()
    for axis, s in enumerate(box):
        moved = np.moveaxis(label, axis, 0)
        assert moved[s.start].any() and moved[s.stop - 1].any()
    assert nonzero_box(np.zeros((4, 4, 4), np.uint8)) is None
