"""Study v7's stages (docs/study_v7/protocol.md), mixed into ``phantom_study.Study``.

v7 trains the students longer and asks one question fixed in advance: does v5's selected
option (``emkd_balanced_region``), trained as long as ENet alone, close half of the gap on 24
more fresh phantoms (cases 156-179 of the same generator call)? ``data3`` draws them and
writes the fresh-3 split; ``patient-pilot`` trains ENet alone (seed 1) for each length in
:data:`~study_protocols.PATIENT_STEPS` and keeps the longest that leaves the teacher
:data:`~study_protocols.GAP_RULE` ahead on dev 2 (no distillation run exists before the
choice); ``patient`` trains ENet alone and the option for every seed at that length;
``endpoint3`` scores them, and v5's 1,024-step runs, on fresh test 3.
"""

from __future__ import annotations

import json
from pathlib import Path

from study_protocols import (
    DEV2_DIR,
    FRESH3_DIR,
    GAP_RULE,
    PATIENT_STEPS,
    SELECT_SEED,
    STEPS_PER_EPOCH,
    STUDENT,
    STUDENT_WIDTH,
    TEACHER,
    tumor_dice,
)
from study_v5 import endpoint_row, organ_dice, row_cells

from kdseg.errors import write_text_atomic


class PatientStages:
    """The v7 stages; the host class (``phantom_study.Study``) provides the paths, the
    protocol, ``skip_unless``, ``timed``, ``distill_sweep``, ``train_sweep``,
    ``evaluate_each``, ``draw_phantoms``, ``check_phantoms``, ``fresh_split``, ``method_runs``,
    ``teacher_run`` and ``dev2_split_file``."""

    @property
    def fresh3_split_file(self) -> Path:
        return self.dir / "fresh3_split.json"

    @property
    def gate_file(self) -> Path:
        return self.dir / "patient_gate.json"

    def stage_data3(self) -> None:
        """Every case of the v7 call (drawn cases are kept), checked, and the fresh-3 split."""
        if self.skip_unless("data3", self.protocol.fresh3) or self.fresh3_split_file.exists():
            return
        from kdseg.data.manifest import write_split
        from kdseg.data.phantom import case_id

        self.draw_phantoms()
        self.check_phantoms(self.data)
        split, _ = self.fresh_split()
        start, end = self.protocol.fresh3
        fresh3 = {**split, "test": sorted(case_id("lits", i) for i in range(start, end))}
        write_split(fresh3, self.fresh3_split_file)

    def patient_stage(self, steps: int) -> str:
        return f"patient{steps}"

    def alone_run(self, steps: int, seed: int) -> Path:
        stage = self.patient_stage(steps)
        return self.runs / stage / f"{STUDENT}-w{STUDENT_WIDTH}-s{seed}"

    def distilled_run(self, steps: int, seed: int) -> Path:
        name = f"{TEACHER}-{STUDENT}-w{STUDENT_WIDTH}-{self.protocol.patient}-s{seed}"
        return self.runs / self.patient_stage(steps) / name

    def alone_sweep(self, steps: int, seeds: list[int]) -> None:
        """ENet alone for ``steps`` steps, each seed, into ``runs/patient<steps>``."""
        stage = self.patient_stage(steps)
        self.train_sweep(stage, STUDENT, STUDENT_WIDTH, seeds, [self.epochs(steps)])

    def distilled_sweep(self, steps: int, seeds: list[int], label: str | None = None) -> None:
        """The protocol's option for ``steps`` steps, each seed, beside ENet alone's runs."""
        stage, method = self.patient_stage(steps), self.protocol.patient
        self.distill_sweep(stage, STUDENT, [method], seeds, label, [self.epochs(steps)])

    @staticmethod
    def epochs(steps: int) -> str:
        if steps % STEPS_PER_EPOCH:
            raise ValueError(f"{steps} steps: not whole {STEPS_PER_EPOCH}-step epochs")
        return f"trainer.max_epochs={steps // STEPS_PER_EPOCH}"

    def stage_patient_pilot(self) -> None:
        """ENet alone, seed 1, at each length; the teacher and the pilots on dev 2; the rule."""
        if self.skip_unless("patient-pilot", self.protocol.fresh3) or self.gate_file.exists():
            return
        seed = SELECT_SEED
        for steps in PATIENT_STEPS:
            self.alone_sweep(steps, [seed])
        teacher = self.teacher_run
        pilots = {steps: self.alone_run(steps, seed) for steps in PATIENT_STEPS}
        split = [f"data.split_file={self.dev2_split_file}", "split=test"]
        every = [teacher, *pilots.values()]
        self.timed("patient-pilot-eval", len(every), self.evaluate_each, every, DEV2_DIR, *split)
        teacher_dice = tumor_dice(teacher / DEV2_DIR)
        alone = {steps: tumor_dice(run / DEV2_DIR) for steps, run in pilots.items()}
        chosen = next((s for s in PATIENT_STEPS if teacher_dice - alone[s] >= GAP_RULE), None)
        record = {"steps": chosen, "teacher_dev2": teacher_dice, "alone_dev2": alone, "seed": seed}
        write_text_atomic(self.gate_file, json.dumps(record, indent=1) + "\n")
        print(f"[study] patient-pilot: steps {chosen}; {record}", flush=True)

    @property
    def patient_steps(self) -> int | None:
        if not self.gate_file.exists():
            raise SystemExit("phantom_study: run the patient-pilot stage first")
        return json.loads(self.gate_file.read_text())["steps"]

    def stage_patient(self) -> None:
        """ENet alone and the protocol's option, every seed, at the chosen length."""
        if self.skip_unless("patient", self.protocol.fresh3):
            return
        steps = self.patient_steps
        if steps is None:
            print("[study] patient: the pilot rule chose no length; v7 stops", flush=True)
            return
        self.alone_sweep(steps, self.seeds)
        self.distilled_sweep(steps, self.seeds)

    def stage_endpoint3(self) -> None:
        """Every v7 row and v5's 1,024-step rows on fresh test 3; ``endpoint_v7.json`` / ``.md``."""
        if self.skip_unless("endpoint3", self.protocol.fresh3):
            return
        steps, method = self.patient_steps, self.protocol.patient
        if steps is None:
            print("[study] endpoint3: the pilot rule chose no length; v7 stops", flush=True)
            return
        short = self.method_runs([method])
        rows = {
            f"ENet alone, {steps} steps": {s: self.alone_run(steps, s) for s in self.seeds},
            f"{method}, {steps} steps (endpoint)": {
                s: self.distilled_run(steps, s) for s in self.seeds
            },
            "ENet alone, 1024 steps": short["alone"],
            f"{method}, 1024 steps": short[method],
        }
        teacher = self.teacher_run
        every = [teacher, *(r for runs in rows.values() for r in runs.values())]
        split = [f"data.split_file={self.fresh3_split_file}", "split=test"]
        self.timed("endpoint3", len(every), self.evaluate_each, every, FRESH3_DIR, *split)

        teacher_dice = tumor_dice(teacher / FRESH3_DIR)
        dice = {k: {s: tumor_dice(r / FRESH3_DIR) for s, r in v.items()} for k, v in rows.items()}
        n_cases = len(json.loads(self.fresh3_split_file.read_text())["test"])
        lines = [
            f"Fresh test 3 ({n_cases} cases), per-case tumor Dice over cases with tumor; seeds "
            f"{', '.join(map(str, self.seeds))}; paired difference to ENet alone trained as "
            "long (same seed, same starting weights) with a Student-t 95% interval.",
            "",
            "| row | tumor Dice | liver Dice | paired difference [95% t] | gap closed |",
            "|---|---|---|---|---|",
            f"| teacher | {teacher_dice:.3f} | {organ_dice([teacher], FRESH3_DIR):.3f} | | |",
        ]
        result: dict = {"steps": steps, "method": method, "teacher": teacher_dice, "rows": {}}
        names = list(rows)
        for alone_name, name in ((names[0], names[1]), (names[2], names[3])):
            alone = dice[alone_name]
            mean_alone = sum(alone.values()) / len(alone)
            lines.append(
                f"| {alone_name} | {mean_alone:.3f} | "
                f"{organ_dice(list(rows[alone_name].values()), FRESH3_DIR):.3f} | | |"
            )
            row = endpoint_row(dice[name], alone, teacher_dice)
            row["liver"] = organ_dice(list(rows[name].values()), FRESH3_DIR)
            result["rows"][name] = row
            mean, rest = row_cells(row).split(" | ", 1)
            lines.append(f"| {name} | {mean} | {row['liver']:.3f} | {rest} |")
        row = result["rows"][names[1]]
        result["target_met"] = row["gap_closed"] >= 0.5 and row["paired"][1] > 0
        lines += ["", f"Target (>= 50% with the interval above zero) met: {result['target_met']}"]
        write_text_atomic(self.dir / "endpoint_v7.json", json.dumps(result, indent=1) + "\n")
        write_text_atomic(self.dir / "endpoint_v7.md", "\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)
