"""The whole pipeline on phantom CT, as a user would run it: `make demo`.

phantom -> prepare -> train a teacher -> train a student alone, distil the same student from
the teacher with EMKD (the paper's recipe) and with the phantom study's selected option beyond
the paper (``docs/study_v4/selection.json``: emkd_balanced), side by side, from the same seed ->
evaluate all of them on the test split -> export the EMKD student to ONNX -> print a table of
per-class Dice and timings, next to what the phantom study measured for the same rows over five
paired seeds. Every step is one of the documented commands; the table's numbers come from their
output files.

The regime is the phantom study v4's (``conf/experiment/demo_study.yaml``: whole 15-50 mm
tumors, organ ROI at 1.5 mm per pixel with the organ-centred HU window, RA-UNet width 0.5 with
Adam 1e-3 -> ENet width 0.25), scaled down to fit ten minutes with the install: 14 cases and
192 steps instead of 60 and 1,024 (the study's teacher: 8,192), one seed instead of five.
"""

from __future__ import annotations

import csv
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
SEED = 1
CACHE = WORK / "cache"  # the slice cache and split, never inside the data (--fresh clears it)
DATA_ARGS = [
    "experiment=demo_study",
    f"data.root={DATA}",
    f"data.cache_root={CACHE}",
    f"paths.runs_dir={RUNS}",
]
COMMON = [*DATA_ARGS, f"seed={SEED}"]
TEACHER, TEACHER_WIDTH, STUDENT, STUDENT_WIDTH = "raunet", 0.5, "enet", 0.25
METHOD = "emkd"
PHANTOMS = "{tumor_mm_range: [15, 50], tumor_depth: 1}"  # study v4's (PHANTOM_V4)
TEACHER_LR = "1e-3"  # study v4's teacher recipe
EPOCHS, STEPS_PER_EPOCH = 3, 64  # conf/experiment/demo_study.yaml
#: the phantom study's report (scripts/phantom_study.py, committed when it has run)
STUDY_REPORT = ROOT / "docs" / "study_v4" / "report" / "report.csv"
#: the study's best option beyond the paper, chosen on the validation split before any test score
SELECTION = ROOT / "docs" / "study_v4" / "selection.json"
#: study v7's equal-compute confirmation (docs/study_v7/confirm.py, committed when it has run)
COMPUTE_RESULT = ROOT / "docs" / "study_v7" / "compute_v7.json"


def _argv(command: str, args: tuple[str, ...]) -> list[str]:
    print(f"\n$ {' '.join([command, *args])}", flush=True)
    return [str(BIN / command), *args]


def run(command: str, *args: str) -> float:
    """Run one kdseg command, echoing it; return its wall time in seconds.

    Two OpenMP threads unless ``OMP_NUM_THREADS`` says otherwise: the teacher's kernels, and so
    its result, depend on the thread count, so a machine with more cores would otherwise print
    another table than the README's (measured 2026-12-05: docs/demo.md)."""
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    subprocess.run(_argv(command, args), check=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def selected_method(path: Path = SELECTION) -> str | None:
    """The study's selected option beyond the paper (its ``selection.json``), if committed and
    readable; None otherwise (the demo then runs ``METHOD`` alone)."""
    try:
        selected = json.loads(path.read_text()).get("selected") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        print(f"demo: {path} is not a study selection (JSON with 'selected'); ignored")
        return None
    return str(selected) if selected else None


def run_dir(name: str) -> Path:
    return RUNS / "demo" / name


def _epochs_done(name: str) -> int:
    """Validation epochs logged so far by run ``name`` (its CSV log)."""
    path = run_dir(name) / "csv" / "metrics.csv"
    if not path.is_file():
        return 0
    with path.open() as f:
        return sum(1 for row in csv.DictReader(f) if row.get("val/dice_mean"))


def run_parallel(jobs: dict[str, tuple[str, ...]], epochs: int) -> dict[str, float]:
    """Run commands side by side, one CPU thread each; their output goes to ``<run>.log``.

    Prints each run's finished epochs as they come; returns each one's wall time.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs, logs, start = {}, {}, time.perf_counter()
    for name, (command, *args) in jobs.items():
        run_dir(name).mkdir(parents=True, exist_ok=True)
        logs[name] = (run_dir(name).parent / f"{name}.log").open("w")
        argv = _argv(command, tuple(args))
        log = logs[name]
        procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
    print(f"(side by side, one thread each; logs: {run_dir('x').parent}/<run>.log)", flush=True)
    seconds: dict[str, float] = {}
    shown = ""
    try:
        while len(seconds) < len(procs):
            time.sleep(2)
            for name, proc in procs.items():
                if name not in seconds and proc.poll() is not None:
                    seconds[name] = time.perf_counter() - start
                    logs[name].close()
                    if proc.returncode:
                        log = run_dir(name).parent / f"{name}.log"
                        print("\n".join(log.read_text().splitlines()[-5:]), file=sys.stderr)
                        raise SystemExit(f"demo: {name} failed (exit {proc.returncode})")
            line = " · ".join(f"{n}: epoch {_epochs_done(n)}/{epochs}" for n in procs)
            if line != shown:
                print(f"  [{time.perf_counter() - start:4.0f} s] {line}", flush=True)
                shown = line
    finally:  # a failure or Ctrl-C stops the runs beside it (each resumes on the next demo)
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    return seconds


def main() -> None:
    started = time.perf_counter()
    if "--fresh" in sys.argv and WORK.exists():
        shutil.rmtree(WORK)
    os.environ.setdefault("WANDB_MODE", "offline")
    times = {}
    # LiTS-like phantoms with the phantom study v4's tumors
    times["phantom"] = run(
        "kdseg-phantom",
        "dataset=lits",
        f"root={DATA}",
        "n_cases=14",
        "workers=2",
        "seed=0",
        f"params={PHANTOMS}",
    )
    times["prepare"] = run("kdseg-prepare", *DATA_ARGS, "workers=2")
    times["teacher"] = run(
        "kdseg-train",
        *COMMON,
        f"model={TEACHER}",
        f"model.width={TEACHER_WIDTH}",
        f"optim.lr={TEACHER_LR}",
        f"hydra.run.dir={run_dir('teacher')}",
    )
    teacher_ckpt = run_dir("teacher") / "checkpoints" / "best.ckpt"

    def distil(name: str, method: str) -> tuple[str, ...]:
        return (
            "kdseg-distill",
            *COMMON,
            f"teacher.ckpt={teacher_ckpt}",
            f"student={STUDENT}",
            f"student.width={STUDENT_WIDTH}",
            f"distill={method}",
            f"hydra.run.dir={run_dir(name)}",
        )

    selected = selected_method()
    extra = (
        {f"distilled-{selected}": distil(f"distilled-{selected}", selected)}
        if selected and selected != METHOD
        else {}
    )
    students = run_parallel(
        {
            "student": (
                "kdseg-train",
                *COMMON,
                f"model={STUDENT}",
                f"model.width={STUDENT_WIDTH}",
                f"hydra.run.dir={run_dir('student')}",
            ),
            "distilled": distil("distilled", METHOD),
            **extra,
        },
        EPOCHS,
    )
    times["students"] = max(students.values())
    methods = {"distilled": METHOD, **{name: selected for name in extra}}
    rows = []
    for name in ("teacher", "student", "distilled", *extra):
        ckpt = run_dir(name) / "checkpoints" / "best.ckpt"
        times[f"eval {name}"] = run("kdseg-eval", *DATA_ARGS, f"ckpt={ckpt}")
        summary = json.loads((run_dir(name) / "eval-test-full" / "summary.json").read_text())
        rows.append((name, methods.get(name, "-"), summary))
    onnx = run_dir("distilled") / "student.onnx"
    times["export"] = run(
        "kdseg-export",
        f"ckpt={run_dir('distilled') / 'checkpoints' / 'best.ckpt'}",
        f"output={onnx}",
    )
    print_table(rows, times, time.perf_counter() - started)


def _mean_std(stats: dict, metric: str) -> str:
    return f"{stats[metric + '_mean']:.3f} ± {stats[metric + '_std']:.3f}"


def study_lines(path: Path = STUDY_REPORT) -> list[str]:
    """What the phantom study measured for the demo's pair (RA-UNet -> ENet, ``METHOD``): the
    teacher, ENet alone, ENet + ``METHOD`` and ENet + the study's selected new option (its
    ``selection.json``) rows of its report, over paired seeds."""
    if not path.is_file():
        return [
            f"There is no paired result in {path.relative_to(ROOT)} yet; docs/study.md says "
            "where the study stands."
        ]
    with path.open() as f:
        rows = list(csv.DictReader(f))
    ours = lambda r: r["model"].startswith(STUDENT)  # noqa: E731
    selected = selected_method(path.parent.parent / "selection.json")  # its best new option
    methods = {METHOD} | ({selected} if selected else set())
    wanted = [
        r
        for r in rows
        if r["role"] == "teacher"
        or (r["role"] == "student" and ours(r))
        or (r["role"] == "distilled" and ours(r) and r["method"] in methods)
    ]
    if not any(r["role"] == "distilled" for r in wanted):
        return [f"{path.relative_to(ROOT)} has no {STUDENT} + {METHOD} row."]

    def num(row: dict, key: str, sign: str = "") -> str:
        return f"{float(row[key]):{sign}.3f}" if row.get(key) else "-"

    def cell(row: dict, name: str) -> str:  # one run has no spread: its value alone
        mean = num(row, f"lits_{name}_mean")
        one = row.get(f"lits_{name}_n") == "1"  # the runs the cell averages, as in the report
        return mean if one else f"{mean} ± {num(row, f'lits_{name}_std')}"

    lines = [
        f"The phantom study ({path.relative_to(ROOT)}), test split, mean ± std over seeds:",
        "",
        "| row | seeds | liver Dice | tumor Dice | tumor gap closed | tumor, paired "
        "difference to alone [95% t, seeds] |",
        "|---|---|---|---|---|---|",
    ]
    for r in wanted:
        paired = (
            f"{num(r, 'lits_tumor_paired_mean', '+')} [{num(r, 'lits_tumor_paired_low', '+')}, "
            f"{num(r, 'lits_tumor_paired_high', '+')}]"
            if r.get("lits_tumor_paired_mean")
            else "-"
        )
        gap = f"{float(r['lits_gap_closed']):.0%}" if r.get("lits_gap_closed") else "-"
        lines.append(
            f"| {r['label']} | {r['seeds']} | {cell(r, 'organ')} | {cell(r, 'tumor')} | {gap} "
            f"| {paired} |"
        )
    lines += [
        "",
        "(The interval is over the seeds, on the study's test cases: it leaves out how the "
        "difference would move on other cases. README, 'The phantom study', gives it with the "
        "cases resampled too.)",
    ]
    return lines


def compute_lines(path: Path = COMPUTE_RESULT) -> list[str]:
    """Study v7's confirmation (when committed): 1,024 distillation steps against ENet alone
    trained for the same CPU time (2,560 steps), and ENet alone at 4,096 steps beside the
    teacher, on the cases no choice had seen."""
    if not path.is_file():
        return []
    result = json.loads(path.read_text())
    d, low, high = result["comparisons"]["equal compute: region 1024 - alone 2560"]["paired"]
    alone = result["dice"]["alone 4096"]
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    verdict = "above zero" if low > 0 else "not above zero"
    return [
        "",
        f"Study v7 ({name}; {len(alone)} paired seeds, {result.get('n_cases', '?')} cases no "
        f"choice had seen): at equal CPU time, ENet + emkd_balanced_region (1,024 steps) minus "
        f"ENet alone (2,560 steps): tumor Dice {d:+.3f} [{low:+.3f}, {high:+.3f}], {verdict}. "
        f"ENet alone trained 4,096 steps: {sum(alone.values()) / len(alone):.3f}; the teacher: "
        f"{result['teacher']:.3f}.",
    ]


def print_table(rows: list[tuple[str, str, dict]], times: dict[str, float], total: float) -> None:
    """Markdown table of the demo's results, read from the eval summaries."""
    print(
        "\n## kdseg demo: phantom LiTS, test split, full-volume 3D Dice (mean ± std over cases)\n"
    )
    print(
        "| model | network | method | liver Dice | tumor Dice (cases with tumor) "
        "| tumor Dice (global) |"
    )
    print("|---|---|---|---|---|---|")
    dice: dict[str, tuple[float, float]] = {}  # (liver, tumor)
    for name, method, summary in rows:
        s = summary["summary"]
        model = f"{summary['model']['name']} (width {summary['model']['width']})"
        organ = _mean_std(s["organ"], "dice")
        t = s["tumor"]  # the study's tumor metric: per case, over the cases that have tumor
        tumor = f"{t['dice_per_case_nonempty']:.3f} ± {t['dice_per_case_nonempty_std']:.3f}"
        dice[name] = (s["organ"]["dice_mean"], t["dice_per_case_nonempty"])
        print(f"| {name} | {model} | {method} | {organ} | {tumor} | {t['dice_global']:.3f} |")
    tumor = rows[0][2]["summary"]["tumor"]
    (liver_a, tumor_a) = dice["student"]
    deltas = "; ".join(
        f"{name} minus alone: liver {liver - liver_a:+.3f}, tumor {tum - tumor_a:+.3f}"
        for name, (liver, tum) in dice.items()
        if name.startswith("distilled")
    )
    print(
        f"\nOne seed, {tumor.get('n_cases', 'the')} test cases ({tumor.get('n_gt_empty', 0)} "
        f"without tumor), {EPOCHS * STEPS_PER_EPOCH} steps. {deltas}. One run cannot tell a "
        "method's effect from seed noise; that takes the phantom study's paired seeds "
        "(docs/study.md):\n"
    )
    print("\n".join(study_lines() + compute_lines()))
    print("\nstep times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print(f"demo wall time: {total:.0f} s")


if __name__ == "__main__":
    main()
