"""Metrics against hand-computed cases (anisotropic spacing, every empty-case combination)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from kdseg.eval.metrics import (
    CLASSES_LITS,
    HEADLINE_DICE,
    RVD_FALSE_POSITIVE,
    aggregate_over_seeds,
    binary_metrics,
    case_metrics,
    format_mean_std,
    image_diagonal_mm,
    paper_protocol_case,
    paper_protocol_dice,
    summarize,
)

SPACING = (0.7, 0.7, 5.0)
SHAPE = (10, 10, 6)


def _mask(*voxels: tuple[int, int, int], shape=SHAPE) -> np.ndarray:
    m = np.zeros(shape, bool)
    for v in voxels:
        m[v] = True
    return m


def test_single_voxels_anisotropic_distance():
    # 3 voxels apart in x (0.7 mm) and 1 slice apart in z (5 mm): sqrt(2.1^2 + 5^2) mm.
    r = binary_metrics(_mask((5, 5, 2)), _mask((2, 5, 3)), SPACING)
    d = math.sqrt(2.1**2 + 5.0**2)
    assert r["hd95"] == pytest.approx(d, abs=1e-5)
    assert r["assd"] == pytest.approx(d, abs=1e-5)
    assert (r["dice"], r["voe"], r["rvd"]) == (0.0, 1.0, 0.0)


def test_two_voxels_percentile_and_counts():
    # pred = the gt voxel plus one 2 slices away (10 mm). d(pred->gt) = {0, 10}, d(gt->pred) = {0}.
    r = binary_metrics(_mask((5, 5, 1), (5, 5, 3)), _mask((5, 5, 1)), SPACING)
    assert r["dice"] == pytest.approx(2 / 3)
    assert r["voe"] == pytest.approx(0.5)
    assert r["rvd"] == pytest.approx(1.0)
    assert r["hd95"] == pytest.approx(9.5, abs=1e-5)  # MONAI: max of directed 95th percentiles
    assert r["assd"] == pytest.approx(10 / 3, abs=1e-5)
    assert (r["pred_voxels"], r["gt_voxels"], r["intersection"]) == (2, 1, 1)
    assert not r["gt_empty"] and not r["pred_empty"]


def test_box_shifted_one_slice():
    # 4x4x3 boxes, one shifted by a 5 mm slice. Each surface has 44 voxels; both directed distance
    # sets are 24 x 0, 4 x 0.7 (centre of a face to the ring beside it), 16 x 5 (the extra face).
    gt = np.zeros(SHAPE, bool)
    gt[2:6, 2:6, 1:4] = True
    pred = np.roll(gt, 1, axis=2)
    r = binary_metrics(pred, gt, SPACING)
    assert r["dice"] == pytest.approx(2 * 32 / 96)
    assert r["voe"] == pytest.approx(1 - 32 / 64)
    assert r["rvd"] == 0.0
    assert r["assd"] == pytest.approx((4 * 0.7 + 16 * 5.0) / 44, abs=1e-5)
    assert r["hd95"] == pytest.approx(5.0, abs=1e-5)


def test_matches_brute_force_on_random_blobs():
    rng = np.random.default_rng(0)
    pred, gt = rng.random((2, 9, 8, 5)) > 0.6
    r = binary_metrics(pred, gt, SPACING)

    def surface_mm(m):
        return np.argwhere(m & ~binary_erosion(m)) * np.array(SPACING)

    d = cdist(surface_mm(pred), surface_mm(gt))
    d_pg, d_gp = d.min(axis=1), d.min(axis=0)
    assert r["hd95"] == pytest.approx(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)), 1e-5)
    assert r["assd"] == pytest.approx(np.concatenate([d_pg, d_gp]).mean(), 1e-5)
    assert r["dice"] == pytest.approx(2 * r["intersection"] / (pred.sum() + gt.sum()))


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        (_mask(), _mask(), dict(dice=1.0, voe=0.0, rvd=0.0, hd95=0.0, assd=0.0)),
        (_mask((1, 1, 1)), _mask(), dict(dice=0.0, voe=1.0, rvd=RVD_FALSE_POSITIVE, hd95="diag")),
        (_mask(), _mask((1, 1, 1)), dict(dice=0.0, voe=1.0, rvd=-1.0, hd95="diag")),
    ],
    ids=["both-empty", "false-positive", "missed"],
)
def test_empty_cases(pred, gt, expected):
    r = binary_metrics(pred, gt, SPACING)
    diag = math.sqrt(7.0**2 + 7.0**2 + 30.0**2)
    assert image_diagonal_mm(SHAPE, SPACING) == pytest.approx(diag)
    for key, value in expected.items():
        assert r[key] == pytest.approx(diag if value == "diag" else value)
    assert r["assd"] == r["hd95"]
    assert r["gt_empty"] == (not gt.any()) and r["pred_empty"] == (not pred.any())
    assert all(math.isfinite(r[k]) for k in ("dice", "voe", "rvd", "hd95", "assd"))


def test_case_metrics_classes_include_tumor_in_organ():
    gt = np.zeros((6, 6, 3), np.uint8)
    gt[1:5, 1:5, 1] = 1
    gt[2:4, 2:4, 1] = 2
    pred = gt.copy()
    pred[2:4, 2:4, 1] = 1  # tumor called organ: organ perfect, tumor missed
    rows = case_metrics(pred, gt, (1.0, 1.0, 2.0), CLASSES_LITS)
    assert rows["organ"]["dice"] == pytest.approx(1.0)
    assert rows["organ"]["gt_voxels"] == 16
    assert rows["tumor"]["dice"] == 0.0 and rows["tumor"]["pred_empty"]
    with pytest.raises(ValueError, match="shape"):
        case_metrics(pred[:-1], gt, (1.0, 1.0, 2.0), CLASSES_LITS)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(pred, gt, (1.0, 1.0), CLASSES_LITS)


def _row(dice, p, g, i, gt_empty=False, pred_empty=False, hd95=1.0):
    return {
        "tumor": dict(
            dice=dice,
            hd95=hd95,
            assd=hd95,
            voe=1 - dice,
            rvd=0.0,
            pred_voxels=p,
            gt_voxels=g,
            intersection=i,
            gt_empty=gt_empty,
            pred_empty=pred_empty,
        )
    }


def test_summarize_global_and_nonempty_dice():
    rows = [
        _row(0.5, p=10, g=30, i=10),
        _row(1.0, p=0, g=0, i=0, gt_empty=True, pred_empty=True, hd95=0.0),
        _row(0.0, p=5, g=0, i=0, gt_empty=True, hd95=40.0),
        _row(0.0, p=0, g=10, i=0, pred_empty=True, hd95=40.0),
    ]
    s = summarize(rows)["tumor"]
    assert s["n_cases"] == 4 and s["n_gt_empty"] == 2
    assert s["n_false_positive"] == 1 and s["n_missed"] == 1
    assert s["dice_global"] == pytest.approx(2 * 10 / (15 + 40))
    assert s["dice_mean"] == pytest.approx(1.5 / 4)
    assert s["dice_std"] == pytest.approx(np.std([0.5, 1.0, 0.0, 0.0]))
    assert s[HEADLINE_DICE] == pytest.approx(0.25)  # cases 1 and 4
    assert s["hd95_mean"] == pytest.approx(81 / 4)
    with pytest.raises(ValueError, match="non-finite"):
        summarize([_row(float("nan"), 1, 1, 1)])
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError, match="has classes"):
        summarize([rows[0], {"liver": rows[0]["tumor"]}])
    assert math.isnan(summarize([rows[1]])["tumor"][HEADLINE_DICE])


def test_paper_protocol_hand_case():
    # Axis 0 = slices. Slice 0: no target (its false positives are ignored). Slice 1: G=2,
    # prediction 0.9 / 0.4 / 0.5 -> P=2 (0.4 is not > 0.4), I=1. Slice 2: G=1, P=0.
    prob = np.zeros((3, 1, 3))
    gt = np.zeros((3, 1, 3), np.uint8)
    prob[0] = 0.9
    gt[1, 0, :2] = 1
    prob[1, 0] = [0.9, 0.4, 0.5]
    gt[2, 0, 0] = 1
    case = paper_protocol_case(prob, gt, threshold=0.4, axis=0)
    assert case == {"pred": 2, "gt": 3, "intersection": 1, "n_slices": 2}
    other = paper_protocol_case(np.moveaxis(prob, 0, 2), np.moveaxis(gt, 0, 2), axis=2)
    assert other == case
    empty = paper_protocol_case(prob, np.zeros_like(gt))
    assert empty == {"pred": 0, "gt": 0, "intersection": 0, "n_slices": 0}
    perfect = {"pred": 4, "gt": 4, "intersection": 4}
    expected = ((2 * 1 + 1) / (2 + 3 + 1) + 1.0) / 2
    assert paper_protocol_dice([case, empty, perfect]) == pytest.approx(expected)
    with pytest.raises(ValueError):
        paper_protocol_dice([empty])


def test_seed_aggregation_and_format():
    mean, std = aggregate_over_seeds([0.64, 0.65, 0.66])
    assert mean == pytest.approx(0.65) and std == pytest.approx(0.01)
    assert aggregate_over_seeds([0.5]) == (0.5, 0.0)
    assert format_mean_std(0.6521, 0.0123) == "0.652 ± 0.012"
    assert format_mean_std(0.6521, 0.0123, digits=2) == "0.65 ± 0.01"
    with pytest.raises(ValueError):
        aggregate_over_seeds([])


def test_validation_dice_of_counts_and_its_empty_class_on_the_counts_device():
    """The per-epoch validation Dice (kdseg.lit.segment): 2|P∩G| / (|P| + |G|) from summed
    counts, 1 for a class absent from prediction and truth alike, made on the counts' device
    (a CPU 1 beside CUDA Dice values would break the epoch's torch.stack on a GPU; the meta
    device stands in for CUDA here, since it refuses both a mixed stack and a Python branch)."""
    import torch

    from kdseg.lit.segment import dice_of_counts

    counts = torch.tensor([3.0, 4.0, 5.0])
    assert dice_of_counts(counts).item() == (2 * counts[0] / (counts[1] + counts[2])).item()
    assert dice_of_counts(torch.tensor([0.0, 2.0, 0.0])).item() == 0.0
    empty = dice_of_counts(torch.zeros(3))
    assert empty.item() == 1.0 and empty.dtype == torch.float32 and empty.shape == ()
    on_meta = [
        dice_of_counts(torch.zeros(3, device="meta")),
        dice_of_counts(torch.ones(3, device="meta")),
    ]
    assert torch.stack(on_meta).device.type == "meta"


def test_hd95_and_assd_on_a_sheared_grid_place_voxels_by_the_affine() -> None:
    """A tilted gantry's grid: surface voxels at ``axes @ index`` mm. On a right-angled grid
    the same code gives MONAI's values; on a sheared one it gives the brute-force distances,
    which the spacing alone gets wrong."""
    from scipy.spatial.distance import cdist

    from kdseg.eval.metrics import _sheared_surface_distances, _surface_distances

    rng = np.random.default_rng(3)
    gt = np.zeros((24, 22, 10), bool)
    gt[5:17, 6:15, 2:8] = True
    pred = np.roll(gt, (2, -1, 1), axis=(0, 1, 2)) | (rng.random(gt.shape) > 0.995)
    spacing = (0.8, 0.7, 2.5)
    monai = _surface_distances(pred, gt, spacing)
    mine = _sheared_surface_distances(pred, gt, np.diag(spacing))
    np.testing.assert_allclose(mine, monai, rtol=1e-5)

    axes = np.array([[0.8, 0.0, 0.0], [0.0, 0.7, 0.9], [0.0, 0.0, 2.33]])  # ~21 degree tilt
    from scipy.ndimage import binary_erosion

    edge = lambda m: np.argwhere(m ^ binary_erosion(m)) @ axes.T  # noqa: E731
    d = cdist(edge(pred), edge(gt))
    directed = [d.min(axis=1), d.min(axis=0)]
    want = (
        max(float(np.quantile(x.astype(np.float32), 0.95)) for x in directed),
        float(np.concatenate(directed).mean()),
    )
    got = case_metrics(pred.astype(np.uint8), gt.astype(np.uint8), spacing, {"fg": [1]}, axes)
    np.testing.assert_allclose((got["fg"]["hd95"], got["fg"]["assd"]), want, rtol=1e-4)
    plain = case_metrics(pred.astype(np.uint8), gt.astype(np.uint8), spacing, {"fg": [1]})
    assert abs(plain["fg"]["assd"] - want[1]) > 0.05  # the spacing alone: off


@pytest.mark.parametrize("sheared", [False, True], ids=["right-angled", "sheared"])
def test_hd95_and_assd_are_symmetric_when_only_one_direction_is_far(sheared: bool) -> None:
    """HD95 is the larger of the two directed 95th percentiles. A stray blob in the prediction
    is far from the reference (pred -> gt large) while every reference voxel lies on the
    prediction (gt -> pred 0): the metric must be the same with the masks swapped, and large,
    on MONAI's path and on the sheared grid's own one alike."""
    gt = np.zeros((20, 20, 12), bool)
    gt[3:9, 3:9, 2:6] = True
    pred = gt.copy()
    pred[14:17, 14:17, 7:10] = True  # a blob ~ 20% of the prediction's surface voxels
    spacing = (0.8, 0.7, 2.5)
    axes = np.array([[0.8, 0.0, 0.0], [0.0, 0.7, 0.9], [0.0, 0.0, 2.33]]) if sheared else None
    one = binary_metrics(pred, gt, spacing, axes)
    other = binary_metrics(gt, pred, spacing, axes)
    assert one["hd95"] > 5.0  # the blob is ~8 mm from the reference, or more
    assert one["hd95"] == pytest.approx(other["hd95"], rel=1e-6)
    assert one["assd"] == pytest.approx(other["assd"], rel=1e-6)
