"""A run records its split, and scoring refuses a split that would score its training cases.

The persisted seeded split lives under the cache root, so a dataset that grew, or another
cache root, re-seeds another split: its test set may then hold cases the model trained on.
The checkpoint and ``<run>/split.json`` record the run's split; ``kdseg-eval`` refuses the
overlap in one line (exit 2), pointing at ``data.split_file=<run>/split.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_DATA, error_lines, kdseg_here

from kdseg.data.manifest import SPLITS, check_no_leak, read_split
from kdseg.errors import InputError


def _recorded(run: Path) -> dict[str, list[str]]:
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    return ckpt["hyper_parameters"]["data"]["split"]


def test_a_run_records_its_split(trained_enet: Path, phantom_lits: Path) -> None:
    split = _recorded(trained_enet)
    # the format data.split_file reads, and the folder the cases are in
    assert read_split(trained_enet / "split.json") == {s: split[s] for s in SPLITS}
    assert split["root"] == str(phantom_lits.resolve())
    cases = sorted(c for s in SPLITS for c in split[s])
    assert len(cases) == len(set(cases)) == 5 and all(split[s] for s in SPLITS)


def _eval(run: Path, root: Path, out: Path, *args: str):
    ckpt = run / "checkpoints" / "best.ckpt"
    return kdseg_here(
        "eval", *TINY_DATA, f"ckpt={ckpt}", f"data.root={root}", f"output_dir={out}", *args,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("scored", ["test", "val"])
def test_eval_refuses_a_split_that_scores_training_cases(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path, scored: str
) -> None:
    split = _recorded(trained_enet)
    moved = split["train"][0]  # as a re-seeded split over a grown dataset would
    other = {s: split[s] for s in SPLITS}
    other.update({"train": split["train"][1:], scored: [*split[scored], moved]})
    path = tmp_path / "grown.json"
    path.write_text(json.dumps(other))
    out = tmp_path / "eval"
    refused = _eval(trained_enet, phantom_lits, out, f"data.split_file={path}", f"split={scored}")
    assert refused.returncode == 2, refused.stderr
    (line,) = error_lines(refused.stderr)
    assert repr(moved) in line and "differs from the one the model was trained with" in line
    assert f"data.split_file={trained_enet / 'split.json'}" in line
    assert not out.exists()


def test_eval_with_the_runs_split_file_works(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    split_file = f"data.split_file={trained_enet / 'split.json'}"
    result = _eval(trained_enet, phantom_lits, out, split_file, "split=test")
    assert result.returncode == 0, result.stderr
    assert (out / "summary.json").is_file()


def test_the_leak_check_skips_older_models_other_datasets_other_folders_and_train(
    tmp_path: Path,
) -> None:
    here, other = tmp_path / "lits", tmp_path / "other-site"
    split = {"train": ["a"], "val": ["b"], "test": ["c"], "root": str(here.resolve())}
    info = {"name": "lits", "split": split}
    with pytest.raises(InputError, match="'a' of split 'test' was in this model's train set"):
        check_no_leak(info, "lits", "test", ["a", "c"], "m.ckpt", "run/split.json", root=here)
    with pytest.raises(InputError, match="'b' of split 'test' was in this model's val set"):
        check_no_leak(info, "lits", "test", ["b"], "m.ckpt", root=here)
    check_no_leak(info, "lits", "val", ["c"], "m.ckpt", root=here)  # its test case: no leak
    check_no_leak(info, "lits", "train", ["a"], "m.ckpt", root=here)  # scoring train: on purpose
    check_no_leak(info, "kits19", "test", ["a"], "m.ckpt", root=here)  # another dataset
    # another folder of the same layout: its "a" is another scan (every LiTS folder has volume-0)
    check_no_leak(info, "lits", "test", ["a"], "m.ckpt", root=other)
    check_no_leak({"name": "lits"}, "lits", "test", ["a"], "m.ckpt", root=here)  # older model
    older = {"name": "lits", "split": {k: v for k, v in split.items() if k != "root"}}
    check_no_leak(older, "lits", "test", ["a"], "m.ckpt", root=here)  # no folder recorded


def test_eval_on_another_folder_with_the_same_case_ids_is_not_refused(
    trained_enet: Path, phantom_lits: Path, tmp_path: Path
) -> None:
    """A second site's LiTS-layout folder names its cases volume-0, ... too: scoring the model
    there, with the training cases' ids in its test set, is no leak."""
    import shutil

    site = tmp_path / "site-b"
    shutil.copytree(phantom_lits, site, ignore=shutil.ignore_patterns(".*", "kdseg_split.json"))
    split = _recorded(trained_enet)
    swapped = {"train": split["test"], "val": split["val"], "test": split["train"]}
    path = tmp_path / "site-b-split.json"
    path.write_text(json.dumps(swapped))
    out = tmp_path / "eval"
    result = _eval(trained_enet, site, out, f"data.split_file={path}", "split=test")
    assert result.returncode == 0, result.stderr
    assert (out / "summary.json").is_file()


def test_bench_refuses_dice_on_cases_an_entry_trained_on(trained_enet: Path) -> None:
    from kdseg.deploy.bench import BenchConfig, BenchEntry, check_entries_leak

    ckpt = str(trained_enet / "checkpoints" / "best.ckpt")
    split = _recorded(trained_enet)
    root = _recorded(trained_enet)["root"]
    bench = BenchConfig(
        entries=[BenchEntry(name="enet", ckpt=ckpt)], data={"name": "lits", "root": root}
    )
    check_entries_leak(bench, split["test"])  # its own test cases
    with pytest.raises(InputError, match=repr(split["train"][0])):
        check_entries_leak(bench, [*split["test"], split["train"][0]])
    bench.entries[0].dice = False  # only timed: not checked
    check_entries_leak(bench, split["train"])


def test_an_artefact_does_not_carry_the_training_split(trained_enet: Path) -> None:
    """An exported model goes to hospitals: its metadata keeps the data section without the
    training split (case ids can name patients); the checkpoint keeps it."""
    from types import SimpleNamespace

    from kdseg.deploy.artifact import artifact_metadata

    ckpt = torch.load(trained_enet / "checkpoints" / "best.ckpt", weights_only=True)
    data = ckpt["hyper_parameters"]["data"]
    bundle = SimpleNamespace(model_config={"name": "enet"}, data=data, path="m.ckpt")
    meta = artifact_metadata(bundle)
    assert "split" in data and "split" not in meta["data"]
    assert meta["data"] == {k: v for k, v in data.items() if k != "split"}
