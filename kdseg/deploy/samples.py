"""Real model-input slices for export checks, int8 calibration and pruning recovery.

An exported model is checked, and an int8 model calibrated, on the very slices the network was
trained on: those of the prepared slice cache of the checkpoint's dataset and preprocessing.
:func:`export_data_setup` finds that dataset (the run's own ``config.yaml`` written by
``kdseg-train`` / ``kdseg-distill`` beside ``checkpoints/``, or a folder given explicitly) and
:func:`sample_slices` draws a reproducible, target-rich set of slices from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kdseg.data.cache import open_case
from kdseg.data.dataset import DataSetup, resolve_data
from kdseg.data.manifest import recorded_split
from kdseg.errors import InputError
from kdseg.eval.checkpoint import Bundle
from kdseg.eval.inference import context_stack

#: data keys that describe what the network expects; always taken from the checkpoint
MODEL_FACING = ("task", "context", "in_channels", "num_classes", "preprocess")


def run_dir(ckpt: str | Path) -> Path:
    """The run folder that wrote ``ckpt`` (``<run>/checkpoints/<name>.ckpt``)."""
    return Path(ckpt).resolve().parent.parent


def run_config(ckpt: str | Path) -> dict[str, Any] | None:
    """The resolved config of the run that wrote ``ckpt`` (``<run>/config.yaml``), if present."""
    path = run_dir(ckpt) / "config.yaml"
    if not path.is_file():
        return None
    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(
            path, f"the run's config is not valid YAML ({type(exc).__name__})"
        ) from None
    return cfg if isinstance(cfg, dict) else None


def original_val_dice(ckpt: str | Path) -> float | None:
    """Best validation score of the run that wrote ``ckpt`` (``<run>/summary.json``), if known."""
    try:
        score = json.loads((run_dir(ckpt) / "summary.json").read_text()).get("best_score")
    except (OSError, ValueError, AttributeError):
        return None
    return None if score is None else float(score)


def export_data_setup(
    bundle: Bundle,
    data_root: str | None = None,
    run_cfg: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> DataSetup | None:
    """The checkpoint's dataset resolved to cases, split and slice cache, or ``None``.

    The data config comes from the training run (``run_cfg``) or, failing that, from the
    checkpoint's own data info; ``data_root`` replaces the folder (e.g. the same dataset
    elsewhere). What the network expects (task, context, preprocessing) always comes from the
    checkpoint, so the cache is the one the network was trained on. Only read here: the
    cache is written (after the check that it lies outside the folders read) when slices are
    drawn (:func:`sample_positions`).

    The split is the one the checkpoint records (:func:`~kdseg.data.manifest.recorded_split`),
    limited to the cases still in the folder, so calibration (``train``) never draws from the
    model's validation cases whatever split the folder resolves to today (cases added, the
    cache's persisted split deleted); recorded cases no longer there are said in one line
    added to ``notes``. A checkpoint of an older kdseg, which records none, uses the folder's.
    """
    base = dict((run_cfg or {}).get("data") or bundle.data)
    if data_root:
        base["root"] = str(data_root)
    base.update({k: bundle.data[k] for k in MODEL_FACING if k in bundle.data})
    if not base.get("root") or not Path(base["root"]).is_dir() or "layout" not in base:
        return None
    base.setdefault("name", bundle.data.get("name", base["layout"]))
    setup = resolve_data(base, read_only=True)
    recorded = recorded_split(bundle.data)
    if recorded is not None:
        setup.split = {s: [c for c in ids if c in setup.cases] for s, ids in recorded.items()}
        gone = [c for ids in recorded.values() for c in ids if c not in setup.cases]
        if gone and notes is not None:
            notes.append(
                f"{len(gone)} case(s) of the checkpoint's recorded split are not in "
                f"{base['root']} (e.g. {gone[0]!r}): drawing from the other "
                f"{sum(map(len, setup.split.values()))}"
            )
    if data_root:  # a cache root inside it is refused naming the option given
        setup.sources = {
            ("data_root" if k == "data.root" else k): v for k, v in setup.sources.items()
        }
    return setup


def sample_positions(
    setup: DataSetup,
    splits: tuple[str, ...],
    n: int,
    seed: int = 0,
    target_fraction: float = 0.5,
    exclude: frozenset[tuple[str, int]] | set[tuple[str, int]] = frozenset(),
) -> list[tuple[str, int]]:
    """``n`` reproducible ``(case, slice index)`` draws from the cases of ``splits``.

    The cases of every split are visited in turn (the cache is filled for them first,
    idempotently), so a check sees many volumes, not the one case of a small validation
    split; about ``target_fraction`` of the slices contain the organ, the rest are drawn from
    the whole volume, so both hard and easy slices are represented. Positions in ``exclude``
    (int8 calibration slices, for its check) are never drawn; a case with none left is
    passed over, and fewer than ``n`` come back when no case has any.
    """
    ids = [case for split in splits for case in setup.split.get(split, [])]
    if not ids:
        raise ValueError(f"no cases in splits {splits}")
    setup.prepare(ids=ids, progress=False)
    rng = np.random.default_rng(seed)
    pools = []  # (case, its organ slices, all its slices), the excluded ones left out, once
    for cid in ids:
        case = open_case(setup.cache_dir, cid)
        organ = [int(z) for z in case.organ_slices if (cid, int(z)) not in exclude]
        every = [z for z in range(case.n_slices) if (cid, z) not in exclude]
        pools.append((cid, np.asarray(organ), np.asarray(every)))
    picks: list[tuple[str, int]] = []
    for i in range(n):
        for k in range(len(pools)):
            cid, organ, every = pools[(i + k) % len(pools)]
            if every.size:
                break
        else:
            break  # every slice of every case is excluded
        pool = organ if (rng.random() < target_fraction and organ.size) else every
        picks.append((cid, int(rng.choice(pool))))
    return picks


def slices_at(
    setup: DataSetup,
    positions: list[tuple[str, int]],
    context: int = 0,
    owner: str | Path | None = None,
) -> np.ndarray:
    """``(len(positions), 2*context+1, h, w)`` float32 model inputs at ``(case, z)`` positions.

    The slices must share one in-plane size: a checkpoint that sees native-size slices
    (``preprocess.in_plane_size`` null) whose cases differ in size is an :class:`InputError`
    naming ``owner`` (the checkpoint).
    """
    opened: dict[str, Any] = {}
    picks = []
    for cid, z in positions:
        case = opened.setdefault(cid, open_case(setup.cache_dir, cid))
        picks.append(context_stack(case.image, np.array([z]), context)[0])
    sizes = sorted({p.shape[-2:] for p in picks})
    if len(sizes) > 1:
        shown = " and ".join("x".join(map(str, size)) for size in sizes[:2])
        raise InputError(
            owner,
            f"its slices differ in size ({shown}: native-size slices, preprocess in_plane_size "
            "null), and the export check and int8 calibration need one size: export fp32 "
            "unchecked with check_slices=0, or train with a fixed data.preprocess.in_plane_size",
        )
    return np.stack(picks).astype(np.float32)


def sample_slices(
    setup: DataSetup,
    splits: tuple[str, ...],
    n: int,
    context: int = 0,
    seed: int = 0,
    target_fraction: float = 0.5,
    owner: str | Path | None = None,
) -> np.ndarray:
    """``(n, 2*context+1, h, w)`` float32 model inputs from the cache of ``setup``: the slices
    at :func:`sample_positions` (see there and :func:`slices_at`)."""
    positions = sample_positions(setup, splits, n, seed, target_fraction)
    return slices_at(setup, positions, context, owner)
