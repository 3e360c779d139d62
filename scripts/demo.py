"""The whole pipeline on phantom CT, as a user would run it: `make demo`.

phantom -> prepare -> train a teacher -> train a student alone -> distill the student from the
teacher (EMKD) -> evaluate all three on the test split -> export the distilled student to
ONNX -> print a table of per-class Dice, parameters and timings. Every step is one of the
documented commands; the table's numbers come from their output files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORK = Path(os.environ.get("KDSEG_DEMO_DIR", ROOT / ".demo"))
DATA = WORK / "data" / "lits"
RUNS = WORK / "runs"
COMMON = ["experiment=demo", f"data.root={DATA}", f"paths.runs_dir={RUNS}"]
TEACHER, STUDENT = "raunet", "enet"


def run(command: str, *args: str) -> float:
    """Run one kdseg command, echoing it; return its wall time in seconds."""
    argv = [str(BIN / command), *args]
    print(f"\n$ {' '.join([command, *args])}", flush=True)
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT)
    return time.perf_counter() - start


def run_dir(name: str) -> Path:
    return RUNS / "demo" / name


def main() -> None:
    started = time.perf_counter()
    if "--fresh" in sys.argv and WORK.exists():
        shutil.rmtree(WORK)
    os.environ.setdefault("WANDB_MODE", "offline")
    times = {}
    times["phantom"] = run(
        "kdseg-phantom",
        "dataset=lits",
        f"root={DATA}",
        "n_cases=14",
        "workers=2",
        # conspicuous tumors (as in the phantom study), learnable in a few CPU minutes
        "params={size_range: [160, 192], slices_range: [40, 56], max_tumors: 5, "
        "p_no_tumor: 0.05, tumor_mm_range: [20, 50], tumor_contrast: 2.5}",
    )
    times["prepare"] = run("kdseg-prepare", *COMMON, "workers=2")
    times["teacher"] = run(
        "kdseg-train",
        *COMMON,
        f"model={TEACHER}",
        "model.width=0.5",
        f"hydra.run.dir={run_dir('teacher')}",
    )
    teacher_ckpt = run_dir("teacher") / "checkpoints" / "best.ckpt"
    times["student"] = run(
        "kdseg-train",
        *COMMON,
        f"model={STUDENT}",
        "model.width=1.0",
        f"hydra.run.dir={run_dir('student')}",
    )
    times["distill"] = run(
        "kdseg-distill",
        *COMMON,
        f"teacher.ckpt={teacher_ckpt}",
        f"student={STUDENT}",
        "student.width=1.0",
        "distill=emkd",
        f"hydra.run.dir={run_dir('distilled')}",
    )
    rows = []
    for name in ("teacher", "student", "distilled"):
        ckpt = run_dir(name) / "checkpoints" / "best.ckpt"
        times[f"eval {name}"] = run("kdseg-eval", *COMMON, f"ckpt={ckpt}")
        summary = json.loads((run_dir(name) / "eval-test-full" / "summary.json").read_text())
        rows.append((name, summary))
    onnx = run_dir("distilled") / "student.onnx"
    times["export"] = run(
        "kdseg-export",
        f"ckpt={run_dir('distilled') / 'checkpoints' / 'best.ckpt'}",
        f"output={onnx}",
    )
    print_table(rows, times, time.perf_counter() - started)


def _mean_std(stats: dict, metric: str) -> str:
    return f"{stats[metric + '_mean']:.3f} ± {stats[metric + '_std']:.3f}"


def print_table(rows: list, times: dict[str, float], total: float) -> None:
    """Markdown table of the demo's results, read from the eval summaries."""
    print(
        "\n## kdseg demo: phantom LiTS, test split, full-volume 3D Dice (mean ± std over cases)\n"
    )
    print("| model | network | liver Dice | tumor Dice | tumor Dice (global) |")
    print("|---|---|---|---|---|")
    for name, summary in rows:
        s = summary["summary"]
        model = f"{summary['model']['name']} (width {summary['model']['width']})"
        organ, tumor = (_mean_std(s[c], "dice") for c in ("organ", "tumor"))
        print(f"| {name} | {model} | {organ} | {tumor} | {s['tumor']['dice_global']:.3f} |")
    print("\nstep times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"demo wall time: {total:.0f} s")


if __name__ == "__main__":
    main()
