"""The phantom study v3, regenerated with one command: does distillation make ENet better on
tumors than the same ENet trained alone, seed for seed?

Stages, each ONE Hydra multirun (``-m``; ``--jobs`` runs at a time), because a stage needs the
previous one's checkpoints and Hydra cannot chain sweeps:

    data        kdseg-phantom (LiTS-like) + kdseg-prepare
    teachers    kdseg-train   -m model=raunet (width 0.5)                 x 5 seeds
    students    kdseg-train   -m model=enet x 5 seeds, mobilenetv2 x 3 seeds   (students alone)
    options     kdseg-distill -m the new (beyond-the-paper) options, seed 1, raunet -> enet
    select      kdseg-eval split=val of the options; the best by validation tumor Dice
    main        kdseg-distill -m emkd, the selected option, kd, at, cwd   x 5 seeds
    ablations   kdseg-distill -m the six EMKD ablations                   x 3 seeds
    mobilenet   kdseg-distill -m emkd, the selected option, raunet -> mobilenetv2 x 3 seeds
    eval        kdseg-eval    -m ckpt=<every run's best.ckpt without a test evaluation yet>
    report      kdseg-report  -> <study>/report/report.md and .csv (paired differences)
    step-cost   time of one training step: plain student vs distillation (same batch)

Under kdseg's seeding the run of seed s with a teacher and the run of seed s without one start
from bit-identical student weights and see the same batches (``init_weights_sha256`` in each
``summary.json``): every seed is a paired comparison, and the report gives the per-seed
difference with a 95% interval. The distilled run of seed s learns from the teacher of seed s.

The protocol is ``conf/experiment/phantom_study_v3.yaml`` (+ ``phantom_study_v3_distill.yaml``)
and the constants below, fixed from pilots of the teacher and of the student alone before any
distillation run (docs/study.md, "Protocol v3"). A stage whose runs all have a
``summary.json`` is skipped, and a half-finished run resumes from its ``last.ckpt``, so rerunning
the command after an interruption continues where it stopped. Wall times per stage go to
``<study>/timings.json``.

    python scripts/phantom_study.py                       # everything, into .study/
    python scripts/phantom_study.py --stages data,teachers,students   # a subset

Runs go ``--jobs`` at a time (default 2, one per core, one OpenMP thread each) through Hydra's
joblib launcher. On a cluster, pass Hydra launcher options through ``--hydra`` instead, e.g.
``--hydra hydra/launcher=submitit_slurm hydra.launcher.partition=gpu`` (each run becomes a
SLURM job; stages still run in order). For DDP inside a multirun use ``trainer=ddp_fork``:
plain ``ddp`` relaunches the whole sweep in its child process. Protocol v2 (the 2026-11-26
table in docs/study.md) is reproducible from the commit that reported it (3d1dba6).
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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

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


class Protocol(NamedTuple):
    """What differs between study protocols: the experiment config (``conf/experiment/<name>``
    and ``<name>_distill``), the phantoms, and overrides of the teachers' training only."""

    experiment: str
    phantom: dict = PHANTOM  # (never mutated)
    teacher_overrides: tuple[str, ...] = ()


#: every protocol the script can run, each fixed in docs/study.md before its distillation runs
PROTOCOLS = {"v3": Protocol(EXPERIMENT)}
STAGES = (
    "data",
    "teachers",
    "students",
    "options",
    "select",
    "main",
    "ablations",
    "mobilenet",
    "eval",
    "report",
    "step-cost",
)
EVAL_DIR = "eval-test-full"
VAL_DIR = "eval-val-full"


class Study:
    """Paths and command lines of one study folder; each ``stage_*`` method runs one stage."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.dir = Path(args.dir).resolve()
        self.protocol: Protocol = PROTOCOLS[args.protocol]
        self.data = self.dir / "data" / "lits"
        self.runs = self.dir / "runs"
        self.seeds: list[int] = args.seeds
        self.few_seeds: list[int] = [s for s in FEW_SEEDS if s in self.seeds] or self.seeds[:3]
        own_launcher = any(a.startswith("hydra/launcher=") for a in args.hydra)
        self.launcher: list[str] = (
            []
            if own_launcher or args.jobs <= 1
            else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
        )
        self.hydra_extra: list[str] = [*self.launcher, *args.hydra]
        self.timings_file = self.dir / "timings.json"
        self.timings = (
            json.loads(self.timings_file.read_text()) if self.timings_file.exists() else {}
        )
        self.selection_file = self.dir / "selection.json"

    # -- helpers -----------------------------------------------------------------------------
    @property
    def common(self) -> list[str]:
        return [f"data.root={self.data}", f"paths.runs_dir={self.runs}"]

    @property
    def selected(self) -> str:
        """The new option chosen on validation (stage ``select``)."""
        if not self.selection_file.exists():
            raise SystemExit("phantom_study: run the options and select stages first")
        return json.loads(self.selection_file.read_text())["selected"]

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
        old = self.timings.get(stage, {})
        total, runs = old.get("seconds", 0.0) + seconds, old.get("runs", 0) + n_runs
        self.timings[stage] = {
            "seconds": round(total, 1),
            "runs": runs,
            "seconds_per_run": round(total / max(runs, 1), 1),
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        self.timings_file.write_text(json.dumps(self.timings, indent=1) + "\n")
        print(f"[study] {stage}: {seconds:.0f} s for {n_runs} run(s)", flush=True)

    def sweep(
        self,
        command: str,
        stage: str,
        experiment: str,
        sweeps: dict[str, Sequence],
        run_names: Iterable[str],
        extra: Sequence[str] = (),
    ) -> None:
        """One Hydra multirun into ``runs/<stage>``; skipped when every run has its summary.

        Only the missing runs' grid is swept again when it is a plain product (one sweep key
        with several values); finished runs are skipped by their summary either way.
        """
        out = self.runs / stage
        missing = [n for n in run_names if not (out / n / "summary.json").exists()]
        if not missing:
            print(f"[study] {stage}: all runs done, skipped", flush=True)
            return
        grid = [f"{k}={','.join(str(v) for v in values)}" for k, values in sweeps.items()]
        self.timed(
            stage,
            len(missing),
            self.run,
            command,
            "-m",
            f"experiment={experiment}",
            *self.common,
            *grid,
            *extra,
            f"hydra.sweep.dir={out}",
            *self.hydra_extra,
        )

    def distill_sweep(
        self, stage: str, student: str, methods: Sequence[str], seeds: Sequence[int]
    ) -> None:
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
        )

    def train_sweep(
        self,
        stage: str,
        model: str,
        width: float,
        seeds: Sequence[int],
        extra: Sequence[str] = (),
    ) -> None:
        names = [f"{model}-w{width}-s{s}" for s in seeds]
        self.sweep(
            "train",
            stage,
            self.protocol.experiment,
            {"model": [model], "model.width": [width], "seed": seeds},
            names,
            extra,
        )

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
            f"split={split}",
            f"ckpt={','.join(str(c) for c in todo)}",
            f"hydra.sweep.dir={self.dir / f'.eval-sweep-{split}'}",
            "hydra.sweep.subdir=${hydra.job.num}",
            *self.hydra_extra,
        )

    # -- stages ------------------------------------------------------------------------------
    def stage_data(self) -> None:
        if (self.data / "kdseg_split.json").exists():
            print("[study] data: present, skipped", flush=True)
            return

        phantom = self.protocol.phantom

        def make() -> None:
            self.run(
                "phantom",
                "dataset=lits",
                f"root={self.data}",
                f"n_cases={phantom['n_cases']}",
                f"seed={phantom['seed']}",
                f"params={phantom['params']}",
            )
            self.run("prepare", f"experiment={self.protocol.experiment}", *self.common)

        self.timed("data", phantom["n_cases"], make)

    def stage_teachers(self) -> None:
        overrides = self.protocol.teacher_overrides
        self.train_sweep("teachers", TEACHER, TEACHER_WIDTH, self.seeds, overrides)

    def stage_students(self) -> None:
        self.train_sweep("students", STUDENT, STUDENT_WIDTH, self.seeds)
        self.train_sweep("students", SECOND_STUDENT, STUDENT_WIDTH, self.few_seeds)

    def stage_options(self) -> None:
        self.distill_sweep("options", STUDENT, NEW_OPTIONS, [SELECT_SEED])

    def stage_select(self) -> None:
        """The new option with the best validation tumor Dice (never the test split)."""
        runs = [
            self.runs / "options" / f"{TEACHER}-{STUDENT}-w{STUDENT_WIDTH}-{m}-s{SELECT_SEED}"
            for m in NEW_OPTIONS
        ]
        self.evaluate("select", runs, "val", VAL_DIR)
        scores = {}
        for method, run in zip(NEW_OPTIONS, runs, strict=True):
            summary = json.loads((run / VAL_DIR / "summary.json").read_text())
            scores[method] = float(summary["summary"]["tumor"]["dice_per_case_nonempty"])
        selected = max(NEW_OPTIONS, key=lambda m: scores[m])
        text = json.dumps({"selected": selected, "val_tumor_dice": scores}, indent=1)
        self.selection_file.write_text(text + "\n")
        print(f"[study] selected {selected}: {scores}", flush=True)

    def stage_main(self) -> None:
        self.distill_sweep("main", STUDENT, [*MAIN_METHODS, self.selected], self.seeds)

    def stage_ablations(self) -> None:
        self.distill_sweep("ablations", STUDENT, list(ABLATIONS), self.few_seeds)

    def stage_mobilenet(self) -> None:
        self.distill_sweep("mobilenet", SECOND_STUDENT, ["emkd", self.selected], self.few_seeds)

    def stage_eval(self) -> None:
        runs = [r for r in self.run_dirs() if r.parent.name != "options"]
        self.evaluate("eval", runs, "test", EVAL_DIR)

    def stage_report(self) -> None:
        stages = ",".join(
            str(self.runs / s) for s in ("teachers", "students", "main", "ablations", "mobilenet")
        )
        self.run("report", f"runs=[{stages}]", f"output_dir={self.dir / 'report'}")

    def stage_step_cost(self) -> None:
        """Time a plain student step and a distillation step on the same batch (in-process)."""
        result = {
            m: step_cost(self.runs, STUDENT, m, experiment=self.protocol.experiment)
            for m in ("emkd", self.selected, "kd", "at", "cwd")
        }
        self.timings["step_cost"] = result
        self.timings_file.write_text(json.dumps(self.timings, indent=1) + "\n")
        print(json.dumps(result, indent=1))


def step_cost(
    runs: Path,
    student: str,
    method: str = "emkd",
    repeats: int = 8,
    threads: int = 1,
    experiment: str = EXPERIMENT,
    overrides: Sequence[str] = (),
) -> dict[str, float]:
    """Median seconds per training step (forward, loss, backward, Adam) of the same student on
    the same batch: alone (``SegmentationModule``) and distilled with EMKD (``DistillationModule``).

    Uses the engine's own ``training_step`` (logging is a no-op outside a Trainer), the study's
    data and a trained teacher, so the ratio is what a study run pays per step. One thread by
    default: on shared cores, OpenMP threads waiting for each other swamp the arithmetic.
    """
    import warnings
    from statistics import median

    import torch
    from hydra import compose, initialize_config_dir

    import kdseg.config  # noqa: F401
    from kdseg.cli import CONFIG_PATH, to_dict
    from kdseg.data.dataset import resolve_data
    from kdseg.lit.distill import DistillationModule
    from kdseg.lit.segment import SegmentationModule

    warnings.filterwarnings("ignore", message=".*self.log.*")
    torch.set_num_threads(threads)
    ckpt = next(runs.glob(f"teachers/{TEACHER}-*/checkpoints/best.ckpt"))
    data_root = runs.parent / "data" / "lits"
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = to_dict(
            compose(
                "distill",
                overrides=[
                    f"experiment={experiment}_distill",
                    f"data.root={data_root}",
                    f"teacher.ckpt={ckpt}",
                    f"student={student}",
                    f"student.width={STUDENT_WIDTH}",
                    f"distill={method}",
                    *overrides,
                ],
            )
        )
    setup = resolve_data(cfg["data"])
    datamodule = setup.datamodule(seed=0)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    common = {
        "model": cfg["student"],
        "data": setup.info(),
        "optim": cfg["optim"],
        "loss": cfg["loss"],
    }
    modules = {
        "student": SegmentationModule(**common),
        "distill": DistillationModule(**common, teacher=cfg["teacher"], distill=cfg["distill"]),
    }
    seconds: dict[str, list[float]] = {name: [] for name in modules}
    optimizers = {
        n: torch.optim.Adam([p for p in m.parameters() if p.requires_grad])
        for n, m in modules.items()
    }
    for _ in range(repeats):  # alternate, so load changes on shared cores hit both alike
        for name, module in modules.items():
            module.train()
            start = time.perf_counter()
            loss = module.training_step(batch, 0)
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()
            seconds[name].append(time.perf_counter() - start)
    plain, distill = (median(seconds[n][2:]) for n in ("student", "distill"))
    return {
        "teacher": TEACHER,
        "student": student,
        "method": method,
        "batch": list(batch["image"].shape),
        "student_step_s": round(plain, 4),
        "distill_step_s": round(distill, 4),
        "ratio": round(distill / plain, 2),
        "threads": torch.get_num_threads(),
    }


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
    started = time.perf_counter()
    for stage in STAGES:  # always in this order, whatever order --stages lists them in
        if stage in args.stages:
            getattr(study, f"stage_{stage.replace('-', '_')}")()
    print(f"[study] done in {time.perf_counter() - started:.0f} s; timings: {study.timings_file}")


if __name__ == "__main__":
    main()
