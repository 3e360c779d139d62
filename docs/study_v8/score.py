"""Study v8's endpoint table (docs/study_v8/protocol.md, written 2026-12-05 08:42 UTC before
any v8 run): ENet alone against ENet + ``emkd_balanced_region``, both 6 labeled cases and
8,192 steps, seeds 1-5 paired, on the 24 new cases 204-227 (``run.sh eval`` scores them).

    PYTHONPATH=. python docs/study_v8/score.py --dir /work/v8few [--interim]

Refuses to compute the endpoint before all five seeds are scored, unless ``--interim`` (the
protocol's label for an earlier look, which it then carries). Writes ``endpoint.json`` and
``endpoint.md`` into ``--dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from study_v5 import endpoint_row  # noqa: E402
from unlabeled_base import init_hash  # noqa: E402

SEEDS = (1, 2, 3, 4, 5)
#: issue 11's "real gap" on the test cases: the precondition of scoring the target
TEACHER_MIN, GAP_MIN = 0.5, 0.15
ROWS = {"alone": "alone-8192", "emkd_balanced_region": "region-8192"}
#: the unlabeled study v9's ENet-alone runs (6 labeled cases, 8,192 steps, seeds 1-5)
ALONE_RUNS = Path("/work/ul6/runs/alone-8192")
#: study v4's teacher as the unlabeled study holds it (copied from study v4's teachers stage)
TEACHER_RUN = Path("/work/ul6/runs/teacher/s1")
ROW = "emkd_balanced_region"


#: the endpoint cases (run.sh's split file): how many an evaluation must have scored
N_CASES = 24


def dice(eval_dir: Path, run: Path) -> dict[str, float]:
    """Per-case organ and tumor Dice (tumor over the cases with tumor) of one evaluation,
    after checking that it scored ``run``'s best checkpoint on the 24 endpoint cases."""
    record = json.loads((eval_dir / "summary.json").read_text())
    checkpoint = Path(record["checkpoint"]).resolve()
    if checkpoint != (run / "checkpoints" / "best.ckpt").resolve():
        raise SystemExit(f"study v8: {eval_dir} scored {checkpoint}, not {run}'s best.ckpt")
    if record["split"] != "test" or record["n_cases"] != N_CASES:
        raise SystemExit(f"study v8: {eval_dir} scored {record['n_cases']} {record['split']} cases")
    summary = record["summary"]
    return {name: float(summary[name]["dice_per_case_nonempty"]) for name in ("organ", "tumor")}


def table(study: Path, seeds: tuple[int, ...]) -> dict:
    """Every row's per-seed Dice, the teacher's, the paired rows and the precondition (on the
    mean of ENet alone over seeds 1-5 whenever those are scored, as the protocol says)."""
    runs = {"alone": ALONE_RUNS, "emkd_balanced_region": study / "runs" / "region-8192"}
    teacher = dice(study / "eval" / "teacher-s1", TEACHER_RUN)

    def scored(row: str, seed: int) -> dict[str, float]:
        return dice(study / "eval" / f"{ROWS[row]}-s{seed}", runs[row] / f"s{seed}")

    scores = {row: {s: scored(row, s) for s in seeds} for row in ROWS}
    hashes = [(init_hash(runs["alone"] / f"s{s}"), init_hash(runs[ROW] / f"s{s}")) for s in seeds]
    same_start = all(a is not None and a == b for a, b in hashes)
    out: dict = {"seeds": list(seeds), "teacher": teacher, "same_start": same_start}
    for name in ("organ", "tumor"):
        alone = {s: scores["alone"][s][name] for s in seeds}
        region = {s: scores[ROW][s][name] for s in seeds}
        out[name] = {
            "alone": {"per_seed": alone, "mean": sum(alone.values()) / len(alone)},
            ROW: endpoint_row(region, alone, teacher[name]),
        }
    all_alone = [study / "eval" / f"{ROWS['alone']}-s{s}" / "summary.json" for s in SEEDS]
    if all(p.exists() for p in all_alone):
        alone_mean = sum(scored("alone", s)["tumor"] for s in SEEDS) / len(SEEDS)
    else:
        alone_mean = out["tumor"]["alone"]["mean"]
    lead = teacher["tumor"] - alone_mean
    out["precondition"] = {
        "teacher_tumor": teacher["tumor"],
        "lead": lead,
        "met": teacher["tumor"] >= TEACHER_MIN and lead >= GAP_MIN,
    }
    row = out["tumor"][ROW]
    out["target_met"] = bool(
        out["precondition"]["met"]
        and same_start
        and row["gap_closed"] >= 0.5
        and row["paired"][1] > 0
    )
    return out


def markdown(result: dict, interim: bool) -> str:
    """The endpoint table in Markdown."""
    head = "INTERIM (not all five seeds): " if interim else ""
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [
        f"{head}study v8, 24 new cases (204-227), seeds {seeds}, per-case Dice, reference box",
        "",
        "| row | organ Dice | tumor Dice | organ: paired diff [95% t] | tumor: paired diff "
        "[95% t] | organ gap closed | tumor gap closed |",
        "|---|---|---|---|---|---|---|",
        f"| teacher RA-UNet w0.5 (42 labeled, study v4's) | {result['teacher']['organ']:.3f} | "
        f"{result['teacher']['tumor']:.3f} | | | | |",
        f"| ENet w0.25 alone, 6 labeled, 8,192 steps | {result['organ']['alone']['mean']:.3f} | "
        f"{result['tumor']['alone']['mean']:.3f} | | | | |",
    ]
    cells = []
    for name in ("organ", "tumor"):
        row = result[name]["emkd_balanced_region"]
        d, low, high = row["paired"]
        cells.append((f"{row['mean']:.3f}", f"{d:+.3f} [{low:+.3f}, {high:+.3f}]", row))
    (om, od, orow), (tm, td, trow) = cells
    lines.append(
        f"| + `emkd_balanced_region`, 8,192 steps | {om} | {tm} | {od} | {td} | "
        f"{orow['gap_closed']:.0%} | {trow['gap_closed']:.0%} |"
    )
    pre = result["precondition"]
    lines += [
        "",
        "Per seed (organ / tumor): "
        + "; ".join(
            f"{row} "
            + ", ".join(
                f"{result['organ'][row]['per_seed'][s]:.3f}/{result['tumor'][row]['per_seed'][s]:.3f}"
                for s in result["seeds"]
            )
            for row in ("alone", "emkd_balanced_region")
        ),
        f"Same starting weights within each seed: {result['same_start']}.",
        f"Precondition (teacher tumor >= {TEACHER_MIN}, lead >= {GAP_MIN}): teacher "
        f"{pre['teacher_tumor']:.3f}, lead {pre['lead']:.3f}: "
        f"{'met' if pre['met'] else 'NOT met'}.",
        f"Target (>= 50% of the tumor gap, interval above zero): "
        f"{'met' if result['target_met'] else 'not met'}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/work/v8few"))
    parser.add_argument("--interim", action="store_true", help="score the seeds scored so far")
    args = parser.parse_args(argv)
    done = tuple(
        s for s in SEEDS if (args.dir / "eval" / f"region-8192-s{s}" / "summary.json").exists()
    )
    if done != SEEDS and not args.interim:
        raise SystemExit(f"study v8: seeds {done} scored; the endpoint needs {SEEDS}")
    result = table(args.dir, done)
    interim = done != SEEDS
    result["interim"] = interim
    name = "interim" if interim else "endpoint"
    (args.dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.dir / f"{name}.md").write_text(markdown(result, interim))
    print(markdown(result, interim))


if __name__ == "__main__":
    main()
