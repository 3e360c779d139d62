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


def test_a_run_with_another_split_seed_trains_and_scores_on_its_own_split(
    phantom_lits: Path, tmp_path: Path
) -> None:
    """data.split_seed=5 on a folder whose default-seed split is persisted already: the run
    trains on seed 5's split (persisted in its own file, recorded in its config, its
    split.json and its checkpoint), kdseg-eval with that seed scores its own test set, and
    the default seed's test set, which holds a case it trained on, is refused."""
    import csv

    import yaml

    from kdseg.data.dataset import split_store
    from kdseg.data.manifest import make_split

    cache = f"data.cache_root={tmp_path / 'cache'}"
    kdseg_here("prepare", *TINY_DATA, f"data.root={phantom_lits}", cache)
    cfg = {"name": "lits", "root": str(phantom_lits), "cache_root": tmp_path / "cache"}
    default = read_split(split_store(cfg))
    run = tmp_path / "run"
    kdseg_here(
        "train", *TINY_DATA, "logger=csv", "model=enet", "model.width=0.25",
        f"data.root={phantom_lits}", cache, "data.split_seed=5", "trainer.max_steps=2",
        "trainer.max_epochs=1", f"hydra.run.dir={run}",
    )  # fmt: skip
    ids = [f"volume-{i}" for i in range(5)]
    seeded = make_split(ids, seed=5)
    assert seeded != default and set(seeded["train"]) & set(default["test"])  # (the premise)
    assert read_split(run / "split.json") == seeded
    assert read_split(split_store({**cfg, "split_seed": 5})) == seeded
    assert read_split(split_store(cfg)) == default  # the default seed's split is untouched
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["split_seed"] == 5
    ckpt = run / "checkpoints" / "last.ckpt"  # (2 steps: no validation, no best.ckpt)
    recorded = torch.load(ckpt, weights_only=True)["hyper_parameters"]["data"]["split"]
    assert {s: recorded[s] for s in SPLITS} == seeded
    out = tmp_path / "eval-5"
    result = kdseg_here(
        "eval", *TINY_DATA, f"ckpt={ckpt}", f"data.root={phantom_lits}", cache,
        "data.split_seed=5", "split=test", f"output_dir={out}", check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with open(out / "per_case.csv") as f:
        assert sorted({row["case"] for row in csv.DictReader(f)}) == seeded["test"]
    out = tmp_path / "eval-default"
    refused = kdseg_here(
        "eval", *TINY_DATA, f"ckpt={ckpt}", f"data.root={phantom_lits}", cache,
        "split=test", f"output_dir={out}", check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and not out.exists()
    (line,) = error_lines(refused.stderr)
    assert repr(default["test"][0]) in line and "was in this model's train set" in line
    assert f"data.split_file={run / 'split.json'}" in line


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
