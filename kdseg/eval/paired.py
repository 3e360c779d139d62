"""Paired comparisons over seeds: distilled minus alone, seed by seed, with a 95% interval.

Under kdseg's seeding a seed fixes the student's initial weights and the data order in
``kdseg-train`` and ``kdseg-distill`` alike (``summary.json`` records ``init_weights_sha256``),
so the run of seed s with a teacher and the run of seed s without one differ only in the
method. The per-seed differences are then the honest unit of evidence: their mean, and a
Student-t 95% interval around it (n - 1 degrees of freedom), say whether the method helps
beyond seed-to-seed noise. The interval is above zero when its low end is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

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
