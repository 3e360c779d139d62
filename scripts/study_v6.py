"""Study v6's stages (docs/study_v6/protocol.md), mixed into ``phantom_study.Study``.

v6 is v5 with a second round: three variants of v5's selected option are chosen on "dev 2"
(v4's validation and test cases and v5's fresh ones, all scored already) and the choice is
confirmed on 24 more fresh phantoms (cases 108-131 of the same generator call). ``data2``
draws them and writes the two split files, ``candidates2`` trains the variants' seeds 1-3,
``dev2-select`` picks one (a new one only by :data:`~study_protocols.DEV_MARGIN`),
``confirm2`` trains its seeds 4-5 and ``endpoint2`` scores every row on the fresh cases.
"""

from __future__ import annotations

import json
from pathlib import Path

from study_protocols import DEV2_DIR, DEV_MARGIN, FRESH2_DIR, MAIN_METHODS, STUDENT, tumor_dice
from study_v5 import endpoint_row, organ_dice, row_cells

from kdseg.errors import write_text_atomic


class SecondFreshStages:
    """The v6 stages; the host class (``phantom_study.Study``) provides the paths, the
    protocol, ``skip_unless``, ``run``, ``timed``, ``evaluate_each``, ``distill_sweep``,
    ``draw_phantoms``, ``check_phantoms`` and ``fresh_split``."""

    @property
    def dev2_split_file(self) -> Path:
        return self.dir / "dev2_split.json"

    @property
    def fresh2_split_file(self) -> Path:
        return self.dir / "fresh2_split.json"

    @property
    def selection_v6_file(self) -> Path:
        return self.dir / "selection_v6.json"

    def stage_data2(self) -> None:
        """The generator call with every case (idempotent: drawn cases are kept), checked
        against the protocol, and the dev-2 and fresh-2 split files."""
        if self.skip_unless("data2", self.protocol.fresh2) or self.fresh2_split_file.exists():
            return
        from kdseg.data.manifest import write_split
        from kdseg.data.phantom import case_id

        self.draw_phantoms()
        self.check_phantoms(self.data)
        split, dev = self.fresh_split()
        start, end = self.protocol.fresh2
        dev2 = {**dev, "test": sorted(dev["test"] + split["test"])}
        fresh2 = {**split, "test": sorted(case_id("lits", i) for i in range(start, end))}
        write_split(dev2, self.dev2_split_file)
        write_split(fresh2, self.fresh2_split_file)  # last: it marks the stage done

    @property
    def v5_selected(self) -> str:
        return json.loads(self.selection_v5_file.read_text())["selected"]

    def stage_candidates2(self) -> None:
        if self.skip_unless("candidates2", self.protocol.fresh2):
            return
        self.distill_sweep("candidates2", STUDENT, list(self.protocol.candidates2), self.few_seeds)

    def stage_dev2_select(self) -> None:
        """Seeds 1-3 of ENet alone, of v5's selected option and of each candidate on dev 2;
        the best mean paired tumor gain wins, a candidate only by DEV_MARGIN."""
        if self.skip_unless("dev2-select", self.protocol.fresh2):
            return
        methods = [self.v5_selected, *self.protocol.candidates2]
        runs = self.method_runs(methods)
        chosen = [runs[m][s] for m in ["alone", *methods] for s in self.few_seeds]
        split = [f"data.split_file={self.dev2_split_file}", "split=test"]
        self.timed("dev2-select", len(chosen), self.evaluate_each, chosen, DEV2_DIR, *split)
        dice = {
            m: {s: tumor_dice(runs[m][s] / DEV2_DIR) for s in self.few_seeds}
            for m in ["alone", *methods]
        }
        n = len(self.few_seeds)
        scores = {
            m: sum(dice[m][s] - dice["alone"][s] for s in self.few_seeds) / n for m in methods
        }
        best = max(methods, key=lambda m: scores[m])
        if best != self.v5_selected and scores[best] < scores[self.v5_selected] + DEV_MARGIN:
            best = self.v5_selected
        record = {"selected": best, "dev2_score": scores, "dev2_tumor_dice": dice}
        write_text_atomic(self.selection_v6_file, json.dumps(record, indent=1) + "\n")
        print(f"[study] dev2-select: {best}; dev-2 scores {scores}", flush=True)

    def stage_confirm2(self) -> None:
        if self.skip_unless("confirm2", self.protocol.fresh2):
            return
        selected = json.loads(self.selection_v6_file.read_text())["selected"]
        if selected in self.protocol.candidates2:
            self.distill_sweep("candidates2", STUDENT, [selected], self.seeds, label="confirm2")

    def stage_endpoint2(self) -> None:
        """Every row on fresh test 2 (after the choice only); ``endpoint_v6.json`` and
        ``endpoint_v6.md``: the selected option's share of the gap and its paired interval."""
        if self.skip_unless("endpoint2", self.protocol.fresh2):
            return
        if not self.selection_v6_file.exists():
            raise SystemExit("phantom_study: run the dev2-select stage before endpoint2")
        selected = json.loads(self.selection_v6_file.read_text())["selected"]
        methods = list(dict.fromkeys([selected, self.v5_selected, self.selected, *MAIN_METHODS]))
        runs = self.method_runs(methods)
        teacher = self.teacher_run
        every = [teacher, *(r for m in ["alone", *methods] for r in runs[m].values())]
        split = [f"data.split_file={self.fresh2_split_file}", "split=test"]
        self.timed("endpoint2", len(every), self.evaluate_each, every, FRESH2_DIR, *split)

        teacher_dice = tumor_dice(teacher / FRESH2_DIR)
        alone = {s: tumor_dice(r / FRESH2_DIR) for s, r in runs["alone"].items()}
        n_cases = len(json.loads(self.fresh2_split_file.read_text())["test"])
        lines = [
            f"Fresh test 2 ({n_cases} cases), per-case tumor Dice over cases with tumor; "
            f"seeds {', '.join(map(str, self.seeds))}; paired difference to ENet alone "
            "(same seed, same starting weights) with a Student-t 95% interval.",
            "",
            "| row | tumor Dice | liver Dice | paired difference [95% t] | gap closed |",
            "|---|---|---|---|---|",
            f"| teacher | {teacher_dice:.3f} | {organ_dice([teacher], FRESH2_DIR):.3f} | | |",
            f"| ENet alone | {sum(alone.values()) / len(alone):.3f} | "
            f"{organ_dice(list(runs['alone'].values()), FRESH2_DIR):.3f} | | |",
        ]
        result: dict = {"selected": selected, "teacher": teacher_dice, "rows": {}}
        for m in methods:
            dice = {s: tumor_dice(r / FRESH2_DIR) for s, r in runs[m].items()}
            row = endpoint_row(dice, alone, teacher_dice)
            row["liver"] = organ_dice(list(runs[m].values()), FRESH2_DIR)
            result["rows"][m] = row
            label = f"{m} (selected)" if m == selected else m
            mean, rest = row_cells(row).split(" | ", 1)
            lines.append(f"| {label} | {mean} | {row['liver']:.3f} | {rest} |")
        row = result["rows"][selected]
        result["target_met"] = row["gap_closed"] >= 0.5 and row["paired"][1] > 0
        lines += ["", f"Target (>= 50% with the interval above zero) met: {result['target_met']}"]
        write_text_atomic(self.dir / "endpoint_v6.json", json.dumps(result, indent=1) + "\n")
        write_text_atomic(self.dir / "endpoint_v6.md", "\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)
