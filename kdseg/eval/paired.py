"""Paired comparisons over seeds: distilled minus alone, seed by seed, with a 95% interval.

Under kdseg's seeding a seed fixes the student's initial weights and the data order in
``kdseg-train`` and ``kdseg-distill`` alike (``summary.json`` records ``init_weights_sha256``),
so the run of seed s with a teacher and the run of seed s without one differ only in the
method. The per-seed differences are then the honest unit of evidence: their mean, and a
Student-t 95% interval around it (n - 1 degrees of freedom), say whether the method helps
beyond seed-to-seed noise. The interval is above zero when its low end is.

That t interval is over seeds only: every seed is scored on the same test cases (and, in a
study, taught by one shared teacher), so it says nothing of how the difference would move on
other cases. :func:`paired_bootstrap` adds the second level: a two-level paired bootstrap that
resamples the seeds and then the cases (the same resampled cases for both methods, so each
difference stays paired by seed and case), whose percentile interval covers case-to-case
variability as well. With few cases it is the wider and more honest of the two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """``treated - control`` over the seeds both have."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    low: float  # 95% interval (nan with fewer than two pairs)
    high: float

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def above_zero(self) -> bool:
        return math.isfinite(self.low) and self.low > 0

    def text(self, digits: int = 3, show_n: bool = True) -> str:
        """``"+0.081 [+0.032, +0.130] (n=5)"``; without the ``(n=...)`` where not ``show_n``."""
        d = digits
        text = f"{self.mean:+.{d}f}"
        if math.isfinite(self.low):
            text += f" [{self.low:+.{d}f}, {self.high:+.{d}f}]"
        return text + (f" (n={self.n})" if show_n else "")


def paired_difference(
    treated: Mapping[int, float], control: Mapping[int, float], level: float = 0.95
) -> PairedDifference | None:
    """Per-seed ``treated[s] - control[s]`` over the common seeds, mean and t interval.

    Returns None when no seed is in both. Non-finite values drop their seed.
    """
    seeds = sorted(
        s
        for s in set(treated) & set(control)
        if math.isfinite(treated[s]) and math.isfinite(control[s])
    )
    if not seeds:
        return None
    diffs = [float(treated[s]) - float(control[s]) for s in seeds]
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return PairedDifference(tuple(seeds), tuple(diffs), mean, math.nan, math.nan)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return PairedDifference(tuple(seeds), tuple(diffs), mean, mean - half, mean + half)


#: resamples and generator seed of :func:`paired_bootstrap`: fixed, so a rerun prints the
#: same digits
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

PerCase = Mapping[int, Mapping[str, float | None]]  # seed -> case -> score (None/NaN: no class)


@dataclass(frozen=True)
class BootstrapInterval:
    """``treated - control`` paired by seed and case, with a two-level bootstrap interval."""

    seeds: tuple[int, ...]
    cases: tuple[str, ...]
    mean: float  # the mean over seeds of the per-run mean differences (the headline's)
    low: float
    high: float
    resamples: int

    def text(self, digits: int = 3) -> str:
        """``"[+0.011, +0.097]"``."""
        return f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def _case_table(
    runs: PerCase, seeds: Sequence[int], role: str
) -> tuple[tuple[str, ...], np.ndarray]:
    """Seeds x cases scores over the cases that hold the class (finite scores), which must be
    the same cases in every run: a case without the class is left out of each run's mean (the
    headline Dice, ``dice_per_case_nonempty``), and a pair needs both runs to score it."""
    cases: tuple[str, ...] | None = None
    for s in seeds:
        held = tuple(
            sorted(c for c, v in runs[s].items() if v is not None and math.isfinite(float(v)))
        )
        if cases is None:
            cases = held
        elif held != cases:
            raise ValueError(
                f"{role} seed {s} scores other cases than seed {seeds[0]}: no paired table"
            )
    assert cases is not None
    table = np.array([[runs[s][c] for c in cases] for s in seeds], dtype=float)
    return cases, table.reshape(len(seeds), len(cases))


def paired_bootstrap(
    treated: PerCase,
    control: PerCase,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> BootstrapInterval | None:
    """Two-level paired bootstrap of ``treated - control`` over seeds and cases.

    ``treated`` and ``control`` map seed -> case -> per-case score; a case whose score is None
    or NaN does not hold the class and is left out, as the per-run mean leaves it out, so the
    point estimate is the mean over the common seeds of the per-run mean differences. Every
    resample draws the seeds with replacement, then the cases with replacement (one draw of
    cases for every seed and both methods: the differences stay paired by seed and case), and
    takes the mean difference over the drawn seeds x drawn cases; the interval is the
    percentile interval of those means. ``seed`` fixes the generator: same inputs, same digits.

    Returns None without a common seed or a case holding the class. Raises ValueError when the
    runs do not all score the same cases.
    """
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples {resamples} must be >= 1 and level {level} in (0, 1)")
    seeds = sorted(set(treated) & set(control))
    if not seeds:
        return None
    cases, a = _case_table(treated, seeds, "treated")
    other, b = _case_table(control, seeds, "control")
    if other != cases:
        raise ValueError("treated and control score other cases: no paired table")
    if not cases:
        return None
    diff = a - b  # seeds x cases
    n_s, n_c = diff.shape
    rng = np.random.default_rng(seed)
    seed_draw = rng.integers(0, n_s, (resamples, n_s))
    case_draw = rng.integers(0, n_c, (resamples, n_c))
    # the mean of diff[seed_draw[b]][:, case_draw[b]] is a weighted sum: how often each seed
    # and each case was drawn, over the draws (one matrix product, not a loop over resamples)
    seed_w = _counts(seed_draw, n_s) / n_s
    case_w = _counts(case_draw, n_c) / n_c
    means = np.einsum("bs,sc,bc->b", seed_w, diff, case_w)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return BootstrapInterval(
        tuple(seeds), cases, float(diff.mean(axis=1).mean()), float(low), float(high), resamples
    )


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``0 .. n-1`` occurs in each row of ``draws``."""
    rows = draws.shape[0]
    flat = draws + n * np.arange(rows)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * n).reshape(rows, n).astype(float)
