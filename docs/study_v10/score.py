"""Study v10's endpoint table (docs/study_v10/protocol.md, written 2026-12-05 11:24 UTC before
any v10 run): ENet alone, ENet + ``emkd_balanced_region`` (study v8's runs, information) and
ENet + ``emkd_balanced_region_cutmix`` (the scored row), all 6 labeled cases and 8,192 steps,
seeds 1-5 paired, on the 24 new cases 228-251 (``run.sh eval`` scores them).

    PYTHONPATH=. python docs/study_v10/score.py --dir /work/v10 [--interim]

Refuses to compute the endpoint before all five seeds are scored, unless ``--interim``.
Writes ``endpoint.json`` and ``endpoint.md`` into ``--dir``. The scoring itself is
``scripts/paired_endpoint.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import paired_endpoint  # noqa: E402

#: the unlabeled study v9's ENet-alone runs (6 labeled cases, 8,192 steps, seeds 1-5)
ALONE_RUNS = Path("/work/ul6/runs/alone-8192")
#: study v8's emkd_balanced_region runs (same data, teacher and length)
REGION_RUNS = Path("/work/v8few/runs/region-8192")
#: study v4's teacher as the unlabeled study holds it
TEACHER_RUN = Path("/work/ul6/runs/teacher/s1")


def spec(study: Path) -> paired_endpoint.EndpointSpec:
    """Study v10's rows, read when called (so a test can point them elsewhere)."""
    Row = paired_endpoint.Row
    return paired_endpoint.EndpointSpec(
        name="study v10",
        first_case=228,
        n_cases=24,
        data_root=study / "data" / "fresh",
        teacher_run=TEACHER_RUN,
        teacher_label="teacher RA-UNet w0.5 (42 labeled, study v4's)",
        rows={
            "alone": Row("alone-8192", ALONE_RUNS, "ENet w0.25 alone, 6 labeled, 8,192 steps"),
            "emkd_balanced_region": Row(
                "region-8192", REGION_RUNS, "+ `emkd_balanced_region` (v8's runs, information)"
            ),
            "emkd_balanced_region_cutmix": Row(
                "cutmix-8192",
                study / "runs" / "cutmix-8192",
                "**+ `emkd_balanced_region_cutmix`** (scored)",
            ),
        },
        target="emkd_balanced_region_cutmix",
        contrasts=(("emkd_balanced_region_cutmix", "emkd_balanced_region"),),
    )


def table(study: Path, seeds: tuple[int, ...]) -> dict:
    return paired_endpoint.table(spec(study), study, seeds)


def main(argv: list[str] | None = None) -> None:
    paired_endpoint.main(spec, Path("/work/v10"), __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
