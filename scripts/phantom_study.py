"""The phantom study v3, regenerated with one command: does distillation make ENet better on
tumors than the same ENet trained alone, seed for seed?

Stages, each ONE Hydra multirun (``-m``; ``--jobs`` runs at a time), because a stage needs the
previous one's checkpoints and Hydra cannot chain sweeps:

    data        kdseg-phantom (LiTS-like) + kdseg-prepare
    teachers    kdseg-train   -m model=raunet (width 0.5)       x 5 seeds (v4: seed 1 only)
    students    kdseg-train   -m model=enet x 5 seeds, mobilenetv2 x 3 seeds   (students alone)
    options     kdseg-distill -m the new (beyond-the-paper) options, seed 1, raunet -> enet
    select      kdseg-eval split=val of the options; the best by validation tumor Dice
    main        kdseg-distill -m emkd, the selected option, kd, at, cwd   x 5 seeds
    ablations   kdseg-distill -m the six EMKD ablations                   x 3 seeds
    mobilenet   kdseg-distill -m emkd, the selected option, raunet -> mobilenetv2 x 3 seeds
    candidates  (v5) kdseg-distill -m three variants of the selected option x 3 seeds
    dev-select  (v5) kdseg-eval on the dev split; the best paired tumor gain (study_v5.py)
    confirm     (v5) the dev-selected variant's seeds 4-5
    eval        kdseg-eval    -m ckpt=<every run's best.ckpt without a test evaluation yet>
    report      kdseg-report  -> <study>/report/report.md and .csv (paired differences);
                v5 adds endpoint.json (the dev-selected option on the fresh test cases)
    data2       (v6) the 24 more fresh cases and the dev-2 / fresh-2 split files (study_v6.py)
    candidates2 (v6) kdseg-distill -m three variants of v5's selected option x 3 seeds
    dev2-select (v6) kdseg-eval on dev 2 (every case scored so far); the best paired gain
    confirm2    (v6) the dev-2-selected variant's seeds 4-5
    endpoint2   (v6) every row on the second fresh test split -> endpoint_v6.json / .md
    data3       (v7) 24 more fresh cases (156-179) and the fresh-3 split file (study_v7.py)
    patient-pilot (v7) ENet alone, seed 1, 4,096 and 2,048 steps on dev 2: the length rule
    patient     (v7) ENet alone and emkd_balanced_region x 5 seeds at the chosen length
    endpoint3   (v7) those and v5's 1,024-step rows on fresh test 3 -> endpoint_v7.json / .md
    step-cost   time of one training step: plain student vs distillation (same batch)

Under kdseg's seeding the run of seed s with a teacher and the run of seed s without one start
from bit-identical student weights and see the same batches (``init_weights_sha256`` in each
``summary.json``): every seed is a paired comparison, and the report gives the per-seed
difference with a 95% interval. In v3 the distilled run of seed s learns from the teacher of
seed s; in v4 every distilled run learns from the one seed-1 teacher (``study.teacher_seed=1``).

The protocol is ``conf/experiment/phantom_study_v3.yaml`` (+ ``phantom_study_v3_distill.yaml``)
and the constants below, fixed from pilots of the teacher and of the student alone before any
distillation run (docs/study.md, "Protocol v3"). A stage whose runs all have a
``summary.json`` is skipped, and a half-finished run resumes from its ``last.ckpt``, so rerunning
the command after an interruption continues where it stopped. Wall times per stage go to
``<study>/timings.json``.

``--protocol v4`` is the design fixed in ``docs/study_v4/pilots/p14_run.sh`` before pilot P14
ran (to be run only if P14 passes that file's rule): P13's phantoms (60 cases, 15-50 mm
tumors, ``tumor_depth: 1``), the organ window [-100, 100] on every command that builds data
(prepare, train, distill, eval), ONE RA-UNet teacher (seed 1, Adam 1e-3, 8,192 steps) shared
by every student seed; students, methods and seeds as in v3. ``--teacher-from RUN`` copies a
finished teacher run in instead of training it, and ``--data-from DIR`` a phantom folder
instead of regenerating it, each only after checking that it is what the stage would have made
(the run's ``config.yaml``; the folder's ``phantom_truth.json``).

``--protocol v5`` (docs/study_v5/protocol.md) is v4 with 24 fresh test phantoms (the same
generator call with 84 cases; cases 60-83 are the test split, v4's validation and test cases
the dev split) and three variants of v4's selected option chosen on dev. ``--runs-from
RUNS`` copies an earlier study's finished runs in (v4's, for v5) after checking each config.
``--protocol v6`` (docs/study_v6/protocol.md) is v5 plus a second round: three variants of
v5's selected option chosen on every case scored so far, confirmed on 24 more fresh cases.
``--protocol v7`` (docs/study_v7/protocol.md) trains ENet alone and v5's selected option longer
(the length fixed from ENet-alone pilots) and scores them on 24 more fresh cases.

    python scripts/phantom_study.py                       # everything, into .study/
    python scripts/phantom_study.py --stages data,teachers,students   # a subset

Runs go ``--jobs`` at a time (default 2, one per core, one OpenMP thread each) through Hydra's
joblib launcher. When the teachers leave job slots free (v4: one teacher, two slots), the
students alone, which need no teacher, train beside it on the free slots instead of after
it. On a cluster, pass Hydra launcher options through ``--hydra`` instead, e.g.
``--hydra hydra/launcher=submitit_slurm hydra.launcher.partition=gpu`` (each run becomes a
SLURM job; stages still run in order, and the teachers and students side by side only with
the joblib launcher). For DDP inside a local multirun use ``trainer=ddp_fork``: plain
``ddp`` relaunches the whole sweep in its child process. Under SLURM use ``trainer=ddp`` with
one SLURM task per process (``ddp_fork`` is refused there; docs/training.md). Protocol v2
(the 2026-11-26 table in docs/study.md) is reproducible from the commit that reported it
(3d1dba6).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock (one study script per folder at a time)
    fcntl = None

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))
from step_cost import step_cost  # noqa: E402
from study_protocols import (  # noqa: E402
    ABLATIONS,
    CANDIDATES,
    DEV2_DIR,
    DEV_DIR,
    DEV_MARGIN,
    DISTILL_KEYS,
    EVAL_DIR,
    FEW_SEEDS,
    FRESH2_DIR,
    MAIN_METHODS,
    NEW_OPTIONS,
    PHANTOM,
    PHANTOM_V4,
    PHANTOM_V5,
    PROTOCOLS,
    RUN_KEYS,
    SECOND_STUDENT,
    SEEDS,
    SELECT_SEED,
    STAGES,
    STUDENT,
    STUDENT_WIDTH,
    TEACHER,
    TEACHER_WIDTH,
    VAL_DIR,
    Protocol,
    config_diff,
    copy_run,
    phantom_args,
    teacher_seed_override,
    tumor_dice,
)
from study_reuse import ReuseChecks  # noqa: E402
from study_v5 import FreshTestStages  # noqa: E402
from study_v6 import SecondFreshStages  # noqa: E402
from study_v7 import PatientStages  # noqa: E402

from kdseg.errors import write_text_atomic  # noqa: E402

__all__ = [  # the names the other study scripts and the tests use from here
    "ABLATIONS",
    "CANDIDATES",
    "DEV2_DIR",
    "DEV_DIR",
    "DEV_MARGIN",
    "EVAL_DIR",
    "FRESH2_DIR",
    "MAIN_METHODS",
    "NEW_OPTIONS",
    "PHANTOM",
    "PHANTOM_V4",
    "PHANTOM_V5",
    "SELECT_SEED",
    "Study",
    "DISTILL_KEYS",
    "RUN_KEYS",
    "config_diff",
    "tumor_dice",
]


class Study(ReuseChecks, FreshTestStages, SecondFreshStages, PatientStages):
    """Paths and command lines of one study folder; each ``stage_*`` method runs one stage."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.dir = Path(args.dir).resolve()
        self.protocol: Protocol = PROTOCOLS[args.protocol]
        self.data = self.dir / "data" / "lits"
        self.cache = self.dir / "cache"  # the slice cache and seeded split, never in the data
        self.runs = self.dir / "runs"
        self.seeds: list[int] = args.seeds
        self.few_seeds: list[int] = [s for s in FEW_SEEDS if s in self.seeds] or self.seeds[:3]
        self.jobs: int = args.jobs
        self.own_launcher = any(a.startswith("hydra/launcher=") for a in args.hydra)
        self.hydra_args: list[str] = list(args.hydra)
        #: networks run channels-last (``model.channels_last``) and compiled (``model.compile``):
        #: speed options; a run with one is not bit-identical to one without, so a protocol's
        #: recorded runs are not reused
        self.channels_last: set[str] = self.networks(args, "channels_last")
        self.compiled: set[str] = self.networks(args, "compile")
        #: teacher.cache of every distillation run: bit-exact, so not a protocol difference
        cache = getattr(args, "teacher_cache", None)
        self.teacher_cache: Path | None = Path(cache).resolve() if cache else None
        self.timings_file = self.dir / "timings.json"
        self.timings = (
            json.loads(self.timings_file.read_text()) if self.timings_file.exists() else {}
        )
        self.selection_file = self.dir / "selection.json"
        self.selection_v5_file = self.dir / "selection_v5.json"
        #: non-Hydra overrides among --hydra: they reach every multirun, so a reused teacher too
        self.hydra_job: list[str] = [
            a for a in args.hydra if not a.lstrip("+~").startswith("hydra")
        ]
        self.teacher_from: dict[int, Path] = {}
        for path in getattr(args, "teacher_from", None) or []:
            seed = self.check_teacher_run(Path(path))
            if seed in self.teacher_from:
                raise SystemExit(f"phantom_study: two --teacher-from runs of seed {seed}")
            self.teacher_from[seed] = Path(path).resolve()
        self.data_from: Path | None = None
        if getattr(args, "data_from", None):
            self.data_from = Path(args.data_from).resolve()
            self.check_phantoms(self.data_from)

    # -- helpers -----------------------------------------------------------------------------
    def hydra_extra(self, jobs: int | None = None) -> list[str]:
        """Hydra overrides of every multirun: the joblib launcher at ``jobs`` (default
        ``--jobs``) runs at a time (none for one at a time, or with the user's own
        ``--hydra hydra/launcher=...``), then the ``--hydra`` arguments."""
        jobs = self.jobs if jobs is None else jobs
        if self.own_launcher or jobs <= 1:
            return self.hydra_args
        return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", *self.hydra_args]

    def teachers_to_train(self) -> list[int]:
        """The teacher seeds with no finished run that no ``--teacher-from`` run provides."""
        out = self.runs / "teachers"
        return [
            s
            for s in self.teacher_seeds
            if s not in self.teacher_from
            and not (out / f"{TEACHER}-w{TEACHER_WIDTH}-s{s}" / "summary.json").exists()
        ]

    def side_by_side(self, stages: Sequence[str]) -> tuple[int, int] | None:
        """``(teacher jobs, student jobs)`` when the teachers stage leaves job slots free
        (v4's one teacher on two cores): the students alone need no teacher, so they train
        beside it instead of after it. ``None``: the stages run one after the other."""
        if not {"teachers", "students"} <= set(stages) or self.own_launcher:
            return None
        missing = self.teachers_to_train()
        if not missing or len(missing) >= self.jobs:
            return None
        return len(missing), self.jobs - len(missing)

    def teachers_and_students(self, teacher_jobs: int, student_jobs: int) -> None:
        """The teachers and students stages at once, on two threads (each its own sweeps)."""
        print(f"[study] teachers ({teacher_jobs} job(s)) beside students ({student_jobs})")
        with ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(self.stage_teachers, teacher_jobs),
                pool.submit(self.stage_students, student_jobs),
            ]
            for future in futures:
                future.result()  # the first failure is raised, after both have ended

    @property
    def common(self) -> list[str]:
        return [
            f"data.root={self.data}",
            f"data.cache_root={self.cache}",
            f"paths.runs_dir={self.runs}",
        ]

    @property
    def selected(self) -> str:
        """The new option chosen on validation (stage ``select``)."""
        if not self.selection_file.exists():
            raise SystemExit("phantom_study: run the options and select stages first")
        return json.loads(self.selection_file.read_text())["selected"]

    @property
    def teacher_seeds(self) -> list[int]:
        """The seeds the teachers stage trains: every seed, or the protocol's one teacher."""
        seed = self.protocol.teacher_seed
        return self.seeds if seed is None else [seed]

    def evaluate_each(self, runs: Sequence[Path], out_dir: str, *overrides: str) -> None:
        """``kdseg-eval`` of each run's best checkpoint into ``<run>/<out_dir>`` (one call a
        run: a sweep cannot pair each checkpoint with its own output folder); done ones are
        skipped."""
        for run in runs:
            if (run / out_dir / "summary.json").exists():
                continue
            self.run(
                "eval",
                f"experiment={self.protocol.experiment}",
                *self.common,
                *self.protocol.overrides,
                f"ckpt={run / 'checkpoints' / 'best.ckpt'}",
                f"output_dir={run / out_dir}",
                "threads=1",
                *overrides,
            )

    def skip_unless(self, stage: str, part: object) -> bool:
        """True (and says so) when the protocol lacks ``part``, the field a stage needs."""
        if part is None:
            print(f"[study] {stage}: not in this protocol, skipped", flush=True)
            return True
        return False

    def run(self, command: str, *args: str) -> None:
        """Run one kdseg console script, echoed, failing the study if it fails."""
        print(f"\n$ kdseg-{command} {' '.join(args)}", flush=True)
        subprocess.run([str(BIN / f"kdseg-{command}"), *args], check=True, cwd=ROOT)

    def timed(self, stage: str, n_runs: int, fn, *args) -> None:  # noqa: ANN001
        """Run a stage, record its wall time and run count in ``timings.json`` (summed over
        resumed attempts)."""
        start = time.perf_counter()
        fn(*args)
        seconds = time.perf_counter() - start

        def add(timings: dict) -> None:
            old = timings.get(stage, {})
            total, runs = old.get("seconds", 0.0) + seconds, old.get("runs", 0) + n_runs
            timings[stage] = {
                "seconds": round(total, 1),
                "runs": runs,
                "seconds_per_run": round(total / max(runs, 1), 1),
            }

        self.update_timings(add)
        print(f"[study] {stage}: {seconds:.0f} s for {n_runs} run(s)", flush=True)

    def update_timings(self, change: Callable[[dict], None]) -> None:
        """Apply ``change`` to ``timings.json`` as it is on disk now, under a lock, and write it
        atomically: two study scripts sharing a folder each add their own stages (each used to
        rewrite the file from the copy it read at start, and lost the other's entries)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".timings.lock", "w") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            on_disk = self.timings_file.exists()
            self.timings = json.loads(self.timings_file.read_text()) if on_disk else {}
            change(self.timings)
            write_text_atomic(self.timings_file, json.dumps(self.timings, indent=1) + "\n")

    def sweep(
        self,
        command: str,
        stage: str,
        experiment: str,
        sweeps: dict[str, Sequence],
        run_names: Iterable[str],
        extra: Sequence[str] = (),
        label: str | None = None,
        jobs: int | None = None,
    ) -> None:
        """One Hydra multirun into ``runs/<stage>``; skipped when every run has its summary.
        ``label``: the name its time is recorded under (default: ``stage``); ``jobs``: runs at
        a time instead of ``--jobs``.

        Only the missing runs' grid is swept again when it is a plain product (one sweep key
        with several values); a finished run swept again resumes at its end, trains nothing and
        keeps its summary (kdseg.lit.train.fit).
        """
        out = self.runs / stage
        missing = [n for n in run_names if not (out / n / "summary.json").exists()]
        if not missing:
            print(f"[study] {stage}: all runs done, skipped", flush=True)
            return
        grid = [f"{k}={','.join(str(v) for v in values)}" for k, values in sweeps.items()]
        self.timed(
            label or stage,
            len(missing),
            self.run,
            command,
            "-m",
            f"experiment={experiment}",
            *self.common,
            *self.protocol.overrides,
            *grid,
            *extra,
            f"hydra.sweep.dir={out}",
            *self.hydra_extra(jobs),
        )

    def distill_sweep(
        self,
        stage: str,
        student: str,
        methods: Sequence[str],
        seeds: Sequence[int],
        label: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        """``kdseg-distill -m`` of ``methods`` x ``seeds`` from the protocol's teacher into
        ``runs/<stage>``; ``extra``: overrides of these runs only (v7: their length)."""
        names = [
            f"{TEACHER}-{student}-w{STUDENT_WIDTH}-{m}-s{seed}"
            for m, seed in itertools.product(methods, seeds)
        ]
        self.sweep(
            "distill",
            stage,
            f"{self.protocol.experiment}_distill",
            {
                "teacher.name": [TEACHER],
                "student": [student],
                "student.width": [STUDENT_WIDTH],
                "distill": methods,
                "seed": seeds,
                "study.teacher_width": [TEACHER_WIDTH],
            },
            names,
            [
                *teacher_seed_override(self.protocol.teacher_seed),
                *self.layout("teacher", TEACHER),
                *self.layout("student", student),
                *([f"teacher.cache={self.teacher_cache}"] if self.teacher_cache else []),
                *extra,
            ],
            label,
        )

    def train_sweep(
        self,
        stage: str,
        model: str,
        width: float,
        seeds: Sequence[int],
        extra: Sequence[str] = (),
        jobs: int | None = None,
    ) -> None:
        names = [f"{model}-w{width}-s{s}" for s in seeds]
        self.sweep(
            "train",
            stage,
            self.protocol.experiment,
            {"model": [model], "model.width": [width], "seed": seeds},
            names,
            [*self.layout("model", model), *extra],
            jobs=jobs,
        )

    @staticmethod
    def networks(args: argparse.Namespace, option: str) -> set[str]:
        """The networks ``--channels-last`` / ``--compile`` name; others are refused."""
        named = set(getattr(args, option, None) or [])
        unknown = named - {TEACHER, STUDENT, SECOND_STUDENT}
        if unknown:
            raise SystemExit(
                f"phantom_study: --{option.replace('_', '-')} {','.join(sorted(unknown))}: not a "
                f"network this study trains ({TEACHER}, {STUDENT}, {SECOND_STUDENT})"
            )
        return named

    def layout(self, key: str, network: str) -> list[str]:
        """``<key>.channels_last=true`` / ``<key>.compile=true`` when ``--channels-last`` /
        ``--compile`` names ``network``."""
        return [
            f"{key}.{option}=true"
            for option, named in (("channels_last", self.channels_last), ("compile", self.compiled))
            if network in named
        ]

    def run_dirs(self) -> list[Path]:
        return sorted(p.parent for p in self.runs.glob("*/*/summary.json"))

    def evaluate(self, stage: str, runs: Sequence[Path], split: str, out_dir: str) -> None:
        """``kdseg-eval -m`` over the runs' best checkpoints that lack ``<run>/<out_dir>``."""
        todo = [
            r / "checkpoints" / "best.ckpt"
            for r in runs
            if not (r / out_dir / "summary.json").exists()
        ]
        if not todo:
            print(f"[study] {stage}: every run evaluated, skipped", flush=True)
            return
        self.timed(
            stage,
            len(todo),
            self.run,
            "eval",
            "-m",
            f"experiment={self.protocol.experiment}",
            *self.common,
            *self.protocol.overrides,
            f"split={split}",
            f"ckpt={','.join(str(c) for c in todo)}",
            f"hydra.sweep.dir={self.dir / f'.eval-sweep-{split}'}",
            "hydra.sweep.subdir=${hydra.job.num}",
            *self.hydra_extra(),
        )

    # -- stages ------------------------------------------------------------------------------
    def draw_phantoms(self) -> None:
        """kdseg-phantom of the protocol's cases into the data folder (drawn cases are kept)."""
        phantom = self.protocol.phantom
        args = phantom_args(self.data, phantom["n_cases"], phantom["seed"], phantom["params"])
        self.run("phantom", *args)

    def data_ready(self) -> bool:
        """The data stage's mark: the split the data folder uses, the study's own in it (v5 on;
        a study before 2026-12-07: the seeded one kdseg-prepare wrote there) or the seeded one
        kdseg-prepare persisted in the study's cache."""
        return (self.data / "kdseg_split.json").exists() or any(
            self.cache.glob("*/kdseg_split.json")
        )

    def stage_data(self) -> None:
        if self.data_ready():
            print("[study] data: present, skipped", flush=True)
            return

        phantom = self.protocol.phantom
        if self.data_from is not None:  # checked in __init__; kdseg-phantom below redraws nothing
            print(f"[study] data: copying {self.data_from}", flush=True)
            shutil.copytree(
                self.data_from,
                self.data,
                dirs_exist_ok=True,
                # kdseg-prepare makes its own split (into the study's cache); an older data
                # folder's .kdseg_cache is not read
                ignore=shutil.ignore_patterns("kdseg_split.json", ".kdseg_cache"),
            )

        def make() -> None:
            self.draw_phantoms()
            if self.protocol.fresh_from is not None:
                from kdseg.data.manifest import FOLDER_SPLIT_NAME, write_split

                n = self.protocol.fresh_from
                write_split(self.fresh_split()[0], self.data / FOLDER_SPLIT_NAME, fresh_from=n)
            self.run(
                "prepare",
                f"experiment={self.protocol.experiment}",
                *self.common,
                *self.protocol.overrides,
            )

        self.timed("data", phantom["n_cases"], make)

    def stage_teachers(self, jobs: int | None = None) -> None:
        """Train the teachers; a ``--teacher-from`` run is copied in instead (checked in
        ``__init__``), and the sweep then covers only the seeds still missing. ``jobs``: runs
        at a time (:meth:`side_by_side`)."""
        out = self.runs / "teachers"
        for seed, source in self.teacher_from.items():
            target = out / f"{TEACHER}-w{TEACHER_WIDTH}-s{seed}"
            if (target / "summary.json").exists():
                print(f"[study] teachers: {target.name} present, not copied", flush=True)
                continue
            if target.exists():
                raise SystemExit(f"phantom_study: {target} holds an unfinished run; remove it")
            print(f"[study] teachers: {target.name} copied from {source}", flush=True)
            copy_run(source, target, self.dir / ".partial" / "teachers" / target.name)
        seeds = self.teachers_to_train() or self.teacher_seeds
        overrides = self.protocol.teacher_overrides
        self.train_sweep("teachers", TEACHER, TEACHER_WIDTH, seeds, overrides, jobs)

    def stage_students(self, jobs: int | None = None) -> None:
        self.train_sweep("students", STUDENT, STUDENT_WIDTH, self.seeds, jobs=jobs)
        self.train_sweep("students", SECOND_STUDENT, STUDENT_WIDTH, self.few_seeds, jobs=jobs)

    def stage_options(self) -> None:
        self.distill_sweep("options", STUDENT, NEW_OPTIONS, [SELECT_SEED])

    def stage_select(self) -> None:
        """The new option with the best validation tumor Dice (never the test split)."""
        runs = [
            self.runs / "options" / f"{TEACHER}-{STUDENT}-w{STUDENT_WIDTH}-{m}-s{SELECT_SEED}"
            for m in NEW_OPTIONS
        ]
        self.evaluate("select", runs, "val", VAL_DIR)
        scores = {m: tumor_dice(run / VAL_DIR) for m, run in zip(NEW_OPTIONS, runs, strict=True)}
        selected = max(NEW_OPTIONS, key=lambda m: scores[m])
        text = json.dumps({"selected": selected, "val_tumor_dice": scores}, indent=1)
        write_text_atomic(self.selection_file, text + "\n")
        print(f"[study] selected {selected}: {scores}", flush=True)

    def stage_main(self) -> None:
        self.distill_sweep("main", STUDENT, [*MAIN_METHODS, self.selected], self.seeds)

    def stage_ablations(self) -> None:
        self.distill_sweep("ablations", STUDENT, list(ABLATIONS), self.few_seeds)

    def stage_mobilenet(self) -> None:
        self.distill_sweep("mobilenet", SECOND_STUDENT, ["emkd", self.selected], self.few_seeds)

    def stage_eval(self) -> None:
        """Every run but the options on the test split; with candidates (v5), only once the
        dev selection is made: no test number may exist before the choice."""
        runs = [r for r in self.run_dirs() if r.parent.name != "options"]
        if self.protocol.candidates and not self.selection_v5_file.exists():
            raise SystemExit("phantom_study: run the dev-select stage before the eval stage")
        self.evaluate("eval", runs, "test", EVAL_DIR)

    def stage_report(self) -> None:
        """``kdseg-report`` over the stage folders that exist (an interim report after the main
        stage has no ablation or MobileNetV2 folder yet)."""
        names = ("teachers", "students", "main", "candidates", "ablations", "mobilenet")
        stages = ",".join(str(self.runs / s) for s in names if (self.runs / s).is_dir())
        self.run("report", f"runs=[{stages}]", f"output_dir={self.dir / 'report'}")
        if self.protocol.candidates:
            self.endpoint()

    def stage_step_cost(self) -> None:
        """Time a plain student step and a distillation step on the same batch (in-process)."""
        result = {
            m: step_cost(
                self.runs,
                STUDENT,
                m,
                experiment=self.protocol.experiment,
                overrides=self.protocol.overrides,
                teacher_seed=self.protocol.teacher_seed,
            )
            for m in ("emkd", self.selected, "kd", "at", "cwd")
        }
        self.update_timings(lambda timings: timings.__setitem__("step_cost", result))
        print(json.dumps(result, indent=1))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    csv = lambda text: [t for t in text.split(",") if t]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", default=str(ROOT / ".study"), help="study folder (data, runs, report)"
    )
    parser.add_argument("--stages", type=csv, default=list(STAGES), help=f"comma list of {STAGES}")
    parser.add_argument("--seeds", type=lambda t: [int(s) for s in csv(t)], default=list(SEEDS))
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at a time (joblib launcher; 1: one by one)"
    )
    parser.add_argument(
        "--protocol", choices=sorted(PROTOCOLS), default="v3", help="docs/study.md, Protocol vN"
    )
    parser.add_argument("--fresh", action="store_true", help="delete the study folder first")
    parser.add_argument(
        "--teacher-from",
        action="append",
        metavar="RUN",
        help="a finished teacher run folder copied in instead of training it, after checking"
        " that its config.yaml is what the teachers stage would train (repeatable)",
    )
    parser.add_argument(
        "--data-from",
        metavar="DIR",
        help="a phantom (+ kdseg-prepare) folder copied in instead of regenerating it, after"
        " checking its phantom_truth.json against the protocol's phantoms",
    )
    parser.add_argument(
        "--runs-from",
        metavar="RUNS",
        help="an earlier study's runs/ folder: its finished runs of the stages this study shares"
        " are copied in (evaluations left behind) after checking each config.yaml",
    )
    parser.add_argument(
        "--channels-last",
        type=csv,
        default=[],
        metavar="NETS",
        help="networks (e.g. raunet,mobilenetv2) trained and run as teachers channels-last: a"
        " speed option (scripts/bench_speed_options.py), not bit-identical to the default",
    )
    parser.add_argument(
        "--compile",
        type=csv,
        default=[],
        metavar="NETS",
        help="networks (e.g. raunet) trained and run as teachers with torch.compile: a speed"
        " option (scripts/bench_speed_options.py), not bit-identical to the default",
    )
    parser.add_argument(
        "--teacher-cache",
        metavar="DIR",
        help="a folder for the teacher's outputs, shared by every distillation run "
        "(teacher.cache, kdseg/lit/teacher_cache.py): runs of one seed see the same batches, so"
        " the teacher runs once per batch; bit-identical results (v4: 10 GB a seed)",
    )
    parser.add_argument("--hydra", nargs="*", default=[], help="extra overrides for every multirun")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; valid: {', '.join(STAGES)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    # one OpenMP thread per run: on shared cores 2 threads made runs ~20x slower (docs/study.md)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.fresh and Path(args.dir).exists():
        shutil.rmtree(args.dir)
    study = Study(args)
    if args.runs_from:
        study.reuse_runs(Path(args.runs_from).resolve())
    started = time.perf_counter()
    together = study.side_by_side(args.stages)
    for stage in STAGES:  # always in this order, whatever order --stages lists them in
        if stage not in args.stages or (together and stage == "students"):
            continue
        if together and stage == "teachers":
            study.teachers_and_students(*together)
        else:
            getattr(study, f"stage_{stage.replace('-', '_')}")()
    print(f"[study] done in {time.perf_counter() - started:.0f} s; timings: {study.timings_file}")
    if study.teacher_cache is not None and study.teacher_cache.is_dir():
        size = sum(p.stat().st_size for p in study.teacher_cache.rglob("*") if p.is_file())
        print(
            f"[study] teacher cache: {size / 1e9:.1f} GB in {study.teacher_cache}; delete it "
            "once no more distillation runs of this study are to come"
        )


if __name__ == "__main__":
    main()
