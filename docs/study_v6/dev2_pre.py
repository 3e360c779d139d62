"""Record (2026-12-05 01:37 UTC): the dev-2 evaluations of ENet alone and v5's option, run
through the dev2-select stage's own ``evaluate_each`` while the candidates trained. It ran with
the code of commit 497bb43, where ``Study.method_runs`` was still called ``v6_runs``."""

import sys

sys.path.insert(0, "scripts")
import phantom_study as ps
from study_protocols import DEV2_DIR

study = ps.Study(ps.parse_args(["--protocol", "v6", "--dir", "/work/study-v5"]))
runs = study.v6_runs([study.v5_selected])
chosen = [runs[m][s] for m in ["alone", study.v5_selected] for s in study.few_seeds]
print([str(c) for c in chosen])
split = [f"data.split_file={study.dev2_split_file}", "split=test"]
study.evaluate_each(chosen, DEV2_DIR, *split)
