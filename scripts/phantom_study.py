"""The phantom study, regenerated with one command: does EMKD make ENet better on tumors?

Stages, each ONE Hydra multirun (``-m``; ``--jobs`` runs at a time), because a
stage needs the previous one's checkpoints and Hydra cannot chain sweeps:

    data        kdseg-phantom (LiTS-like) + kdseg-prepare
    teachers    kdseg-train   -m model=raunet,pspnet,unetpp           x seeds
    students    kdseg-train   -m model=enet,mobilenetv2,resnet18       x seeds   (students alone)
    emkd        kdseg-distill -m every teacher x every student, EMKD   x seeds
    baselines   kdseg-distill -m distill=kd,at,cwd,skd on raunet -> enet x seeds
    ablations   kdseg-distill -m distill=emkd_pmd,emkd_imd,... on raunet -> enet x seeds
    eval        kdseg-eval    -m ckpt=<every run's best.ckpt without an evaluation yet>
    report      kdseg-report  over every run folder -> <study>/report/report.md and .csv
    step-cost   time of one training step: plain student vs distillation (same batch, same student)

The protocol is conf/experiment/phantom_study.yaml (+ phantom_study_distill.yaml) and the
constants below; it was fixed before any result was seen. A stage whose runs all have a
``summary.json`` is skipped, and a half-finished run resumes from its ``last.ckpt``, so rerunning
the command after an interruption continues where it stopped. Wall times per stage go to
``<study>/timings.json``.

    python scripts/phantom_study.py                       # everything, into .study/
    python scripts/phantom_study.py --teachers raunet --students enet \\
        --stages data,teachers,students,emkd,eval,report --teacher-seed 1    # the key comparison

Runs go ``--jobs`` at a time (default 2, one per core, one OpenMP thread each) through Hydra's
joblib launcher. On a cluster, pass Hydra launcher options through ``--hydra`` instead, e.g.
``--hydra hydra/launcher=submitit_slurm hydra.launcher.partition=gpu`` (each run becomes a
SLURM job; stages still run in order). For DDP inside a multirun use ``trainer=ddp_fork``:
plain ``ddp`` relaunches the whole sweep in its child process.
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

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TEACHERS = ("raunet", "pspnet", "unetpp")
STUDENTS = ("enet", "mobilenetv2", "resnet18")
SEEDS = (1, 2, 3)
TEACHER_WIDTH = 0.25  # 1.3-2.9 M parameters: 2-100x the students below
STUDENT_WIDTH = 0.25  # ENet 0.025 M, MobileNetV2 0.16 M, ResNet18 0.70 M
BASELINES = ("kd", "at", "cwd", "skd")
ABLATIONS = ("emkd_pmd", "emkd_imd", "emkd_rad", "emkd_pmd_imd", "emkd_pmd_rad", "emkd_imd_rad")
PAIR_FOR_COMPARISONS = ("raunet", "enet")  # baselines and ablations: the paper's best pair
PHANTOM = {  # conspicuous tumors, so that CPU-sized teachers learn them in 256 steps
    "n_cases": 40,
    "seed": 0,
    "params": "{size_range: [112, 128], slices_range: [24, 32], max_tumors: 5, "
    "p_no_tumor: 0.05, tumor_mm_range: [20, 50], tumor_contrast: 2.5}",
}
STAGES = (
    "data",
    "teachers",
    "students",
    "emkd",
    "baselines",
    "ablations",
    "eval",
    "report",
    "step-cost",
)
EVAL_DIR = "eval-test-full"


class Study:
    """Paths and command lines of one study folder; each ``stage_*`` method runs one stage."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.dir = Path(args.dir).resolve()
        self.data = self.dir / "data" / "lits"
        self.runs = self.dir / "runs"
        self.teachers: list[str] = args.teachers
        self.students: list[str] = args.students
        self.seeds: list[int] = args.seeds
        self.teacher_seed: int | None = args.teacher_seed
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

    # -- helpers -----------------------------------------------------------------------------
    @property
    def common(self) -> list[str]:
        return [f"data.root={self.data}", f"paths.runs_dir={self.runs}"]

    def run(self, command: str, *args: str) -> None:
        """Run one kdseg console script, echoed, failing the study if it fails."""
        print(f"\n$ kdseg-{command} {' '.join(args)}", flush=True)
        subprocess.run([str(BIN / f"kdseg-{command}"), *args], check=True, cwd=ROOT)

    def timed(self, stage: str, n_runs: int, fn, *args) -> None:  # noqa: ANN001
        """Run a stage, record its wall time and run count in ``timings.json``."""
        start = time.perf_counter()
        fn(*args)
        seconds = time.perf_counter() - start
        self.timings[stage] = {
            "seconds": round(seconds, 1),
            "runs": n_runs,
            "seconds_per_run": round(seconds / max(n_runs, 1), 1),
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
    ) -> None:
        """One Hydra multirun into ``runs/<stage>``; skipped when every run has its summary."""
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
            f"hydra.sweep.dir={out}",
            *self.hydra_extra,
        )

    def distill_sweep(
        self, stage: str, teachers: Sequence[str], students: Sequence[str], methods: Sequence[str]
    ) -> None:
        teacher_seed = (
            [] if self.teacher_seed is None else [f"study.teacher_seed={self.teacher_seed}"]
        )
        self.hydra_extra = [*self.hydra_extra, *teacher_seed]
        names = [
            f"{t}-{s}-w{STUDENT_WIDTH}-{m}-s{seed}"
            for t, s, m, seed in itertools.product(teachers, students, methods, self.seeds)
        ]
        self.sweep(
            "distill",
            stage,
            "phantom_study_distill",
            {
                "teacher.name": teachers,
                "student": students,
                "student.width": [STUDENT_WIDTH],
                "distill": methods,
                "seed": self.seeds,
                "study.teacher_width": [TEACHER_WIDTH],
            },
            names,
        )
        self.hydra_extra = [a for a in self.hydra_extra if a not in teacher_seed]

    def train_sweep(
        self, stage: str, models: Sequence[str], width: float, seeds: Sequence[int] | None = None
    ) -> None:
        seeds = list(seeds or self.seeds)
        names = [f"{m}-w{width}-s{s}" for m, s in itertools.product(models, seeds)]
        self.sweep(
            "train",
            stage,
            "phantom_study",
            {"model": models, "model.width": [width], "seed": seeds},
            names,
        )

    def run_dirs(self) -> list[Path]:
        return sorted(p.parent for p in self.runs.glob("*/*/summary.json"))

    # -- stages ------------------------------------------------------------------------------
    def stage_data(self) -> None:
        if (self.data / "kdseg_split.json").exists():
            print("[study] data: present, skipped", flush=True)
            return

        def make() -> None:
            self.run(
                "phantom",
                "dataset=lits",
                f"root={self.data}",
                f"n_cases={PHANTOM['n_cases']}",
                f"seed={PHANTOM['seed']}",
                f"params={PHANTOM['params']}",
            )
            self.run("prepare", "experiment=phantom_study", *self.common)

        self.timed("data", PHANTOM["n_cases"], make)

    def stage_teachers(self) -> None:
        seeds = self.seeds if self.teacher_seed is None else [self.teacher_seed]
        self.train_sweep("teachers", self.teachers, TEACHER_WIDTH, seeds)

    def stage_students(self) -> None:
        self.train_sweep("students", self.students, STUDENT_WIDTH)

    def stage_emkd(self) -> None:
        self.distill_sweep("distilled", self.teachers, self.students, ["emkd"])

    def stage_baselines(self) -> None:
        teacher, student = PAIR_FOR_COMPARISONS
        self.distill_sweep("baselines", [teacher], [student], list(BASELINES))

    def stage_ablations(self) -> None:
        teacher, student = PAIR_FOR_COMPARISONS
        self.distill_sweep("ablations", [teacher], [student], list(ABLATIONS))

    def stage_eval(self) -> None:
        todo = [
            r / "checkpoints" / "best.ckpt"
            for r in self.run_dirs()
            if not (r / EVAL_DIR / "summary.json").exists()
        ]
        if not todo:
            print("[study] eval: every run evaluated, skipped", flush=True)
            return
        self.timed(
            "eval",
            len(todo),
            self.run,
            "eval",
            "-m",
            "experiment=phantom_study",
            *self.common,
            f"ckpt={','.join(str(c) for c in todo)}",
            f"hydra.sweep.dir={self.dir / '.eval-sweep'}",
            "hydra.sweep.subdir=${hydra.job.num}",
            *self.hydra_extra,
        )

    def stage_report(self) -> None:
        self.run("report", f"runs=[{self.runs}]", f"output_dir={self.dir / 'report'}")

    def stage_step_cost(self) -> None:
        """Time a plain student step and a distillation step on the same batch (in-process)."""
        result = step_cost(self.runs, self.teachers[0], self.students[0])
        self.timings["step_cost"] = result
        self.timings_file.write_text(json.dumps(self.timings, indent=1) + "\n")
        print(json.dumps(result, indent=1))


def step_cost(
    runs: Path, teacher: str, student: str, repeats: int = 8, threads: int = 1
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
    ckpt = next(runs.glob(f"teachers/{teacher}-*/checkpoints/best.ckpt"))
    data_root = runs.parent / "data" / "lits"
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = to_dict(
            compose(
                "distill",
                overrides=[
                    "experiment=phantom_study_distill",
                    f"data.root={data_root}",
                    f"teacher.ckpt={ckpt}",
                    f"student={student}",
                    f"student.width={STUDENT_WIDTH}",
                    "distill=emkd",
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
        "teacher": teacher,
        "student": student,
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
    parser.add_argument("--teachers", type=csv, default=list(TEACHERS))
    parser.add_argument("--students", type=csv, default=list(STUDENTS))
    parser.add_argument("--seeds", type=lambda t: [int(s) for s in csv(t)], default=list(SEEDS))
    parser.add_argument(
        "--teacher-seed",
        type=int,
        default=None,
        help="distil every seed from this teacher seed (default: the same seed)",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at a time (joblib launcher; 1: one by one)"
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
