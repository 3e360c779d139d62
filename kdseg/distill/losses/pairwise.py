"""SKD pairwise affinity distillation (Liu et al., CVPR 2019 / TPAMI 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdseg.distill.adapters import adaptive_avg_pool
from kdseg.distill.losses.base import DistillLoss, cosine_gram
from kdseg.distill.losses.registry import register_loss


@register_loss("skd")
class PairwiseAffinityLoss(DistillLoss):
    """Pairwise (structured) distillation of pixel-to-pixel similarities.

    Both features are average-pooled to a fixed ``grid`` (each node summarises a patch, the
    paper's beta x beta granularity), then ``a_ij = f_i . f_j / (||f_i|| ||f_j||)`` over all
    node pairs; ``L = mean_{b, i, j} (a_S(i, j) - a_T(i, j))^2`` (Liu et al. 2019, eq. 2).
    The affinity is computed per network, so channel counts may differ, and pooling to the same
    grid aligns any spatial sizes. ``grid`` is an int (repeated per spatial dim) or one size per
    dim; the affinity has grid^(2 * dims) entries per sample, so keep it small in 3D.
    """

    def __init__(self, grid: int | Sequence[int] = 8) -> None:
        super().__init__()
        cells = [grid] if isinstance(grid, int) else list(grid)
        if not cells or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in cells):
            raise ValueError(f"grid must be a whole number >= 1 (or one per dim), got {grid!r}")
        self.grid = int(grid) if isinstance(grid, int) else tuple(int(g) for g in grid)

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        affinities = [
            cosine_gram(adaptive_avg_pool(x, self.grid).flatten(2).transpose(1, 2))
            for x in (student, teacher)
        ]
        return (affinities[0] - affinities[1]).pow(2).mean()

    def extra_repr(self) -> str:
        return f"grid={self.grid}"
