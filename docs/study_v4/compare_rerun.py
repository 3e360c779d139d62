"""Compare a rerun of study v4 with its committed records, run by run, bit for bit.

    python docs/study_v4/compare_rerun.py /work/s4c [--json out.json]

For every run folder ``<DIR>/runs/<stage>/<name>`` with a ``summary.json`` whose record is in
``docs/study_v4/<stage>/<name>``: the CSV log's rows without the throughput and cache columns
(``perf/*``: wall-clock measures, not results), ``init_weights_sha256``, ``best_score`` and
``global_step`` (a ``best_score`` that v4's resume fault left stale in a record's summary is
checked against the record's CSV log instead), and, where both were evaluated, the test
evaluation's per-case scores. Prints one line per run and a count; also each run's
teacher-cache hits and median slices per second (the throughput of identical work on two
machines), and the recorded run's.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

RECORDS = Path(__file__).resolve().parent
SUMMARY_KEYS = ("init_weights_sha256", "best_score", "global_step")


def _rows(path: Path) -> list[dict[str, str]]:
    """The CSV log's rows with the wall-clock columns dropped, and rows left empty by it."""
    with open(path) as f:
        rows = [
            {k: v for k, v in r.items() if not k.startswith("perf/")} for r in csv.DictReader(f)
        ]
    return [r for r in rows if any(v for k, v in r.items() if k not in ("epoch", "step"))]


def _perf(path: Path, column: str) -> list[float]:
    with open(path) as f:
        return [float(r[column]) for r in csv.DictReader(f) if r.get(column)]


def compare(run: Path, record: Path) -> dict:
    """What differs between a rerun's run folder and its committed record."""
    diffs = []
    if _rows(run / "csv" / "metrics.csv") != _rows(record / "metrics.csv"):
        diffs.append("csv log")
    new, old = (json.loads((p / "summary.json").read_text()) for p in (run, record))
    diffs += [k for k in SUMMARY_KEYS if new.get(k) != old.get(k)]
    notes = []
    if "best_score" in diffs and not old.get("metrics"):
        # v4's main runs of seeds 1-3 were swept again for seeds 4-5 and rewrote their summaries
        # from last.ckpt (docs/study.md, v4 results), whose checkpoint callback had not yet seen
        # the last validation: where that one was the best, the record holds the one before.
        # The CSV log holds every validation: its best is the run's.
        best = max(_perf(record / "metrics.csv", "val/dice_mean"))
        if best == new.get("best_score"):
            diffs.remove("best_score")
            notes.append(
                f"record's rewritten summary.json says {old['best_score']}; its log's best"
            )
    evaluated = (run / "eval-test-full" / "per_case.csv", record / "eval-test-per_case.csv")
    if all(p.is_file() for p in evaluated):
        if evaluated[0].read_text() != evaluated[1].read_text():
            diffs.append("test per-case scores")
    log = run / "csv" / "metrics.csv"
    speed = _perf(log, "perf/slices_per_s")
    old_speed = _perf(record / "metrics.csv", "perf/slices_per_s")
    return {
        "run": f"{run.parent.name}/{run.name}",
        "differs": diffs,
        "notes": notes,
        "evaluated": all(p.is_file() for p in evaluated),
        "cache_hits": sum(_perf(log, "perf/teacher_cache_hits")),
        "slices_per_s": statistics.median(speed) if speed else None,
        "recorded_slices_per_s": statistics.median(old_speed) if old_speed else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="the rerun's study folder")
    parser.add_argument("--json", type=Path, help="write the comparisons here")
    args = parser.parse_args()
    results = []
    for summary in sorted((args.dir / "runs").glob("*/*/summary.json")):
        run = summary.parent
        record = RECORDS / run.parent.name / run.name
        if not (record / "summary.json").is_file():
            print(f"{run.parent.name}/{run.name}: no committed record")
            continue
        result = compare(run, record)
        results.append(result)
        speed = result["slices_per_s"]
        old = result["recorded_slices_per_s"]
        ratio = f"{speed / old:.2f}x recorded" if speed and old else ""
        verdict = "SAME" if not result["differs"] else "DIFFERS " + ", ".join(result["differs"])
        verdict += "".join(f" ({note})" for note in result["notes"])
        print(
            f"{result['run']}: {verdict}"
            f"{'' if result['evaluated'] else ' (not evaluated)'}; cache hits "
            f"{result['cache_hits']:.0f}; {speed or 0:.1f} slices/s {ratio}"
        )
    same = sum(not r["differs"] for r in results)
    print(f"{same} of {len(results)} runs identical to the committed records")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
