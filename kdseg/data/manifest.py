"""Case-level train / val / test splits, stored as JSON manifests.

A case is never split across sets and validation is never the test set. Which split a folder
uses is decided by :func:`choose_split`, in this order: an explicit split file; the folder's
own ``kdseg_split.json``; the versioned manifest in ``data_manifests/`` when the folder holds
every case it names (a full LiTS / KiTS19 download); otherwise a seeded split of the cases
present. Commands that prepare or train persist that seeded split in the cache root, never in
the dataset (``<cache_root>/<name>-<folder key>/kdseg_split.json`` for the default seed and
fractions, a file of its own for each other ``data.split_seed`` / ``data.split_fractions``:
:func:`store_name`, :func:`kdseg.data.dataset.split_store`), so a sweep over the seed trains
each job on its own split; a stored split records its seed and fractions, and one that
records others than the run asks for is refused rather than silently used. A seed set with a
split it does not cut (a split file, the folder's own, the versioned manifest) is one warning
line. The seeded split is persisted once its cases have been prepared (a refused case
leaves no split behind to block the fixed folder), so later runs reuse it even when cases are
added: added cases are in no set (one warning line names them), and no case ever moves
between sets. It is read where the folder's own file would be (after an explicit split file
and the folder's ``kdseg_split.json``, before the versioned manifest); ``kdseg-split`` writes
it too. Commands that only read a dataset
(``kdseg-eval``, ``kdseg-bench``, ``kdseg-export``'s check) read a persisted split but never
write one, and a cache root that cannot be written (a read-only mount) keeps the split in
memory: the same cases and seed give the same split.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdseg.errors import ConfigError, InputError, first_process, read_json, write_text_atomic

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FOLDER_SPLIT_NAME = "kdseg_split.json"
MANIFEST_DIR = Path(__file__).resolve().parents[2] / "data_manifests"
#: ``data.split_seed`` and ``data.split_fractions`` as conf/data/*.yaml set them
DEFAULT_SEED = 123
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


def _same_fractions(a: object, b: Sequence[float]) -> bool:
    """Whether ``a`` (fractions, or whatever a file recorded) equals ``b``."""
    try:
        pairs = list(zip(a, b, strict=True))  # type: ignore[call-overload]
        return all(abs(float(x) - float(y)) < 1e-9 for x, y in pairs)
    except (TypeError, ValueError):
        return False


def is_default_seeding(seed: int, fractions: Sequence[float]) -> bool:
    """Whether ``seed`` and ``fractions`` are the configs' defaults (123, 70/10/20)."""
    return seed == DEFAULT_SEED and _same_fractions(fractions, DEFAULT_FRACTIONS)


def seeding_options(seed: int, fractions: Sequence[float]) -> list[str]:
    """The options of ``seed`` and ``fractions`` that differ from the defaults, as a command
    line sets them (``["data.split_seed=5"]``; none for the defaults)."""
    options = [] if seed == DEFAULT_SEED else [f"data.split_seed={seed}"]
    if not _same_fractions(fractions, DEFAULT_FRACTIONS):
        options.append(f"data.split_fractions={list(fractions)}")
    return options


def store_name(seed: int = DEFAULT_SEED, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """The file name of the persisted seeded split for ``seed`` and ``fractions``.

    The defaults keep ``kdseg_split.json``, the name every store had before, so no existing
    run's split changes; another seed or other fractions get a file of their own
    (``kdseg_split-seed5.json``, ``kdseg_split-seed123-fractions0.6-0.2-0.2.json``), so a
    sweep over ``data.split_seed`` (k-fold-like resplits) cuts and keeps one split per job
    instead of reusing the first one stored.
    """
    if is_default_seeding(seed, fractions):
        return FOLDER_SPLIT_NAME
    name = f"kdseg_split-seed{int(seed)}"
    if not _same_fractions(fractions, DEFAULT_FRACTIONS):
        name += "-fractions" + "-".join(repr(f) for f in split_fractions(fractions))
    return name + ".json"


def make_split(
    case_ids: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = DEFAULT_SEED,
) -> dict[str, list[str]]:
    """Shuffle ``case_ids`` with ``seed`` and cut them into train / val / test by ``fractions``.

    Val and test get at least one case each whenever there are three or more cases.
    """
    fractions = split_fractions(fractions)
    ids = sorted(case_ids)
    random.Random(seed).shuffle(ids)
    n = len(ids)
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    while n_val + n_test > n:  # (rounding and the minimum of one: never more than the cases)
        if n_val > n_test:
            n_val -= 1
        else:
            n_test -= 1
    n_train = n - n_val - n_test
    return {
        "train": sorted(ids[:n_train]),
        "val": sorted(ids[n_train : n_train + n_val]),
        "test": sorted(ids[n_train + n_val :]),
    }


def split_fractions(value: object) -> list[float]:
    """``data.split_fractions`` as three floats (train, val, test), each from 0 to 1, that sum
    to 1; anything else (``0.5``, text, NaN, two numbers) a :class:`ConfigError` naming it."""
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and len(value) == 3
        and all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 <= f <= 1 for f in value
        )
        and abs(sum(value) - 1.0) <= 1e-6
    )
    if not ok:
        shown = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
        raise ConfigError(
            "data.split_fractions: three numbers from 0 to 1 (train, val, test) that sum to 1, "
            f"not {shown!r}"
        )
    return [float(f) for f in value]  # type: ignore[union-attr]


def read_split(path: str | Path) -> dict[str, list[str]]:
    """Read and validate a split manifest (three disjoint lists of case ids)."""
    path = Path(path)
    data = read_json(path, "split file not found")
    if not isinstance(data, dict) or not all(isinstance(data.get(s), list) for s in SPLITS):
        raise InputError(path, "a split file needs lists 'train', 'val' and 'test'")
    seen: dict[str, str] = {}
    for split in SPLITS:
        for case_id in data[split]:
            if not isinstance(case_id, str) or not case_id:
                raise InputError(path, f"{split!r} holds {case_id!r}, not a case id (a name)")
            if case_id in seen:
                raise InputError(
                    path, f"case {case_id!r} is in both {seen[case_id]!r} and {split!r}"
                )
            seen[case_id] = split
    return {s: list(data[s]) for s in SPLITS}


def write_split(split: dict[str, list[str]], path: str | Path, **info: object) -> Path:
    """Write a split manifest atomically, with free-form provenance fields in ``info``."""
    return write_text_atomic(path, json.dumps({**info, **split}, indent=1) + "\n")


def _manifest_path(manifest: str | None) -> Path | None:
    """A bare name (``lits.json``) is kdseg's versioned manifest, wherever the command runs; a
    path with a folder in it (``./my.json``, ``/splits/lits.json``) is the user's file."""
    if not manifest:
        return None
    return Path(manifest) if "/" in manifest or os.sep in manifest else MANIFEST_DIR / manifest


def _seeded_because(
    versioned: Path, named: list[str], missing: list[str], n_present: int, root: Path
) -> tuple[int, str]:
    """Why a folder gets a seeded split instead of the versioned manifest's: a log level and
    one line.

    Most of the manifest's cases absent is the expected state of a folder that is not the
    full download (phantoms, a subset, another dataset): said as a fact. Most present but not
    all is likely an incomplete download, whose results would not be on the versioned split:
    a warning.
    """
    if 2 * len(missing) > len(named):
        return logging.INFO, (
            f"split: a seeded split of the {n_present} case(s) in {root} ({versioned.name}, "
            f"the versioned split, is for the full {len(named)}-case download)"
        )
    return logging.WARNING, (
        f"split: {len(missing)} of the {len(named)} cases of the versioned {versioned.name} "
        f"are not in {root} (e.g. {missing[0]!r}; an incomplete download?), so a seeded split "
        f"of the {n_present} case(s) there is used instead"
    )


def persist_split(
    split: dict[str, list[str]],
    store: Path,
    root: str | Path,
    seed: int,
    fractions: Sequence[float],
) -> None:
    """Write a seeded split to ``store`` (outside the dataset) so later runs reuse it; a cache
    root that cannot be written (a read-only mount) keeps it in memory: the same cases and
    seed give the same split."""
    try:
        write_split(
            split, store, seed=seed, fractions=list(fractions), root=str(Path(root).resolve())
        )
        log.info("wrote split %s (for %s)", store, root)
    except OSError as exc:
        log.info(
            "split kept in memory (cannot write into %s: %s)", store.parent, exc.strerror or exc
        )


_WARNED: set[str] = set()  # one line per process: kdseg-train resolves its data twice


def _warn_left_out(chosen: Path, named: set[str], present: set[str], root: Path, hint: str) -> None:
    """Cases in ``root`` that ``chosen`` puts in no set are never prepared, trained or scored:
    one warning line naming how many, the first few, and the file to change. They are not
    added to a set here: a case already in one never moves (no leak into scored sets)."""
    left = sorted(present - named)
    if not left or not first_process():
        return
    shown = ", ".join(repr(c) for c in left[:3]) + (", ..." if len(left) > 3 else "")
    line = (
        f"split: {len(left)} case(s) in {root} are in no set of {chosen} ({shown}): never "
        f"prepared, trained or scored; {hint}"
    )
    if line not in _WARNED:
        _WARNED.add(line)
        log.warning("%s", line)


def _warn_seed_unused(chosen: Path, seed: int, fractions: Sequence[float]) -> None:
    """A seed (or fractions) set with a split it does not cut: one warning line, as a sweep
    over ``data.split_seed`` would otherwise train every job on that one split unawares."""
    if is_default_seeding(seed, fractions) or not first_process():
        return
    unused = seeding_options(seed, fractions)
    line = (
        f"split: {' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} unused: the "
        f"split is read from {chosen} (a seed cuts "
        "only a folder without a split file, a kdseg_split.json of its own or a complete "
        "versioned manifest)"
    )
    if line not in _WARNED:
        _WARNED.add(line)
        log.warning("%s", line)


def _check_store_seeding(store: Path, seed: int, fractions: Sequence[float]) -> None:
    """Refuse a persisted split that records another seed or other fractions than the run's
    (a kdseg before 2026-12-07 kept every seed's split under the default name): used, it
    would be a split the run's config does not describe. The line names the file and where it
    belongs."""
    recorded = _recorded_seeding(read_json(store, "split file not found"))
    if recorded is None:
        return  # (a file without provenance: nothing to compare)
    recorded_seed, recorded_fractions = recorded
    if recorded_seed == seed and _same_fractions(recorded_fractions, fractions):
        return
    way_out = "delete it"
    try:
        home = store.with_name(store_name(int(recorded_seed), recorded_fractions))
        way_out = f"move it to {home} (where runs with that seed read it) or delete it"
    except (TypeError, ValueError, ConfigError):
        pass
    raise InputError(
        store,
        f"this persisted split records seed {recorded_seed!r} and fractions "
        f"{recorded_fractions!r}, not the data.split_seed={seed} and data.split_fractions="
        f"{list(fractions)} this run asks for (kdseg keeps one split per seed and fractions): "
        f"{way_out} for a seeded split of this seed, or pass data.split_file=<it>",
    )


def _recorded_seeding(data: dict) -> tuple[Any, Any] | None:
    """The seed and fractions a persisted split records (the default fractions where it names
    none), or None where it records neither."""
    seed, fractions = data.get("seed"), data.get("fractions")
    if seed is None and fractions is None:
        return None
    return seed, list(DEFAULT_FRACTIONS) if fractions is None else fractions


def _records(path: Path, seed: int, fractions: Sequence[float]) -> bool:
    """Whether the persisted split ``path`` records ``seed`` and ``fractions``."""
    try:
        recorded = _recorded_seeding(read_json(path, "split file not found"))
    except InputError:
        return False
    return recorded is not None and recorded[0] == seed and _same_fractions(recorded[1], fractions)


def store_in_use(store: Path, seed: int, fractions: Sequence[float]) -> Path:
    """``store``, or the file a kdseg before 2026-12-07 persisted this seed's split in.

    Those kept every seed's split under the default name (``kdseg_split.json``); a run of a
    non-default seed whose own file is not there yet reads that one in place when it records
    this seed and these fractions, so its cases keep their sets (cut again, a folder grown
    since would move them). A default-seed run then meets it as a split of another seed,
    refused in one line that says where to move it.
    """
    older = store.with_name(FOLDER_SPLIT_NAME)
    if store.name == FOLDER_SPLIT_NAME or store.exists() or not older.is_file():
        return store
    return older if _records(older, seed, fractions) else store


def choose_split(
    root: str | Path,
    case_ids: Sequence[str],
    split_file: str | None = None,
    manifest: str | None = None,
    seed: int = DEFAULT_SEED,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    store: str | Path | None = None,
) -> tuple[dict[str, list[str]], Path | None]:
    """The split for the cases found in ``root`` (see the module docstring for the order) and
    the file it was read from; ``None`` for a seeded split made here, which nothing has
    written yet (:func:`persist_split` writes it, once its cases have been prepared).

    A file that names cases not in ``root`` is refused (for ``store``, kdseg's own file, the
    line says to delete it); cases in ``root`` that a file puts in no set are one warning.
    ``store`` is the file for ``seed`` and ``fractions`` (:func:`store_name`); one that
    records others is refused. A non-default ``seed`` or ``fractions`` with a split they do
    not cut (a split file, the folder's own, the versioned manifest) is one warning line.
    """
    root = Path(root)
    present = set(case_ids)
    store = store_in_use(Path(store), seed, fractions) if store is not None else None
    versioned = _manifest_path(manifest)
    if split_file:
        chosen = Path(split_file)
    elif (root / FOLDER_SPLIT_NAME).exists():  # the user's own (or one an older kdseg wrote)
        chosen = root / FOLDER_SPLIT_NAME
    elif store is not None and store.exists():
        chosen = store
    else:
        if versioned is not None and versioned.exists():
            split = read_split(versioned)
            named = [c for s in SPLITS for c in split[s]]
            missing = [c for c in named if c not in present]
            if not missing:
                _warn_seed_unused(versioned, seed, fractions)
                _warn_left_out(
                    versioned, set(named), present, root,
                    "to use them, pass data.split_file=<a split that names them>",
                )  # fmt: skip
                return split, versioned
            level, line = _seeded_because(versioned, named, missing, len(present), root)
            log.log(level, "%s", line)
        return make_split(sorted(present), fractions, seed), None
    split = read_split(chosen)
    if chosen == store:
        _check_store_seeding(store, seed, fractions)
    else:
        _warn_seed_unused(chosen, seed, fractions)
    named = [c for s in SPLITS for c in split[s]]
    missing = [c for c in named if c not in present]
    if missing:
        way_out = ""
        if chosen == store:  # kdseg's own file in its cache, not the user's
            way_out = (
                " (the split kdseg persisted for this folder in its cache: delete this file "
                "for a seeded split of the cases there, or pass data.split_file=<file>)"
            )
        raise InputError(
            chosen,
            f"names {len(missing)} case(s) not found in {root}, e.g. {missing[0]!r}{way_out}",
        )
    where = "to use them, add them to a set in that file"
    if chosen == store:
        where += " (kdseg's persisted split for this folder; its cases keep their sets)"
    _warn_left_out(chosen, set(named), present, root, where)
    return split, chosen


def resolve_split(
    root: str | Path,
    case_ids: Sequence[str],
    split_file: str | None = None,
    manifest: str | None = None,
    seed: int = DEFAULT_SEED,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    persist: bool = True,
    store: str | Path | None = None,
) -> dict[str, list[str]]:
    """Return the split for the cases found in ``root`` (:func:`choose_split`).

    ``store`` is the file a seeded split is persisted to and read back from (outside ``root``:
    nothing is ever written into the dataset); ``None`` keeps it in memory. ``persist=False``
    (read-only commands, and :func:`kdseg.data.dataset.resolve_data`, which persists once the
    cases are prepared) reads ``store`` but never writes it.
    """
    split, source = choose_split(root, case_ids, split_file, manifest, seed, fractions, store)
    if source is None and persist and store is not None:
        persist_split(split, Path(store), root, seed, fractions)
    return split


#: the file beside a run's checkpoints that holds the split it trained with
RUN_SPLIT_NAME = "split.json"


def recorded_split(data_info: object) -> dict[str, list[str]] | None:
    """The split a checkpoint's (or artefact's) ``data`` section records, or ``None`` (a model
    of an older kdseg, or a section that holds no usable split)."""
    split = data_info.get("split") if isinstance(data_info, dict) else None
    if not isinstance(split, dict) or not all(isinstance(split.get(s), list) for s in SPLITS):
        return None
    return {s: [str(c) for c in split[s]] for s in SPLITS}


def check_no_leak(
    data_info: object,
    dataset: str,
    scored: str,
    case_ids: Sequence[str],
    model: str | Path,
    run_split: str | Path | None = None,
    root: str | Path | None = None,
) -> None:
    """Refuse scoring a model on cases it trained on: one line naming the case.

    ``data_info`` is the model's ``data`` section; ``dataset`` the name of the dataset scored,
    ``root`` its folder, ``scored`` its split (``train``, ``val``, ``test``) and ``case_ids``
    the cases scored. A ``val`` case the model trained on, or a ``test`` case it trained or
    validated on, in the folder it trained on means the split differs from the one the model
    was trained with (a dataset that grew, another cache root): refused, pointing at
    ``run_split`` (the run's ``split.json``). Not checked: a model without a recorded split or
    folder (an older kdseg), another dataset name, another folder (its ``volume-3`` is another
    scan: every LiTS-layout folder names its cases alike; a moved copy is not recognised
    either), and ``scored=train``.
    """
    split = recorded_split(data_info)
    if split is None or scored not in ("val", "test") or root is None:
        return
    if not isinstance(data_info, dict) or data_info.get("name") != dataset:
        return
    trained_in = data_info["split"].get("root")
    if trained_in is None or Path(str(trained_in)) != Path(root).resolve():
        return
    seen = {c: "train" for c in split["train"]}
    if scored == "test":
        seen.update({c: "val" for c in split["val"]})
    leaked = [c for c in case_ids if c in seen]
    if not leaked:
        return
    hint = str(run_split) if run_split is not None else f"<run>/{RUN_SPLIT_NAME}"
    raise InputError(
        model,
        f"case {leaked[0]!r} of split {scored!r} was in this model's {seen[leaked[0]]} set "
        f"({len(leaked)} such case(s)): this split differs from the one the model was trained "
        f"with; score on that split with data.split_file={hint}",
    )
