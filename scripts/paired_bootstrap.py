"""A paired difference with both of its intervals, from committed per-case CSVs.

    python scripts/paired_bootstrap.py \\
        'docs/study_v4/main/raunet-enet-w0.25-emkd_balanced-s{seed}/eval-test-per_case.csv' \\
        'docs/study_v4/students/enet-w0.25-s{seed}/eval-test-per_case.csv'

``TREATED`` and ``CONTROL`` are ``per_case.csv`` paths (as ``kdseg-eval`` writes them, or a
study's committed copy) with ``{seed}`` in place of the seed; ``--seeds`` (default 1-5) and
``--class`` (default tumor) pick the runs and the class. Prints the mean paired difference
(treated - control, per-case Dice over the cases that hold the class: the headline Dice), the
Student-t 95% interval over the seeds (the one ``kdseg-report`` and the study endpoints show,
which holds the test cases fixed), and the two-level bootstrap interval over seeds and cases
(:func:`kdseg.eval.paired.paired_bootstrap`, which resamples the cases too). Why: the
committed study records are copies of the evaluations, not run folders ``kdseg-report`` can
read, and the bootstrap needs their per-case scores. Same files, same digits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdseg.errors import InputError
from kdseg.eval.paired import paired_bootstrap, paired_difference
from kdseg.eval.runs import parse_per_case, per_case_mean


def read_class(path: Path, name: str) -> dict[str, float | None]:
    """Case -> per-case Dice of class ``name`` (None where the reference lacks the class)."""
    try:
        out = parse_per_case(path).get(name)
    except InputError as exc:
        raise SystemExit(str(exc)) from None
    if not out:
        raise SystemExit(f"{path}: no row of class {name!r}")
    return out


def _seeds(text: str) -> list[int]:
    """``1-5`` or ``1,2,4``."""
    try:
        if "-" in text:
            first, last = map(int, text.split("-"))
            return list(range(first, last + 1))
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 1-5 or 1,2,4") from None


def main(argv: list[str] | None = None) -> str:
    """Parse, read, print (and return) the line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("treated", help="per_case.csv path with {seed}")
    parser.add_argument("control", help="per_case.csv path with {seed}")
    parser.add_argument("--seeds", type=_seeds, default=[1, 2, 3, 4, 5])
    parser.add_argument("--class", dest="name", default="tumor")
    args = parser.parse_args(argv)
    for template in (args.treated, args.control):
        if "{seed}" not in template:
            parser.error(f"{template}: no {{seed}} in the path")
    treated = {s: read_class(Path(args.treated.format(seed=s)), args.name) for s in args.seeds}
    control = {s: read_class(Path(args.control.format(seed=s)), args.name) for s in args.seeds}
    t = paired_difference(
        {s: per_case_mean(v) for s, v in treated.items()},
        {s: per_case_mean(v) for s, v in control.items()},
    )
    try:
        boot = paired_bootstrap(treated, control)
    except ValueError as exc:
        raise SystemExit(f"{args.treated} / {args.control}: {exc}") from None
    if t is None or boot is None:
        raise SystemExit(f"no seed and case of class {args.name!r} in both")
    line = (
        f"{args.name}, treated - control, {len(boot.seeds)} seeds x {len(boot.cases)} cases: "
        f"{t.text(show_n=False)} (95% t over seeds), {boot.text()} (95% bootstrap over seeds "
        f"and cases, {boot.resamples:,} resamples)"
    )
    print(line)
    return line


if __name__ == "__main__":
    sys.exit(main() and 0)
