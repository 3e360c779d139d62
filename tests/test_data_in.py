"""The data-in and scoring path: a cache that follows its sources, case ids that cannot leak
across a split, stored teacher labels checked against their mapping, undefined scores written
as JSON ``null`` and shown as such, and config values refused in one line."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_pipeline import _data_cfg

from kdseg.data.cache import open_case
from kdseg.data.dataset import resolve_data
from kdseg.data.manifest import make_split
from kdseg.data.sources import discover_cases, discover_images
from kdseg.errors import ConfigError, InputError


def _copy_cases(phantom: Path, root: Path, numbers: range) -> Path:
    root.mkdir(parents=True)
    for n in numbers:
        for name in (f"volume-{n}.nii.gz", f"segmentation-{n}.nii.gz"):
            shutil.copy2(phantom / name, root / name)
    return root


def test_an_edited_label_is_prepared_again_and_the_rest_is_not(
    phantom_lits: Path, tmp_path: Path
) -> None:
    root = _copy_cases(phantom_lits, tmp_path / "lits", range(5))
    setup = resolve_data(_data_cfg(root))
    setup.prepare(progress=False)
    metas = {c: setup.cache_dir / "cases" / c / "meta.json" for c in setup.cases}
    before = {c: m.stat().st_mtime_ns for c, m in metas.items()}
    assert open_case(setup.cache_dir, "volume-2").tumor_slices
    seg = nib.load(root / "segmentation-2.nii.gz")  # the reader corrects the label: no tumor
    cleared = np.asarray(seg.dataobj).copy()
    cleared[cleared == 2] = 1
    os.unlink(root / "segmentation-2.nii.gz")
    nib.save(nib.Nifti1Image(cleared, seg.affine), root / "segmentation-2.nii.gz")
    setup.prepare(progress=False)
    after = {c: m.stat().st_mtime_ns for c, m in metas.items()}
    assert [c for c in metas if after[c] != before[c]] == ["volume-2"]
    record = json.loads((setup.cache_dir / "preprocess.json").read_text())
    assert record["source"] == str(root)  # the data folder, not a case's stamp
    case = open_case(setup.cache_dir, "volume-2")
    assert case.tumor_slices == () and not (np.asarray(case.label) == 2).any()
    # an array cut short or emptied after its meta.json (a full disk, a stray truncate): that
    # case is prepared again, not memory-mapped into a crash at training time
    image = setup.cache_dir / "cases" / "volume-3" / "image.npy"
    with open(image, "r+b") as f:
        f.truncate(1000)
    (setup.cache_dir / "cases" / "volume-4" / "label.npy").write_bytes(b"")
    before = {c: m.stat().st_mtime_ns for c, m in metas.items()}
    setup.prepare(progress=False)
    after = {c: m.stat().st_mtime_ns for c, m in metas.items()}
    assert [c for c in metas if after[c] != before[c]] == ["volume-3", "volume-4"]
    assert open_case(setup.cache_dir, "volume-3").image.shape[0] > 0


def test_two_folders_behind_one_cache_never_read_each_others_cases(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """Two sites' volume-0 to volume-2 share ids and a data.cache_root; each gets its own
    cache and split (keyed by the folder), so neither is prepared again after the other."""
    from kdseg.data.phantom import PhantomConfig, generate_case

    site_a = _copy_cases(phantom_lits, tmp_path / "a", range(3))
    site_b = tmp_path / "b"
    site_b.mkdir()
    config = PhantomConfig(size_range=(50, 50), slices_range=(9, 9), p_no_tumor=0.0)
    for n in range(3):
        image, label, _ = generate_case(config, seed=100 + n)
        nib.save(image, site_b / f"volume-{n}.nii.gz")
        nib.save(label, site_b / f"segmentation-{n}.nii.gz")
    cache = tmp_path / "cache"
    shapes, stamps = {}, {}
    for site in (site_a, site_b, site_a):
        setup = resolve_data(_data_cfg(site, **{"data.cache_root": cache}))
        setup.prepare(progress=False)
        path = setup.cache_dir / "cases" / "volume-0" / "meta.json"
        meta = json.loads(path.read_text())
        assert Path(meta["image"]).parent == site
        shapes[site] = meta["input_shape"]
        stamps.setdefault(site, path.stat().st_mtime_ns)
        assert path.stat().st_mtime_ns == stamps[site]  # site a's cache was not redone
    assert shapes[site_b][:3] == [50, 50, 9] != shapes[site_a][:3]
    assert (
        len(list(cache.glob("lits-*-*"))) == 2
        and len(list(cache.glob("lits-*/kdseg_split.json"))) == 2
    )
    assert not any(
        p.name in (".kdseg_cache", "kdseg_split.json")
        for s in (site_a, site_b)
        for p in s.iterdir()
    )


def test_a_cache_root_inside_any_folder_read_is_refused(phantom_lits: Path, tmp_path: Path) -> None:
    """Not only data.root and data.unlabeled_root: a cache root inside the teacher's stored
    predictions or the unlabeled scans' organ masks is refused in one line naming the option,
    before anything is written; a read-only setup (kdseg-export) is refused when it prepares."""
    for option, folder in (
        ("teacher.predictions", tmp_path / "preds"),
        ("data.unlabeled_roi_labels", tmp_path / "masks"),
    ):
        folder.mkdir()
        cache = folder / "cache"
        extra = {"data.unlabeled_roi_labels": folder} if option.startswith("data.") else {}
        cfg = _data_cfg(phantom_lits, **{"data.cache_root": cache}, **extra)
        teacher = str(folder) if option == "teacher.predictions" else None
        with pytest.raises(InputError, match=f"data.cache_root lies inside {option} "):
            resolve_data(cfg, teacher)
        setup = resolve_data(cfg, teacher, read_only=True)
        with pytest.raises(InputError, match=f"data.cache_root lies inside {option} "):
            setup.prepare(progress=False)
        assert not cache.exists() and list(folder.iterdir()) == []


def test_two_scans_with_one_case_id_are_refused(phantom_lits: Path, tmp_path: Path) -> None:
    """volume-0.nii beside volume-0.nii.gz: a split would put "volume-0" in train and test."""
    root = _copy_cases(phantom_lits, tmp_path / "lits", range(3))
    image = nib.load(root / "volume-1.nii.gz")
    nib.save(image, root / "volume-0.nii")
    with pytest.raises(InputError, match="shares the case id 'volume-0' with volume-0.nii"):
        discover_cases("lits", root)


def _touch(*paths: Path) -> None:
    """Files of a layout that only their names matter to (a byte each)."""
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_one_case_in_two_files_or_without_its_scan_is_refused(tmp_path: Path) -> None:
    """Ids that sort alike (volume-01 between volume-1.nii and volume-1.nii.gz), a label as
    both .nii and .nii.gz, a KiTS19 case whose scan is gone: refused, never one picked or
    dropped without a word. KiTS19's published test cases (210 and up: no segmentation) are
    left out."""

    lits = tmp_path / "lits"
    names = ("volume-1", "volume-01", "segmentation-1", "segmentation-01")
    _touch(*(lits / f"{n}.nii" for n in names))
    _touch(lits / "volume-1.nii.gz")
    with pytest.raises(InputError, match="shares the case id 'volume-1'"):
        discover_cases("lits", lits)
    (lits / "volume-1.nii.gz").unlink()
    assert [c.case_id for c in discover_cases("lits", lits)] == ["volume-01", "volume-1"]
    _touch(lits / "segmentation-1.nii.gz")
    with pytest.raises(InputError, match="segmentation-1.nii.gz: is the same file of the case"):
        discover_cases("lits", lits)
    kits = tmp_path / "kits"
    _touch(kits / "case_00000" / "imaging.nii.gz", kits / "case_00000" / "segmentation.nii.gz")
    _touch(kits / "case_00210" / "imaging.nii.gz")  # the unlabeled test set
    assert [c.case_id for c in discover_cases("kits19", kits)] == ["case_00000"]
    _touch(kits / "case_00001" / "segmentation.nii.gz")
    with pytest.raises(InputError, match="case_00001/segmentation.nii.gz: missing image"):
        discover_cases("kits19", kits)
    (kits / "case_00001" / "segmentation.nii.gz").unlink()
    _touch(kits / "case_00001" / "imaging.nii.gz")
    with pytest.raises(InputError, match="missing label"):
        discover_cases("kits19", kits)
    _touch(kits / "case_00000" / "imaging.nii")  # beside its .nii.gz: unlabeled scans too
    with pytest.raises(InputError, match="imaging.nii: is the same file of the case as imaging"):
        discover_images(kits)


def test_a_label_that_is_no_segmentation_or_off_the_images_grid_says_why() -> None:
    """A CT given as the label (the pair swapped), a label without a background voxel and a
    label whose grid is not the image's, each refused in one line that says what is wrong."""
    from kdseg.data.pairs import check_pair

    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    shape = (12, 10, 4)
    ct = np.random.default_rng(0).integers(-1000, 400, shape).astype(np.int16)
    image = nib.Nifti1Image(ct, affine)
    label = np.zeros(shape, np.uint8)
    label[3:6, 3:6, 1:3] = 1

    def refusal(data: np.ndarray, aff: np.ndarray = affine, orient: bool = True) -> str:
        img = nib.Nifti1Image(data, aff)
        if not orient:
            img.set_qform(None, code=0)
            img.set_sform(None, code=0)
        with pytest.raises(InputError) as caught:
            check_pair(image, img, "seg.nii.gz", (0, 1, 2))
        return str(caught.value)

    assert "an image, not a label map (image and label swapped?)" in refusal(ct)
    lesions = (np.arange(np.prod(shape)).reshape(shape) % 40).astype(np.uint8)  # numbered
    assert "unknown label values [3, 4, 5, 6, 7]; expected a subset of [0, 1, 2]" in refusal(
        lesions
    )
    assert "no background voxel (every voxel is label 1 or 2)" in refusal(
        (1 + (ct > 0)).astype(np.uint8)
    )
    shifted = affine.copy()
    shifted[1, 3] -= 0.8
    assert "origin is shifted by (0, -0.8, 0) mm, (0, -1, 0) voxels" in refusal(label, shifted)
    assert "axes point LAS, the image's RAS" in refusal(label, np.diag([-0.8, 0.8, 2.5, 1]))
    assert "voxels are 0.8 x 0.8 x 5 mm, the image's 0.8 x 0.8 x 2.5" in refusal(
        label, np.diag([0.8, 0.8, 5.0, 1])
    )
    assert "its header gives no orientation" in refusal(label, orient=False)
    assert (
        check_pair(
            image, nib.Nifti1Image(np.zeros(shape, np.float32), affine), "s", (0, 1, 2)
        ).max()
        == 0
    )


def test_a_label_of_background_only_is_named_once_by_prepare(
    phantom_lits: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An all-background label (a placeholder, a broken export) was prepared and trained on
    without a word: the network learns that the organ is background, and an organ-ROI config
    drops the case. One warning line names it, once per process and cache."""
    from kdseg.data.prepare import empty_label_warning

    root = _copy_cases(phantom_lits, tmp_path / "lits", range(3))
    seg = nib.load(root / "segmentation-1.nii.gz")
    os.unlink(root / "segmentation-1.nii.gz")
    empty = np.zeros(seg.shape, np.uint8)
    nib.save(nib.Nifti1Image(empty, seg.affine, seg.header), root / "segmentation-1.nii.gz")
    setup = resolve_data(_data_cfg(root))
    for _ in range(2):
        setup.prepare(progress=False)
    out, err = capsys.readouterr()
    assert ": warning:" not in out, out
    assert err.count("warning: 1 of 3 labeled case(s) hold no organ voxel") == 1, err
    assert "(volume-1); they teach the network that every voxel is background" in err
    line = empty_label_warning(setup.cache_dir, ["volume-0", "volume-1"], roi=True)
    assert line is not None and "preprocess.roi=organ gives them no slice" in line
    assert empty_label_warning(setup.cache_dir, ["volume-0", "volume-2"]) is None


def test_a_split_never_holds_a_case_twice_and_names_only_cases(tmp_path: Path) -> None:
    """Rounding and the one-case minimum for val and test once made [0, 0, 1] put every case
    in test and most in train too; a split file with a list for an id is one line."""
    from kdseg.data.manifest import read_split

    ids = [f"c{i}" for i in range(9)]
    for fractions in ([0, 0, 1], [0, 0.5, 0.5], [0, 1, 0], [1, 0, 0], [0.7, 0.1, 0.2]):
        for n in (1, 2, 3, 4, 7, 9):
            split = make_split(ids[:n], fractions)
            parts = [split[s] for s in ("train", "val", "test")]
            assert sorted(sum(parts, [])) == sorted(ids[:n]), (fractions, n, split)
    bad = tmp_path / "split.json"
    bad.write_text(json.dumps({"train": [["c0"]], "val": ["c1"], "test": ["c2"]}))
    with pytest.raises(InputError, match="'train' holds \\['c0'\\], not a case id"):
        read_split(bad)


def test_a_refused_prepare_leaves_no_split_to_block_the_fixed_folder(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """A seeded split is persisted once its cases have prepared: a case refused for its label
    leaves no split naming it, so the folder without that case prepares on a fresh split. A
    persisted split that names a case gone from the folder is refused naming kdseg's own file
    to delete (or data.split_file); a split file of the user's naming one stays refused."""
    from conftest import TINY_DATA, error_lines, kdseg_here

    from kdseg.data.dataset import split_store
    from kdseg.data.manifest import read_split, resolve_split

    root = _copy_cases(phantom_lits, tmp_path / "lits", range(5))
    cache = tmp_path / "cache"
    args = (*TINY_DATA, f"data.root={root}", f"data.cache_root={cache}")
    store = split_store({"name": "lits", "root": str(root), "cache_root": cache})
    seg = nib.load(root / "segmentation-1.nii.gz")
    bad = np.asarray(seg.dataobj).copy()
    bad[0, 0, 0] = 3
    os.unlink(root / "segmentation-1.nii.gz")
    nib.save(nib.Nifti1Image(bad, seg.affine, seg.header), root / "segmentation-1.nii.gz")
    refused = kdseg_here("prepare", *args, check=False)
    assert refused.returncode == 2 and "unknown label values [3]" in refused.stderr
    assert not store.exists()
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in ("volume-1.nii.gz", "segmentation-1.nii.gz"):
        (root / name).rename(aside / name)
    result = kdseg_here("prepare", *args)
    assert "4 case(s) prepared" in result.stdout
    split = read_split(store)
    assert sorted(sum(split.values(), [])) == ["volume-0", "volume-2", "volume-3", "volume-4"]
    gone = split["test"][0]  # a case the persisted split names leaves the folder
    for name in (f"{gone}.nii.gz", f"{gone.replace('volume', 'segmentation')}.nii.gz"):
        (root / name).rename(aside / name)
    refused = kdseg_here("prepare", *args, check=False)
    assert refused.returncode == 2
    assert error_lines(refused.stderr) == [
        f"kdseg-prepare: error: {store}: names 1 case(s) not found in {root}, e.g. {gone!r} "
        "(the split kdseg persisted for this folder in its cache: delete this file for a "
        "seeded split of the cases there, or pass data.split_file=<file>)"
    ]
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(split))
    ids = [c.case_id for c in discover_cases("lits", root)]
    for own in (str(mine), None):
        if own is None:  # the folder's own file: the user's too
            shutil.copy(mine, root / "kdseg_split.json")
        with pytest.raises(InputError) as error:
            resolve_split(root, ids, split_file=own, store=store)
        assert str(error.value).endswith(f"names 1 case(s) not found in {root}, e.g. {gone!r}")


def test_cases_a_split_file_leaves_out_are_one_warning_and_move_no_case(
    phantom_lits: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Cases added to a folder after its split was persisted (or missing from a split file)
    are in no set: never prepared, trained or scored. One warning line says how many, names
    the first and the file to change; no case of the split changes set."""
    from conftest import TINY_DATA, WARNING_LINE, kdseg_here

    from kdseg.data.dataset import split_store
    from kdseg.data.manifest import read_split, resolve_split

    root = _copy_cases(phantom_lits, tmp_path / "lits", range(4))
    cache = tmp_path / "cache"
    args = (*TINY_DATA, f"data.root={root}", f"data.cache_root={cache}")
    kdseg_here("prepare", *args)
    store = split_store({"name": "lits", "root": str(root), "cache_root": cache})
    split = read_split(store)
    for name in ("volume-4.nii.gz", "segmentation-4.nii.gz"):
        shutil.copy2(phantom_lits / name, root / name)
    result = kdseg_here("prepare", *args)
    assert "4 case(s) prepared" in result.stdout
    warned = [line for line in result.stderr.splitlines() if "in no set of" in line]
    assert warned == [
        f"kdseg-prepare: warning: split: 1 case(s) in {root} are in no set of {store} "
        "('volume-4'): never prepared, trained or scored; to use them, add them to a set in "
        "that file (kdseg's persisted split for this folder; its cases keep their sets)"
    ]
    assert WARNING_LINE.match(warned[0])
    assert read_split(store) == split  # nothing moved, nothing rewritten
    setup = resolve_data(_data_cfg(root, **{"data.cache_root": cache}))
    assert setup.split == split and not (setup.cache_dir / "cases" / "volume-4").exists()
    ids = [c.case_id for c in discover_cases("lits", root)]
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"train": ["volume-0"], "val": ["volume-1"], "test": []}))
    caplog.clear()  # (resolve_data above warned about volume-4, in this process)
    with caplog.at_level(logging.WARNING, logger="kdseg.data.manifest"):
        assert resolve_split(root, ids, split_file=str(mine), store=store)["train"] == ["volume-0"]
        resolve_split(root, ids, split_file=str(mine), store=store)  # said once a process
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            f"split: 3 case(s) in {root} are in no set of {mine} ('volume-2', 'volume-3', "
            "'volume-4'): never prepared, trained or scored; to use them, add them to a set in "
            "that file",
        )
    ]


def test_config_values_that_cannot_work_are_config_errors() -> None:
    for fractions in ([0.5, 0.5, 0.5], [1.2, -0.1, -0.1], [0.5, 0.5]):
        with pytest.raises(ConfigError, match="data.split_fractions"):
            make_split(["a", "b", "c"], fractions)
    with pytest.raises(ConfigError, match="unknown data.layout 'kits'"):
        discover_cases("kits", ".")
    from kdseg.eval.evaluate import check_protocol

    with pytest.raises(ConfigError, match="protocol=clinical: use full or paper"):
        check_protocol("clinical")


def test_stored_hard_labels_outside_their_mapping_are_refused(tmp_path: Path) -> None:
    from kdseg.data.teacher_targets import load_prediction

    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    image = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), affine)
    tumor3 = ((0, 0), (1, 1), (3, 2))  # dataset.json: liver 1, tumor 3
    for value, label_map in ((7, None), (2, tumor3), (7, tumor3)):
        data = np.zeros((6, 5, 4), np.uint8)
        data[2, 2, 1] = value
        path = tmp_path / f"case_{value}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), path)
        with pytest.raises(InputError, match=rf"label values \[{value}\] are not among"):
            load_prediction(path, image, label_map)
    data[2, 2, 1] = 3  # mapped: tumor
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "ok.nii.gz")
    probs, hard = load_prediction(tmp_path / "ok.nii.gz", image, tumor3)
    assert hard and probs[2, 2, 2, 1] == 1 and probs[2].sum() == 1
    # a label stored with a singleton fourth axis (x, y, z, 1), as load_volume reads labels and
    # scans, was taken for a one-channel probability volume and refused as probabilities
    nib.save(nib.Nifti1Image(data[..., None], affine), tmp_path / "four.nii.gz")
    probs, hard = load_prediction(tmp_path / "four.nii.gz", image, tumor3)
    assert hard and probs[2, 2, 2, 1] == 1 and probs[2].sum() == 1


def test_an_undefined_dice_is_null_in_json_and_n_a_in_the_table(tmp_path: Path) -> None:
    """A tumor class no reference holds: the headline is undefined in both protocols, written
    as JSON null (which strict parsers read) and shown as n/a, with the count of such cases."""
    from rich.console import Console

    from kdseg.eval.evaluate import print_summary, summarize_rows, write_results
    from kdseg.eval.metrics import case_metrics

    gt = np.zeros((8, 8, 4), np.uint8)
    gt[2:6, 2:6, 1:3] = 1
    pred = gt.copy()
    pred[3, 3, 2] = 2  # a false-positive tumor
    row = {"case": "c0", **case_metrics(pred, gt, [1.0, 1.0, 2.0])}
    summary = summarize_rows([row], "full")
    write_results([row], summary, tmp_path, {"protocol": "full"})
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text
    loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
    assert loaded["summary"]["tumor"]["dice_per_case_nonempty"] is None
    console = Console(width=200, record=True)
    print_summary(summary, "t", console=console)
    table = console.export_text()
    header = next(line for line in table.splitlines() if "tumor" in line)
    headline = next(line for line in table.splitlines() if "dice (cases with class)" in line)
    empty = next(line for line in table.splitlines() if "cases without class (FP)" in line)
    tumor = header.index("tumor") + len("tumor")  # right-aligned column: cells end there
    assert headline[:tumor].rstrip().endswith("n/a")
    assert empty[:tumor].endswith("1 (1)")  # one case without tumor, one false positive
    paper = summarize_rows(
        [{"case": "c0", "tumor": {"pred": 1, "gt": 0, "intersection": 0}}], "paper"
    )
    assert np.isnan(paper["tumor"]["dice"]) and paper["tumor"]["n_gt_empty"] == 1


def test_eval_table_shows_the_digits_each_metric_deserves_and_fits_100_columns() -> None:
    """The console table printed RVD ``16926.000 ± 16925.000`` and HD95 to 0.001 mm, a column
    per metric, wrapping in a 100-column terminal; summary.json keeps every digit."""
    from rich.console import Console

    from kdseg.eval.evaluate import print_summary

    stats = dict(
        dice_per_case_nonempty_mean=0.56234, dice_per_case_nonempty_std=0.1234,
        dice_mean=0.4123, dice_std=0.31, dice_global=0.4423, hd95_mean=123.456,
        hd95_std=98.765, assd_mean=0.8765, assd_std=0.321, voe_mean=0.0912, voe_std=0.02,
        rvd_mean=16926.0, rvd_std=16925.0, n_cases=3, n_gt_empty=1, n_false_positive=1,
    )  # fmt: skip
    organ = {**stats, "rvd_mean": -0.0312, "rvd_std": 0.045}
    console = Console(width=100, record=True)
    print_summary({"organ": organ, "tumor": stats}, "enet on lits/test (full)", console=console)
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 64
    row = {line.split("│")[1].strip(): line.split("│")[2:4] for line in lines if "│" in line}
    cells = {k: [c.strip() for c in v] for k, v in row.items()}
    assert cells["dice (cases with class)"] == ["0.562 ± 0.123", "0.562 ± 0.123"]
    assert cells["hd95 (mm)"] == ["123.5 ± 98.8"] * 2 and cells["assd (mm)"][0] == "0.9 ± 0.3"
    assert cells["voe (%)"][0] == "9.1 ± 2.0"
    assert cells["rvd (%)"] == ["-3.1 ± 4.5", "+1.7e6 ± 1.7e6"]
    assert cells["cases without class (FP)"] == ["1 (1)", "1 (1)"]


def test_report_reads_null_as_undefined_and_refuses_a_repeated_seed(tmp_path: Path) -> None:
    from test_distill_module import _fake_run

    from kdseg.eval.report import build_report, write_report

    data = {"name": "lits", "organ": "liver"}
    net = {"name": "enet", "in_channels": 1, "num_classes": 3, "width": 0.25}
    for seed, tumor in ((1, 0.6), (2, 0.7), (3, None)):
        _fake_run(
            tmp_path / "runs",
            f"enet-s{seed}",
            {"data": data, "seed": seed, "model": net},
            {"organ": 0.9, "tumor": tumor},
        )
    report = build_report([str(tmp_path / "runs")])
    text = write_report(report, tmp_path / "report")["markdown"].read_text()
    assert "| enet (w 0.25) | student | 1,2,3 | 0.650 ± 0.071 (n=2) | 0.900 ± 0.000 |" in text
    # a run whose model no network builds (a name no longer registered): the line names it
    gone = {**net, "name": "enet_retired"}
    _fake_run(tmp_path / "old", "gone-s1", {"data": data, "seed": 1, "model": gone}, {})
    with pytest.raises(InputError, match=r"gone-s1: config: model\.name 'enet_retired'"):
        build_report([str(tmp_path / "old")])
    broken = tmp_path / "runs" / "enet-s3" / "eval-test-full" / "summary.json"
    broken.write_text(broken.read_text()[:20])
    with pytest.raises(InputError, match="summary.json: not valid JSON"):
        build_report([str(tmp_path / "runs")])
    broken.write_text(
        json.dumps({"protocol": "full", "summary": {"tumor": {"dice_per_case_nonempty": "x"}}})
    )
    with pytest.raises(InputError, match="'tumor': dice_per_case_nonempty is 'x', not a number"):
        build_report([str(tmp_path / "runs")])
    # NaN and Infinity (Python's JSON reader takes them; kdseg-eval writes null) were read as
    # an undefined score, an "n/a" cell like a tumor-free split's: garbage, refused
    for text in ("NaN", "Infinity", "-Infinity"):
        tumor = '{"tumor": {"dice_per_case_nonempty": ' + text + "}}"
        broken.write_text('{"protocol": "full", "summary": ' + tumor + "}")
        with pytest.raises(InputError, match="'tumor': dice_per_case_nonempty is .*not a finite"):
            build_report([str(tmp_path / "runs")])
    shutil.rmtree(tmp_path / "runs" / "enet-s3")
    _fake_run(
        tmp_path / "runs",
        "enet-s1-again",
        {"data": data, "seed": 1, "model": net},
        {"organ": 0.9, "tumor": 0.5},
    )
    with pytest.raises(InputError, match="has seed 1, as .*enet-s1 of the same row"):
        build_report([str(tmp_path / "runs")])
    shutil.rmtree(tmp_path / "runs" / "enet-s1-again" / "eval-test-full")
    assert build_report([str(tmp_path / "runs")]).missing_eval  # not evaluated: listed only


def test_a_bare_manifest_name_is_kdsegs_wherever_the_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdseg.data.manifest import MANIFEST_DIR, _manifest_path

    (tmp_path / "lits.json").write_text('{"train": [], "val": [], "test": ["x"]}')
    monkeypatch.chdir(tmp_path)
    assert _manifest_path("lits.json") == MANIFEST_DIR / "lits.json"
    assert _manifest_path("./lits.json") == Path("lits.json")


def test_a_cache_of_an_earlier_kdseg_is_trusted_then_stamped(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """A meta.json without a stamp (kdseg before 2026-12-06) is read as it is, not rebuilt
    (on a read-only mount it could not be), and gets its files' stamp where writable."""
    root = _copy_cases(phantom_lits, tmp_path / "lits", range(3))
    setup = resolve_data(_data_cfg(root))
    setup.prepare(progress=False)
    meta_path = setup.cache_dir / "cases" / "volume-1" / "meta.json"
    meta = json.loads(meta_path.read_text())
    stamp = meta.pop("source")
    meta_path.write_text(json.dumps(meta))
    arrays = setup.cache_dir / "cases" / "volume-1" / "image.npy"
    before = arrays.stat().st_mtime_ns
    setup.prepare(progress=False)
    assert arrays.stat().st_mtime_ns == before  # not prepared again
    assert json.loads(meta_path.read_text())["source"] == stamp  # adopted


def test_cached_teacher_targets_need_their_prediction_files(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """A prediction must exist for every case each time: one deleted (or left out of a
    predictions folder written again) is refused as for a case never cached, so the cache
    never mixes an earlier teacher's targets with a later one's. A changed one is cached
    again."""
    from kdseg.data.cache import CachedCase
    from kdseg.data.tasks import Task
    from kdseg.data.teacher_targets import prepare_teacher_targets, teacher_slice

    root = _copy_cases(phantom_lits, tmp_path / "lits", range(2))
    setup = resolve_data(_data_cfg(root))
    preds = tmp_path / "preds"
    preds.mkdir()
    for case in setup.cases.values():
        label = np.asarray(nib.load(case.label).dataobj).astype(np.int64)
        np.save(
            preds / f"{case.case_id}.npy", np.eye(3, dtype=np.float32)[label].transpose(3, 0, 1, 2)
        )
    cache = tmp_path / "teacher-cache"
    cases = list(setup.cases.values())
    prepare_teacher_targets(cases, preds, setup.preprocess, cache, progress=False)
    teacher = cache / "cases" / "volume-0" / "teacher.npy"
    first = teacher.stat().st_mtime_ns
    case = CachedCase("volume-0", cache / "cases" / "volume-0", 0, (), (), (1.0, 1.0, 1.0))
    before = teacher_slice(cache, case, 0, Task("multiclass"))
    kept = np.load(preds / "volume-1.npy")
    (preds / "volume-1.npy").unlink()
    with pytest.raises(InputError, match="no teacher prediction for case 'volume-1'"):
        prepare_teacher_targets(cases, preds, setup.preprocess, cache, progress=False)
    np.save(preds / "volume-1.npy", kept)
    prepare_teacher_targets(cases, preds, setup.preprocess, cache, progress=False)
    assert teacher.stat().st_mtime_ns == first  # unchanged files: nothing cached again
    np.save(preds / "volume-0.npy", np.load(preds / "volume-0.npy")[[1, 0, 2]])  # changed
    prepare_teacher_targets(cases, preds, setup.preprocess, cache, progress=False)
    assert teacher.stat().st_mtime_ns != first
    # this process had the old file mapped: it reads the new one, not the replaced inode
    after = teacher_slice(cache, case, 0, Task("multiclass"))
    np.testing.assert_array_equal(after, before[[1, 0, 2]])


def test_a_series_stamp_sees_one_slice_replaced_with_an_older_mtime(tmp_path: Path) -> None:
    """A DICOM series folder's stamp: one slice replaced by another file of its size whose
    older mtime was kept (``cp -p``) changes neither the count, the bytes nor the newest
    mtime, but it changes the stamp, so its cached case is prepared again."""
    from kdseg.data.cache import source_stamp

    series = tmp_path / "series"
    series.mkdir()
    for i in range(3):
        (series / f"{i}.dcm").write_bytes(bytes([i]) * 100)
        os.utime(series / f"{i}.dcm", ns=(10**18 + i, 10**18 + i * 10**9))
    before = source_stamp([series])
    (series / "1.dcm").write_bytes(b"x" * 100)  # same size, other pixels, an older mtime kept
    os.utime(series / "1.dcm", ns=(10**18, 10**18 - 5 * 10**9))
    after = source_stamp([series])
    assert before["files"][0][:3] == after["files"][0][:3] and before != after
    assert source_stamp([series]) == after  # and it is stable


def test_a_label_without_its_scan_or_a_name_in_capitals_is_refused(tmp_path: Path) -> None:
    """kdseg-prepare and kdseg-eval left out, without a word, a LiTS, Decathlon or nnU-Net
    label whose scan is gone (a KiTS19 one was refused) and a LiTS or Decathlon file named in
    capitals (``volume-3.NII.GZ``, ``Liver_3.nii.gz``, which kdseg-predict reads): each is
    refused in one line, and so is a symlink loop, once called a missing label or scan."""
    fixture = Path(__file__).parent / "fixtures" / "nnunet"

    lits = tmp_path / "lits"
    _touch(lits / "volume-0.nii", lits / "segmentation-0.nii.gz")  # a .nii scan, .nii.gz label
    _touch(lits / "volume-1.nii.gz", lits / "segmentation-1.nii.gz", lits / "segmentation-2.nii")
    with pytest.raises(InputError, match=r"segmentation-2.nii: missing image volume-2.nii\[.gz\]"):
        discover_cases("lits", lits)
    (lits / "segmentation-2.nii").unlink()
    _touch(lits / "._segmentation-3.nii")  # a macOS fork, no label
    assert [c.case_id for c in discover_cases("lits", lits)] == ["volume-0", "volume-1"]
    _touch(lits / "volume-3.NII.GZ", lits / "segmentation-3.NII.GZ")
    with pytest.raises(InputError, match=r"segmentation-3.NII.GZ: a LiTS name with capitals"):
        discover_cases("lits", lits)
    msd = tmp_path / "msd"
    _touch(msd / "imagesTr" / "liver_1.nii.gz", msd / "labelsTr" / "liver_1.nii.gz")
    _touch(msd / "labelsTr" / "._liver_1.nii.gz", msd / "labelsTr" / "liver_2.nii.gz")
    with pytest.raises(InputError, match="liver_2.nii.gz: missing image imagesTr/liver_2.nii.gz"):
        discover_cases("msd_liver", msd)
    (msd / "labelsTr" / "liver_2.nii.gz").unlink()
    assert [c.case_id for c in discover_cases("msd_liver", msd)] == ["liver_1"]
    _touch(msd / "imagesTr" / "Liver_3.nii.gz", msd / "labelsTr" / "Liver_3.nii.gz")
    with pytest.raises(InputError, match=r"imagesTr/Liver_3.nii.gz: a Decathlon name with cap"):
        discover_cases("msd_liver", msd)  # both were left out without a word
    (msd / "imagesTr" / "Liver_3.nii.gz").unlink()
    with pytest.raises(InputError, match=r"labelsTr/Liver_3.nii.gz: a Decathlon name with cap"):
        discover_cases("msd_liver", msd)
    (msd / "labelsTr" / "Liver_3.nii.gz").unlink()
    (msd / "labelsTr" / "liver_1.nii.gz").unlink()  # a label that links to itself: was missing
    (msd / "labelsTr" / "liver_1.nii.gz").symlink_to("liver_1.nii.gz")
    with pytest.raises(InputError, match=r"labelsTr/liver_1.nii.gz: a symlink loop"):
        discover_cases("msd_liver", msd)
    kits = tmp_path / "kits" / "case_00001"  # a scan that links to itself: was missing
    _touch(kits / "segmentation.nii.gz")
    (kits / "imaging.nii.gz").symlink_to("imaging.nii.gz")
    with pytest.raises(InputError, match=r"case_00001/imaging.nii.gz: a symlink loop"):
        discover_cases("kits19", kits.parent)
    nnunet = tmp_path / "nnunet"
    _touch(nnunet / "imagesTr" / "a_0000.nii.gz", nnunet / "labelsTr" / "a.nii.gz")
    shutil.copy(fixture / "dataset.json", nnunet / "dataset.json")
    assert [c.case_id for c in discover_cases("nnunet", nnunet)] == ["a"]
    _touch(nnunet / "imagesTr" / "b_0001.nii.gz", nnunet / "labelsTr" / "b.nii.gz")  # no _0000
    with pytest.raises(InputError, match="b.nii.gz: missing image imagesTr/b_0000.nii.gz"):
        discover_cases("nnunet", nnunet)
