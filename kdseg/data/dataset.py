"""From a ``data`` config to what training and evaluation need: cases, split, cache, loaders.

This is the one place that reads the ``data`` config group, so ``train``, ``distill``,
``prepare`` and ``eval`` agree on which cases, which split and which cache a config means.

Beside the labeled cases it resolves two optional sources (ARCHITECTURE.md: data sources, not
model concerns): unlabeled scans (``data.unlabeled_root``, an image-only cache mixed into
training batches by ``data.unlabeled_fraction``) and a teacher's stored predictions
(``teacher.predictions``, a teacher-target cache over the training and unlabeled cases). Both
caches live under the labeled dataset's cache root, never in the folders they are read from.

Nothing is written into ``data.root`` either. Under ``data.cache_root`` (default
``paths.cache_dir``: ``$KDSEG_CACHE_DIR``, else ``~/.cache/kdseg``, whatever the current
directory) a dataset
folder has ``<name>-<folder key>-<preprocessing digest>/`` (the slices) and
``<name>-<folder key>/kdseg_split.json`` (its persisted seeded split; one file per other
``data.split_seed`` / ``data.split_fractions``, :func:`split_store`); the folder key is a hash
of the folder's resolved path, so two folders with the same dataset name and case ids behind
one cache root never share a cache or a split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdseg.data.loader_settings import check_loader_settings, loader_config
from kdseg.data.manifest import (
    DEFAULT_FRACTIONS,
    DEFAULT_SEED,
    RUN_SPLIT_NAME,
    choose_split,
    persist_split,
    split_fractions,
    store_name,
    write_split,
)
from kdseg.data.prepare import cache_dir_for, prepare_cases
from kdseg.data.preprocess_config import PreprocessConfig
from kdseg.data.sources import Case, ImageCase, discover_cases, discover_images
from kdseg.data.tasks import Task, organ_name
from kdseg.errors import ConfigError, InputError

if TYPE_CHECKING:
    from kdseg.data.datamodule import SliceDataModule


@dataclass
class DataSetup:
    """Resolved data config: the cases, their split, the preprocessing and its cache."""

    cfg: dict[str, Any]
    cases: dict[str, Case]
    split: dict[str, list[str]]
    preprocess: PreprocessConfig
    cache_dir: Path
    unlabeled: dict[str, ImageCase] | None = None
    unlabeled_dir: Path | None = None
    teacher_predictions: Path | None = None
    teacher_dir: Path | None = None
    #: the folders read from, by the option that names them (kdseg-export's ``data_root``
    #: relabels ``data.root``): :meth:`prepare` writes into none of them
    sources: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: where a seeded split made for this setup is persisted once :meth:`prepare` has
    #: prepared its cases (``None``: read from a file, or a read-only command)
    persist_to: Path | None = None

    @property
    def task(self) -> Task:
        return Task(self.cfg["task"])

    def info(self) -> dict[str, Any]:
        """What a checkpoint must carry about its data to be self-describing."""
        return {
            "name": self.cfg["name"],
            "layout": self.cfg["layout"],
            "task": self.cfg["task"],
            "context": int(self.cfg.get("context", 0)),
            "in_channels": int(self.cfg["in_channels"]),
            "num_classes": int(self.cfg["num_classes"]),
            "organ": organ_name(self.cfg),
            "preprocess": self.preprocess.to_dict(),
            # the cases of each set, and the folder they are in: kdseg-eval refuses scoring
            # cases the model trained on in that folder
            "split": {
                **{s: list(self.split[s]) for s in ("train", "val", "test")},
                "root": str(Path(self.cfg["root"]).resolve()),
            },
        }

    def write_split(self, run_dir: str | Path) -> Path:
        """``<run_dir>/split.json``: the run's split, in the format ``data.split_file`` reads."""
        return write_split(
            self.split,
            Path(run_dir) / RUN_SPLIT_NAME,
            name=self.cfg["name"],
            root=str(Path(self.cfg["root"]).resolve()),
        )

    def prepare(
        self, workers: int = 1, progress: bool = True, ids: list[str] | None = None
    ) -> list[str]:
        """Prepare the named cases (default: all in the split) into the cache; idempotent.

        A cache root inside a folder the data are read from is refused first, whichever
        command prepares (``read_only`` ones such as kdseg-export too). A seeded split is
        persisted (:attr:`persist_to`) only once all its cases are prepared: a case refused
        (a bad label) leaves no split naming it behind, to block the folder once fixed."""
        sources = self.sources or sources_of(self.cfg, self.teacher_predictions)
        check_outside(cache_root_of(self.cfg), sources)
        explicit = bool(ids)
        ids = ids or [c for s in ("train", "val", "test") for c in self.split[s]]
        done = prepare_cases(
            [self.cases[c] for c in ids],
            self.preprocess,
            self.cache_dir,
            workers=workers,
            progress=progress,
            source=str(Path(self.cfg["root"]).resolve()),
        )
        if self.persist_to is not None and not explicit:
            persist_split(self.split, self.persist_to, self.cfg["root"], *seeding_of(self.cfg))
            self.persist_to = None
        if self.unlabeled:
            prepare_cases(
                list(self.unlabeled.values()),
                self.preprocess,
                self.unlabeled_dir,
                workers=workers,
                progress=progress,
                source=str(Path(self.cfg["unlabeled_root"]).resolve()),
            )
        if self.teacher_predictions is not None:
            from kdseg.data.teacher_targets import prepare_teacher_targets

            cases: list[Case | ImageCase] = [self.cases[c] for c in self.split["train"]]
            cases += list((self.unlabeled or {}).values())
            prepare_teacher_targets(
                cases, self.teacher_predictions, self.preprocess, self.teacher_dir, progress
            )
        return done

    def datamodule(self, seed: int = 123) -> SliceDataModule:
        """Slice loaders over the prepared cache; its ``prepare_data`` (rank 0) fills the cache.

        Lightning is imported here, not at module level, so ``kdseg-prepare`` starts fast.
        """
        from kdseg.data.datamodule import SliceDataModule

        loader = loader_config(self.cfg, seed)
        workers = int(self.cfg.get("prepare_workers", 1))
        return SliceDataModule(
            self.cache_dir,
            self.split,
            loader,
            prepare=lambda: self.prepare(workers=workers, progress=False),
            unlabeled=(self.unlabeled_dir, list(self.unlabeled)) if self.unlabeled else None,
            teacher_dir=self.teacher_dir,
        )


def with_roi_labels(images: dict[str, ImageCase], folder: Path) -> dict[str, ImageCase]:
    """``images`` with each one's organ mask from ``folder`` (``data.unlabeled_roi_labels``):
    ``<case id>.nii.gz`` or ``.nii`` (or with the image's ``_0000`` kept, as kdseg-predict names
    an ``imagesTs/`` scan's output), in the folder or its ``labelsTr/`` (a kdseg-pseudolabel or
    nnU-Net folder as it is). A missing mask is refused, naming the case."""
    if not folder.is_dir():
        raise InputError(folder, "data.unlabeled_roi_labels: folder not found")
    out = {}
    for case_id, image in images.items():
        found = [
            folder / sub / f"{name}{suffix}"
            for sub in ("", "labelsTr")
            for name in (case_id, f"{case_id}_0000")
            for suffix in (".nii.gz", ".nii")
            if (folder / sub / f"{name}{suffix}").is_file()
        ]
        if not found:
            raise InputError(
                folder,
                f"data.unlabeled_roi_labels: no mask {case_id}.nii.gz (every scan of "
                "data.unlabeled_root needs one; a filtered kdseg-pseudolabel folder holds its "
                "kept scans in imagesTr/)",
            )
        out[case_id] = dataclasses.replace(image, roi_label=found[0])
    return out


def _masks_key(images: Iterable[ImageCase]) -> str:
    """Names, sizes and modification times of the masks: masks written again (stage 1 rerun
    into the same folder) make another cache, not a stale reuse of the old boxes."""
    stamps = []
    for image in images:
        assert image.roi_label is not None
        stat = image.roi_label.stat()
        stamps.append(f"{image.roi_label.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(sorted(stamps)).encode()).hexdigest()[:8]


def _folder_key(path: str | Path) -> str:
    return hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]


#: the environment variable that moves the default cache root (as nnU-Net's nnUNet_preprocessed)
CACHE_ENV = "KDSEG_CACHE_DIR"
#: the default cache root (as conf/paths/default.yaml): the home cache, not the current directory
DEFAULT_CACHE = "~/.cache/kdseg"


def cache_root_of(cfg: dict[str, Any]) -> Path:
    """``data.cache_root`` as an absolute path; unset or null (a config of an earlier kdseg,
    a data dict built in code): ``$KDSEG_CACHE_DIR``, else ``~/.cache/kdseg`` (the same
    whatever the current directory), as ``paths.cache_dir`` gives. Never the dataset folder:
    nothing is written into it."""
    root = cfg.get("cache_root") or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(root).expanduser().absolute()


def dataset_key(cfg: dict[str, Any]) -> str:
    """``<name>-<folder key>``: one dataset folder's share of a cache root."""
    return f"{cfg['name']}-{_folder_key(cfg['root'])}"


def seeding_of(cfg: dict[str, Any]) -> tuple[int, list[float]]:
    """``data.split_seed`` and ``data.split_fractions`` (the defaults where unset)."""
    seed = DEFAULT_SEED if cfg.get("split_seed") is None else cfg["split_seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"data.split_seed: an integer, not {seed!r}")
    fractions = cfg.get("split_fractions")
    return seed, split_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)


def split_store(cfg: dict[str, Any]) -> Path:
    """Where the seeded split of ``cfg['root']`` for its ``split_seed`` and ``split_fractions``
    is persisted (and read back): in the cache root, never in the dataset folder. The default
    seed and fractions keep ``<name>-<folder key>/kdseg_split.json``; others get a file of
    their own beside it (:func:`kdseg.data.manifest.store_name`), so each seed of a sweep
    keeps its own split."""
    return cache_root_of(cfg) / dataset_key(cfg) / store_name(*seeding_of(cfg))


def sources_of(cfg: dict[str, Any], teacher_predictions: Any = None) -> dict[str, Any]:
    """The folders a data config reads, by option (unset ones ``None``)."""
    return {
        "data.root": cfg.get("root"),
        "data.unlabeled_root": cfg.get("unlabeled_root"),
        "data.unlabeled_roi_labels": cfg.get("unlabeled_roi_labels"),
        "teacher.predictions": teacher_predictions,
    }


def check_outside(
    cache_root: Path, inputs: dict[str, Any], option: str = "data.cache_root"
) -> None:
    """A cache folder (``option``: ``data.cache_root``, or ``teacher.cache``) inside a folder
    the data is read from (``inputs``, :func:`sources_of`) would write into it: refused in one
    line naming both options."""
    cache = Path(cache_root).expanduser().resolve()
    fix = f"data.cache_root= or {CACHE_ENV}" if option == "data.cache_root" else f"{option}="
    for key, folder in inputs.items():
        if not folder:
            continue
        data = Path(folder).resolve()
        if cache == data or data in cache.parents:
            raise InputError(
                cache_root,
                f"{option} lies inside {key} ({folder}): kdseg writes nothing into a "
                f"folder it reads; set {fix} to a folder outside it",
            )


def _refuse_seeded_pseudolabels(root: str | Path) -> None:
    """A kdseg-pseudolabel dataset (:func:`~kdseg.data.nnunet.is_pseudolabel_dataset`) split
    by seed would put teacher-labelled cases into val and test: the checkpoint would be chosen,
    and the test Dice scored, against the teacher's own labels. Such a folder needs a split
    that says which cases hold ground truth: ``data.split_file`` (or its own
    ``kdseg_split.json``)."""
    from kdseg.data.nnunet import DATASET_JSON, is_pseudolabel_dataset

    if is_pseudolabel_dataset(root):
        raise InputError(
            Path(root) / DATASET_JSON,
            "a kdseg-pseudolabel dataset: a seeded split would score val/test against the "
            "teacher's own labels; pass data.split_file=<a split with pseudo-labelled cases in "
            "train only, ground-truth cases in val and test>",
        )


def _refuse_same_files(unlabeled: dict[str, ImageCase], cases: dict[str, Case]) -> None:
    """An unlabeled scan that is a labeled case's image file (a link, a hard link, the same
    path under another name) would train on that case's image: from val or test, the scores
    would be of a case seen in training. Refused in one line naming both. (A copy with other
    bytes on disk is not detected: no file is read to compare.)"""
    labeled: dict[tuple[int, int], str] = {}
    for case in cases.values():
        try:
            stat = os.stat(case.image)
        except OSError:  # reading the case says what is wrong
            continue
        labeled[(stat.st_dev, stat.st_ino)] = case.case_id
    for image in unlabeled.values():
        try:
            stat = os.stat(image.image)
        except OSError:
            continue
        hit = labeled.get((stat.st_dev, stat.st_ino))
        if hit is not None and stat.st_ino:
            raise InputError(
                image.image,
                f"data.unlabeled_root: this scan is the file of labeled case {hit!r} "
                f"({cases[hit].image}); a labeled case's image must not also be an unlabeled "
                "scan (from val or test it would be scored after training on it)",
            )


def resolve_data(
    cfg: dict[str, Any],
    teacher_predictions: str | None = None,
    read_only: bool = False,
    notes: list[str] | None = None,
) -> DataSetup:
    """Discover the cases of ``cfg['root']`` and resolve split and cache folder.

    With ``cfg['unlabeled_root']`` also the unlabeled images (ids must not clash with labeled
    ones; what that folder holds besides scans is added to ``notes``, as
    :func:`~kdseg.data.sources.discover_images` words it); with ``teacher_predictions`` (a
    folder) the teacher-target cache beside them. ``read_only`` (commands that only read the
    dataset) never write a split (they read a persisted one); the others persist a seeded
    split when :meth:`DataSetup.prepare` has prepared its cases. Nothing is written into
    ``cfg['root']``: the cache and the persisted split live under ``data.cache_root``
    (:func:`cache_root_of`).
    """
    pre = PreprocessConfig.from_dict(cfg.get("preprocess", {}))
    if not read_only:  # training settings: a config error before any case is prepared
        fixed = pre.window_size or (pre.in_plane_size if pre.spacing_mm is None else None)
        check_loader_settings(
            loader_config(cfg), unlabeled=bool(cfg.get("unlabeled_root")), slice_size=fixed
        )
    cases = {c.case_id: c for c in discover_cases(cfg["layout"], cfg["root"])}
    cache_root = cache_root_of(cfg)
    sources = sources_of(cfg, teacher_predictions)
    if not read_only:  # read-only commands check when they prepare (DataSetup.prepare)
        check_outside(cache_root, sources)
    store = split_store(cfg)
    seed, fractions = seeding_of(cfg)
    split, source = choose_split(
        cfg["root"],
        list(cases),
        split_file=cfg.get("split_file"),
        manifest=cfg.get("manifest"),
        seed=seed,
        fractions=fractions,
        store=store,
    )
    # training only: export and bench take the split the checkpoint records, and an eval
    # against the teacher's labels (agreement with the teacher) is a measurement of its own
    if not read_only and cfg["layout"] == "nnunet" and source in (None, store):
        _refuse_seeded_pseudolabels(cfg["root"])
    cache_dir = cache_dir_for(cache_root, dataset_key(cfg), pre)
    setup = DataSetup(cfg, cases, split, pre, cache_dir, sources=sources)
    if source is None and not read_only:  # a seeded split: persisted once its cases prepare
        setup.persist_to = store
    masks_key = ""  # the unlabeled scans' organ masks, when they set boxes
    if cfg.get("unlabeled_root"):
        root = cfg["unlabeled_root"]
        setup.unlabeled = {i.case_id: i for i in discover_images(root, notes)}
        clash = sorted(set(setup.unlabeled) & set(cases))
        if clash:
            raise InputError(root, f"unlabeled case {clash[0]!r} is also a labeled case id")
        _refuse_same_files(setup.unlabeled, cases)
        key = f"unlabeled-{_folder_key(root)}"
        if pre.roi is not None and cfg.get("unlabeled_roi_labels"):
            masks = Path(cfg["unlabeled_roi_labels"])
            setup.unlabeled = with_roi_labels(setup.unlabeled, masks)
            masks_key = f"-roi-{_masks_key(setup.unlabeled.values())}"
            key += masks_key  # other masks, other boxes: another cache
        setup.unlabeled_dir = cache_dir_for(cache_root, key, pre)
    if teacher_predictions:
        setup.teacher_predictions = Path(teacher_predictions)
        key = f"teacher-{_folder_key(teacher_predictions)}{masks_key}"  # cut like the images
        setup.teacher_dir = cache_dir_for(cache_root, key, pre)
    return setup
