"""Study v5's stages (docs/study_v5/protocol.md), mixed into ``phantom_study.Study``.

v5 is v4 with 24 fresh test phantoms (cases 60-83 of the same generator call) and three
variants of ``emkd_balanced`` chosen on the dev split (v4's validation and test cases, already
scored by v4): ``candidates`` trains them for seeds 1-3, ``dev-select`` picks one (a new one
only by :data:`~study_protocols.DEV_MARGIN`), ``confirm`` trains its seeds 4-5, and
``endpoint`` (part of the report stage) scores the selected option on the fresh cases.
"""

from __future__ import annotations

import json
from pathlib import Path

from study_protocols import (
    DEV_DIR,
    DEV_MARGIN,
    EVAL_DIR,
    MAIN_METHODS,
    STUDENT,
    STUDENT_WIDTH,
    TEACHER,
    TEACHER_WIDTH,
    tumor_dice,
)

from kdseg.errors import write_text_atomic


def endpoint_row(dice: dict[int, float], alone: dict[int, float], teacher: float) -> dict:
    """One row of an endpoint table: per-seed tumor Dice, its mean, the paired difference to
    ENet alone of the same seeds (mean, Student-t 95% interval) and the share of the alone ->
    teacher gap it closes (NaN when the teacher is not better)."""
    from kdseg.eval.paired import paired_difference

    diff = paired_difference(dice, alone)
    gap = teacher - sum(alone.values()) / len(alone)
    return {
        "per_seed": dice,
        "mean": sum(dice.values()) / len(dice),
        "alone_per_seed": alone,
        "paired": [diff.mean, diff.low, diff.high],
        "gap_closed": diff.mean / gap if gap > 0 else float("nan"),
    }


def organ_dice(runs: list[Path], out_dir: str) -> float:
    """Mean over ``runs`` of the per-case organ Dice their ``out_dir`` evaluation wrote."""
    summaries = [json.loads((r / out_dir / "summary.json").read_text()) for r in runs]
    organ = [s["summary"]["organ"]["dice_per_case_nonempty"] for s in summaries]
    return sum(organ) / len(organ)


def row_cells(row: dict) -> str:
    """``mean | difference [low, high] | share`` of an :func:`endpoint_row`."""
    mean, (d, low, high) = row["mean"], row["paired"]
    return f"{mean:.3f} | {d:+.3f} [{low:+.3f}, {high:+.3f}] | {row['gap_closed']:.0%}"


class FreshTestStages:
    """The v5 stages; the host class (``phantom_study.Study``) provides the paths, the
    protocol, ``run``, ``timed``, ``evaluate_each`` and ``distill_sweep``."""

    def fresh_split(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """``(split, dev split)`` of a protocol with ``fresh_from`` n: the first n cases split
        as kdseg splits n cases (its train and val kept); the test split is the cases from n
        on, and the dev split's test is the first n cases' val and test together (its val is
        empty: a split file's parts are disjoint)."""
        from kdseg.data.manifest import make_split
        from kdseg.data.phantom import case_id

        n = self.protocol.fresh_from
        total = self.protocol.fresh_until or int(self.protocol.phantom["n_cases"])
        old = make_split([case_id("lits", i) for i in range(n)])
        fresh = sorted(case_id("lits", i) for i in range(n, total))
        return {**old, "test": fresh}, {**old, "val": [], "test": sorted(old["val"] + old["test"])}

    def method_runs(self, methods: list[str]) -> dict[str, dict[int, Path]]:
        """Run folder per seed of ENet alone and of each distillation method named: the main
        methods and v4's selected option in ``main``, the candidates of a round in theirs."""
        stage = {m: "main" for m in (*MAIN_METHODS, self.selected)}
        stage |= {m: "candidates" for m in self.protocol.candidates}
        stage |= {m: "candidates2" for m in self.protocol.candidates2}
        name = f"{TEACHER}-{STUDENT}-w{STUDENT_WIDTH}"
        alone = f"{STUDENT}-w{STUDENT_WIDTH}"
        runs = {"alone": {s: self.runs / "students" / f"{alone}-s{s}" for s in self.seeds}}
        for m in methods:
            runs[m] = {s: self.runs / stage[m] / f"{name}-{m}-s{s}" for s in self.seeds}
        return runs

    @property
    def v5_runs(self) -> dict[str, dict[int, Path]]:
        """Run folder per method and seed: ENet alone, v4's selected option, the candidates."""
        return self.method_runs(["emkd", self.selected, *self.protocol.candidates])

    @property
    def teacher_run(self) -> Path:
        """The protocol's one teacher (v4 and later)."""
        return self.runs / "teachers" / f"{TEACHER}-w{TEACHER_WIDTH}-s{self.protocol.teacher_seed}"

    def stage_candidates(self) -> None:
        if not self.protocol.candidates:
            print("[study] candidates: none in this protocol, skipped", flush=True)
            return
        self.distill_sweep("candidates", STUDENT, list(self.protocol.candidates), self.few_seeds)

    def stage_dev_select(self) -> None:
        """Score every candidate, v4's selected option and ENet alone (seeds 1-3) on the dev
        split; the best mean paired tumor difference wins, a new candidate only by
        :data:`DEV_MARGIN` over the option that already has five seeds."""
        if not self.protocol.candidates:
            print("[study] dev-select: none in this protocol, skipped", flush=True)
            return
        from kdseg.data.manifest import write_split

        write_split(self.fresh_split()[1], self.dir / "dev_split.json")
        runs = self.v5_runs
        methods = [self.selected, *self.protocol.candidates]
        chosen = [runs[m][s] for m in ["alone", *methods] for s in self.few_seeds]
        split = [f"data.split_file={self.dir / 'dev_split.json'}", "split=test"]
        self.timed("dev-select", len(chosen), self.evaluate_each, chosen, DEV_DIR, *split)
        dice = {
            m: {s: tumor_dice(runs[m][s] / DEV_DIR) for s in self.few_seeds}
            for m in runs
            if m in methods or m == "alone"
        }
        scores = {
            m: sum(dice[m][s] - dice["alone"][s] for s in self.few_seeds) / len(self.few_seeds)
            for m in methods
        }
        best = max(methods, key=lambda m: scores[m])
        if best != self.selected and scores[best] < scores[self.selected] + DEV_MARGIN:
            best = self.selected
        record = {
            "selected": best,
            "dev_score": scores,
            "dev_tumor_dice": dice,
            "seeds": self.few_seeds,
        }
        write_text_atomic(self.selection_v5_file, json.dumps(record, indent=1) + "\n")
        print(f"[study] dev-select: {best}; dev scores {scores}", flush=True)

    def stage_confirm(self) -> None:
        """The dev-selected option on every seed (a candidate trained seeds 1-3 so far)."""
        if not self.protocol.candidates:
            print("[study] confirm: none in this protocol, skipped", flush=True)
            return
        selected = json.loads(self.selection_v5_file.read_text())["selected"]
        if selected in self.protocol.candidates:
            self.distill_sweep("candidates", STUDENT, [selected], self.seeds, label="confirm")

    def endpoint(self) -> None:
        """v5's primary endpoint (the dev-selected option on the fresh test split) and, for
        the same rows, the secondary one: v4's test cases and the fresh ones pooled (each run
        also scored on the dev split). Written to ``endpoint.json``, printed as a table."""
        selected = json.loads(self.selection_v5_file.read_text())["selected"]
        runs = self.v5_runs
        rows = ["alone", "emkd", *dict.fromkeys([self.selected, selected])]
        dev = [f"data.split_file={self.dir / 'dev_split.json'}", "split=test"]
        self.evaluate_each([runs[m][s] for m in rows for s in self.seeds], DEV_DIR, *dev)
        split, dev_split = self.fresh_split()
        pooled_cases = set(split["test"]) | (set(dev_split["test"]) - set(split["val"]))
        teacher = self.teacher_run
        teacher_dice = {"fresh": tumor_dice(teacher / EVAL_DIR)}
        scores = {
            m: {
                "fresh": {s: tumor_dice(runs[m][s] / EVAL_DIR) for s in self.seeds},
                "pooled": {
                    s: tumor_dice(runs[m][s], (EVAL_DIR, DEV_DIR), pooled_cases) for s in self.seeds
                },
            }
            for m in rows
        }
        self.evaluate_each([teacher], DEV_DIR, *dev)
        teacher_dice["pooled"] = tumor_dice(teacher, (EVAL_DIR, DEV_DIR), pooled_cases)
        result: dict = {"selected": selected, "teacher": teacher_dice, "rows": {}}
        lines = [
            "| row | test cases | tumor Dice | paired difference [95% t] | gap closed |",
            "|---|---|---|---|---|",
        ]
        for where in ("fresh", "pooled"):
            alone = scores["alone"][where]
            alone_mean = sum(alone.values()) / len(alone)
            lines.append(f"| teacher | {where} | {teacher_dice[where]:.3f} | | |")
            lines.append(f"| ENet alone | {where} | {alone_mean:.3f} | | |")
            for m in rows[1:]:
                row = endpoint_row(scores[m][where], alone, teacher_dice[where])
                result["rows"].setdefault(m, {})[where] = row
                lines.append(
                    f"| {m}{' (selected)' if m == selected else ''} | {where} | {row_cells(row)} |"
                )
        fresh = result["rows"][selected]["fresh"]
        result["target_met"] = fresh["gap_closed"] >= 0.5 and fresh["paired"][1] > 0
        write_text_atomic(self.dir / "endpoint.json", json.dumps(result, indent=1) + "\n")
        print("\n".join(lines), flush=True)
        print(f"[study] endpoint ({selected}, fresh test): target met: {result['target_met']}")
