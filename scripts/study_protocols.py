"""The phantom studies' protocols and the run-folder helpers the study scripts share.

``PROTOCOLS`` holds what differs between the versions of ``scripts/phantom_study.py``'s study
(each fixed in docs/study.md or docs/study_v5/protocol.md before its distillation runs); the
constants name the networks, methods, seeds and stages. ``config_diff`` compares a reused run's
saved config with the one a stage would train (``--teacher-from``, ``--runs-from``,
``unlabeled_study.py --v4-runs``); ``tumor_dice`` reads what ``kdseg-eval`` wrote.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

EXPERIMENT = "phantom_study_v3"
TEACHER = "raunet"
TEACHER_WIDTH = 0.5  # 5.5 M parameters: trained once per seed, reused by every method
STUDENT = "enet"
SECOND_STUDENT = "mobilenetv2"
STUDENT_WIDTH = 0.25  # ENet 0.025 M, MobileNetV2 0.16 M
SEEDS = (1, 2, 3, 4, 5)  # the main comparison: teacher, ENet alone and the main methods
FEW_SEEDS = (1, 2, 3)  # the EMKD ablations and RA-UNet -> MobileNetV2
MAIN_METHODS = ("emkd", "kd", "at", "cwd")  # plus the selected new option
#: kdseg's options beyond the paper (conf/distill/*.yaml); one is selected on validation
NEW_OPTIONS = ("emkd_balanced", "emkd_warmup", "kd_balanced", "kd_region", "dist", "dkd")
SELECT_SEED = 1
ABLATIONS = ("emkd_pmd", "emkd_imd", "emkd_rad", "emkd_pmd_imd", "emkd_pmd_rad", "emkd_imd_rad")
PHANTOM = {"n_cases": 40, "seed": 0, "params": "{}"}  # the generator's default phantoms
#: v4's phantoms (pilots P13, P14): 60 cases (split 42 / 6 / 12), whole 15-50 mm tumors
PHANTOM_V4 = {"n_cases": 60, "seed": 0, "params": "{tumor_mm_range: [15, 50], tumor_depth: 1}"}
#: v5's phantoms (docs/study_v5/protocol.md): v4's generator call with 24 more cases. A case's
#: seed depends on its index only, so cases 0-59 are v4's; 60-83 are v5's fresh test split
PHANTOM_V5 = {**PHANTOM_V4, "n_cases": 84}
#: v5's variants of emkd_balanced (beyond the paper), chosen on the dev split
CANDIDATES = ("emkd_balanced_pmd1", "emkd_balanced_t1", "emkd_balanced_region")
#: a candidate replaces the option that already has five seeds only by this dev margin
DEV_MARGIN = 0.010
#: v6's phantoms (docs/study_v6/protocol.md): the same call with 132 cases; 0-83 are v5's,
#: 84-107 the unlabeled study v7's fresh test cases, 108-131 v6's fresh test split
PHANTOM_V6 = {**PHANTOM_V4, "n_cases": 132}
#: v6's variants of v5's selected option (beyond the paper), chosen on the dev-2 split
CANDIDATES_V6 = (
    "emkd_balanced_region_imd2",
    "emkd_balanced_region_at",
    "emkd_balanced_region_w2",
)
#: v7's phantoms (docs/study_v7/protocol.md): the same call with 180 cases; 0-131 are v6's,
#: 132-155 the unlabeled study v8's fresh test cases, 156-179 v7's fresh test split
PHANTOM_V7 = {**PHANTOM_V4, "n_cases": 180}
#: v7's student training lengths, longest first: the first whose seed-1 ENet-alone pilot leaves
#: the teacher at least GAP_RULE ahead on dev 2 is used (docs/study_v7/protocol.md)
PATIENT_STEPS = (4096, 2048)
STEPS_PER_EPOCH = 64  # v4's data: 512 samples an epoch, batch 8
GAP_RULE = 0.15  # issue 11's "real gap": teacher at least this far above the student alone


class Protocol(NamedTuple):
    """What differs between study protocols.

    ``experiment``: the experiment config (``conf/experiment/<name>`` and ``<name>_distill``).
    ``phantom``: kdseg-phantom's ``n_cases``, ``seed`` and ``params`` (never mutated).
    ``teacher_overrides``: overrides of the teachers' training only.
    ``overrides``: overrides of every command that builds data from the phantoms (kdseg-prepare,
    every kdseg-train, kdseg-distill and kdseg-eval, and the step-cost stage's config), e.g. the
    preprocessing.
    ``teacher_seed``: None, one teacher per seed, the student of seed s learning from the teacher
    of seed s; a seed, ONE teacher (the teachers stage trains that seed only) shared by every
    distillation run (``study.teacher_seed``).
    ``fresh_from``: None, the data stage's split is kdseg's default one; an index n, the first
    n cases are split as kdseg splits n cases (train / val / an earlier protocol's test, which
    becomes the dev split) and the cases from n on are the test split.
    ``candidates``: options chosen among on the dev split (stages candidates, dev-select,
    confirm); empty: those stages do nothing.
    ``fresh_until``: the end (exclusive) of the fresh test split of ``fresh_from``; None: the
    last case.
    ``fresh2``: v6's second fresh test split, ``(start, end)`` case indexes; None: no v6 stages.
    ``candidates2``: options chosen among on the dev-2 split (stages candidates2, dev2-select,
    confirm2; study_v6.py).
    ``fresh3``: v7's fresh test split, ``(start, end)``; None: no v7 stages.
    ``patient``: v7's one method trained with ENet alone for longer (study_v7.py).
    """

    experiment: str
    phantom: dict = PHANTOM
    teacher_overrides: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    teacher_seed: int | None = None
    fresh_from: int | None = None
    candidates: tuple[str, ...] = ()
    fresh_until: int | None = None
    fresh2: tuple[int, int] | None = None
    candidates2: tuple[str, ...] = ()
    fresh3: tuple[int, int] | None = None
    patient: str | None = None


V4_TEACHER = ("optim.lr=1e-3", "trainer.max_epochs=128")  # 8,192 steps
V4_DATA = ("data.preprocess.window_level=organ", "data.preprocess.window=[-100,100]")
#: docs/study_v6/protocol.md: v5 plus three variants of its selected option chosen on v4's
#: and v5's scored cases, confirmed on 24 more fresh cases (108-131)
V6 = Protocol(
    EXPERIMENT,
    PHANTOM_V6,
    V4_TEACHER,
    V4_DATA,
    1,
    fresh_from=60,
    candidates=CANDIDATES,
    fresh_until=84,
    fresh2=(108, 132),
    candidates2=CANDIDATES_V6,
)
#: every protocol the script can run, each fixed in docs/study.md before its distillation runs
PROTOCOLS = {
    "v3": Protocol(EXPERIMENT),
    # docs/study_v4/pilots/p14_run.sh: P14's setting, its design written before P14 ran
    "v4": Protocol(EXPERIMENT, PHANTOM_V4, V4_TEACHER, V4_DATA, teacher_seed=1),
    # docs/study_v5/protocol.md: v4 plus 24 fresh test cases and three candidates chosen on dev
    "v5": Protocol(
        EXPERIMENT, PHANTOM_V5, V4_TEACHER, V4_DATA, 1, fresh_from=60, candidates=CANDIDATES
    ),
    "v6": V6,
    # docs/study_v7/protocol.md: v6's folder and teacher; ENet alone and emkd_balanced_region
    # trained longer (the length fixed from ENet-alone pilots), scored on cases 156-179
    "v7": V6._replace(phantom=PHANTOM_V7, fresh3=(156, 180), patient="emkd_balanced_region"),
}
#: what a reused teacher's config.yaml must match (--teacher-from): these keys and every key
#: below them, except the paths in RUN_PATH_KEYS (paths.* and hydra.* are never compared)
RUN_KEYS = (
    "seed",
    "model",
    "optim",
    "loss",
    "data",
    "trainer.max_epochs",
    "trainer.max_steps",
    "checkpoint.monitor",
)
RUN_PATH_KEYS = ("data.root", "data.cache_root", "data.num_workers", "data.prepare_workers")
#: and a reused distillation run's (--runs-from), the teacher's checkpoint path aside
DISTILL_KEYS = (
    *RUN_KEYS,
    "student",
    "distill",
    "teacher.name",
    "teacher.channels_last",
    "teacher.compile",
    "study",
)
#: the stages whose finished runs --runs-from may copy in
REUSABLE = ("teachers", "students", "options", "main", "ablations", "mobilenet")
STAGES = (
    "data",
    "teachers",
    "students",
    "options",
    "select",
    "main",
    "ablations",
    "mobilenet",
    "candidates",
    "dev-select",
    "confirm",
    "eval",
    "report",
    "data2",
    "candidates2",
    "dev2-select",
    "confirm2",
    "endpoint2",
    "data3",
    "patient-pilot",
    "patient",
    "endpoint3",
    "step-cost",
)
EVAL_DIR = "eval-test-full"
VAL_DIR = "eval-val-full"
DEV_DIR = "eval-dev-full"
DEV2_DIR = "eval-dev2-full"  # v6: v4's validation and test cases and v5's fresh ones
FRESH2_DIR = "eval-fresh2-full"  # v6: its fresh test split
FRESH3_DIR = "eval-fresh3-full"  # v7: its fresh test split


def tumor_dice(run: Path, eval_dirs: Sequence[str] = (), cases: set[str] | None = None) -> float:
    """Per-case tumor Dice over the cases with tumor: ``run`` an evaluation folder (its
    summary), or a run folder whose ``eval_dirs`` per-case rows are pooled over ``cases``.

    A split with no tumor case has no tumor Dice (``kdseg-eval`` writes null): every selection,
    precondition and endpoint of the protocols ranks or compares tumor Dice, and none is
    defined on such a split, so that is refused (SystemExit naming the file), not scored as
    0 or 1 and not a ``float(None)`` traceback."""
    if cases is None:
        path = run / "summary.json"
        value = json.loads(path.read_text())["summary"]["tumor"]["dice_per_case_nonempty"]
        if value is None:
            raise SystemExit(
                f"{path}: no tumor Dice (no case of this split holds tumor): the protocol "
                "compares tumor Dice, so the split needs a case with tumor"
            )
        return float(value)
    return pooled_dice(run, eval_dirs, "tumor", cases)


def pooled_dice(
    run: Path, eval_dirs: Sequence[str], name: str, cases: set[str] | None = None
) -> float:
    """Class ``name``'s per-case Dice over the cases where it is present, pooled over the
    ``per_case.csv`` rows of ``run``'s evaluation folders ``eval_dirs`` (only ``cases``, if
    given): the mean over all those cases, not a mean of the folders' means."""
    dice: dict[str, float] = {}
    for folder in eval_dirs:
        with open(run / folder / "per_case.csv", newline="") as f:
            for row in csv.DictReader(f):
                wanted = cases is None or row["case"] in cases
                if row["class"] == name and row["gt_empty"] == "False" and wanted:
                    dice[row["case"]] = float(row["dice"])
    if not dice:  # as tumor_dice: undefined, refused by name (not a ZeroDivisionError)
        raise SystemExit(f"{run}: no case of {', '.join(eval_dirs)} holds {name}: no {name} Dice")
    return sum(dice.values()) / len(dice)


def phantom_args(root: Path, n_cases: int, seed: int, params: str) -> list[str]:
    """kdseg-phantom's arguments for ``n_cases`` LiTS-layout phantoms of generator ``seed``
    and ``params`` (a YAML mapping) into ``root``; drawn cases are kept."""
    return [
        "dataset=lits",
        f"root={root}",
        f"n_cases={n_cases}",
        f"seed={seed}",
        f"params={params}",
    ]


def copy_run(source: Path, target: Path, partial: Path) -> None:
    """Copy the finished run ``source`` (its evaluations left behind) to ``target``, under the
    temporary name ``partial`` (outside ``runs/``: no stage sees it) first and then renamed:
    an interrupted copy (its summary.json copied before its checkpoints) is never taken for a
    finished run, and the rerun starts it again. ``copied_from.txt`` names the source."""
    shutil.rmtree(partial, ignore_errors=True)  # an interrupted earlier copy
    partial.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("eval-*"))
    (partial / "copied_from.txt").write_text(f"{source}\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(target)


def phantoms_drawn(root: Path, n_cases: int) -> bool:
    """Whether kdseg-phantom has finished drawing LiTS cases 0 .. ``n_cases`` - 1 into
    ``root``: its ``phantom_truth.json`` names each of them and no case is pending. The truth
    file alone says nothing: kdseg-phantom writes it first, as the folder's marker, and a
    killed call leaves it behind with the cases drawn so far."""
    from kdseg.data.phantom.config import PENDING_FILE, TRUTH_FILE

    truth = root / TRUTH_FILE
    if not truth.is_file() or (root / PENDING_FILE).exists():
        return False
    drawn = json.loads(truth.read_text())
    return all(f"volume-{i}" in drawn for i in range(n_cases))


def teacher_seed_override(seed: int | None) -> list[str]:
    """The distillation runs' override naming the one shared teacher; none per-seed."""
    return [] if seed is None else [f"study.teacher_seed={seed}"]


def config_diff(expected: dict, saved: dict, keys: Sequence[str] = RUN_KEYS) -> list[str]:
    """``key: saved != expected`` for each leaf under ``keys`` that differs (paths ignored;
    a key one side lacks and the other holds as null is no difference)."""

    def leaves(tree: dict) -> dict[str, object]:
        out: dict[str, object] = {}
        for top in keys:
            value: object = tree
            for part in top.split("."):
                value = value.get(part, "<missing>") if isinstance(value, dict) else "<missing>"
            stack = [(top, value)]
            while stack:
                key, item = stack.pop()
                if isinstance(item, dict) and item:
                    stack.extend((f"{key}.{k}", v) for k, v in item.items())
                elif key not in RUN_PATH_KEYS and item != "<missing>":  # absent: see below
                    out[key] = item
        return out

    want, got = leaves(expected), leaves(saved)
    # an option added after the run was trained, and left off (null), changes nothing it did
    missing = {k: None for k in set(want) ^ set(got) if want.get(k, got.get(k)) is None}
    want, got = {**missing, **want}, {**missing, **got}
    return [
        f"{key}: {got.get(key, '<missing>')} != {want.get(key, '<missing>')}"
        for key in sorted(set(want) | set(got))
        if got.get(key, "<missing>") != want.get(key, "<missing>")
    ]
