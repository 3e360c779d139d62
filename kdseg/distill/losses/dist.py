"""DIST (Huang et al., NeurIPS 2022) per pixel: correlation, not exact match, of class
probabilities, across classes per pixel and across pixels per class (beyond the paper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdseg.distill.adapters import resize_to
from kdseg.distill.losses.base import DistillLoss, check_number
from kdseg.distill.losses.registry import register_loss


def pearson_distance(a: torch.Tensor, b: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """``1 - rho(a, b)`` along ``dim``: one minus Pearson's correlation (the cosine of the
    centred vectors). In [0, 2]; 0 when ``a`` is ``b`` or any positive affine map of it. A
    constant vector has no direction: against another constant vector the distance is 0 (equal
    inputs give 0, as every loss here must), against one that varies it counts as uncorrelated
    (distance 1, zero gradient).

    Written out rather than with ``F.cosine_similarity``, which is about 10x slower along a
    short dimension (the C classes of every pixel) on CPU.
    """
    # flat: what centring leaves is rounding error (float32: ~1e-6 of the vector's norm)
    flat = [
        (x - x.mean(dim=dim, keepdim=True), 1e-12 * (x * x).sum(dim) + eps * eps) for x in (a, b)
    ]
    (a, floor_a), (b, floor_b) = flat
    aa, bb = (a * a).sum(dim), (b * b).sum(dim)
    flat_a, flat_b = aa <= floor_a, bb <= floor_b
    # the norms' product; where it is below eps^2 (a class the teacher is sure is absent:
    # probabilities of 1e-7 to 1e-9 that vary from pixel to pixel), as the product of the two
    # norms, not clamped: a clamp there gave 1 - rho of about 1 for a vector against itself
    one = torch.ones_like(aa)
    small = torch.where(flat_a, one, aa).sqrt() * torch.where(flat_b, one, bb).sqrt()
    product = aa * bb
    norm = torch.where(product >= eps * eps, product.clamp_min(eps * eps).sqrt(), small)
    distance = 1.0 - (a * b).sum(dim) / norm
    # a flat vector has no direction: 0 against another flat one, else uncorrelated (1), and
    # no gradient either way
    flat_distance = torch.where(flat_a & flat_b, 0.0, 1.0).to(distance.dtype)
    return torch.where(flat_a | flat_b, flat_distance, distance)


@register_loss("dist", temperature=1.0, inter_weight=1.0, intra_weight=1.0)
class DISTLoss(DistillLoss):
    """DIST: Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher",
    NeurIPS 2022, in its semantic-segmentation form (every pixel of the batch is a sample).

    With ``Y = softmax(Z / tau)`` over the C classes, arranged as an (N, C) matrix over the
    batch's N pixels (voxels), and ``d(u, v) = 1 - pearson(u, v)``:

    - inter-class relation ``L_inter = 1/N sum_i d(Y_S[i, :], Y_T[i, :])`` (each pixel's
      ranking of the classes);
    - intra-class relation ``L_intra = 1/C sum_c d(Y_S[:, c], Y_T[:, c])`` (each class's
      probability map over all pixels);
    - ``L = tau^2 (beta L_inter + gamma L_intra)``, ``beta = inter_weight``,
      ``gamma = intra_weight`` (paper eq. 6-8; tau = beta = gamma = 1 in its segmentation
      experiments).

    Why it fits the rare-class failure (beyond the EMKD paper, kdseg's choice): correlation
    asks the student to rank as the teacher does, not to match its probabilities exactly,
    which DIST's authors show hurts when the teacher is much stronger; and the intra-class
    term weighs the tumor's probability map as much as the background's (1/C each), whatever
    share of the pixels it covers. Channels (classes) must match; a student map of another
    size is resized (bi/trilinear) to the teacher's.

    With two classes (``data.task=organ`` or ``tumor``) a pixel's centred probabilities are
    ``(p - 1/2, 1/2 - p)``, so its inter-class correlation is +1 or -1: ``L_inter`` is a step
    with no useful gradient, and only the intra-class term distils. Set ``inter_weight: 0``
    there to say so.
    """

    needs_equal_channels = True

    def __init__(
        self, temperature: float = 1.0, inter_weight: float = 1.0, intra_weight: float = 1.0
    ) -> None:
        super().__init__()
        temperature = check_number("temperature", temperature)
        inter_weight = check_number("inter_weight", inter_weight, inclusive=True)
        intra_weight = check_number("intra_weight", intra_weight, inclusive=True)
        if inter_weight + intra_weight == 0:
            raise ValueError(
                f"inter_weight and intra_weight must be >= 0, not both 0; got "
                f"{inter_weight} and {intra_weight}"
            )
        self.temperature = float(temperature)
        self.inter_weight = float(inter_weight)
        self.intra_weight = float(intra_weight)

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        student = resize_to(student, teacher.shape[2:])
        y_s, y_t = (F.softmax(x / self.temperature, dim=1) for x in (student, teacher))
        inter = pearson_distance(y_s, y_t, dim=1).mean()  # per pixel, across the C classes
        per_class = [y.movedim(1, 0).flatten(1) for y in (y_s, y_t)]  # (C, every pixel)
        intra = pearson_distance(*per_class, dim=1).mean()
        loss = self.inter_weight * inter + self.intra_weight * intra
        return loss * self.temperature**2

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, inter_weight={self.inter_weight}, "
            f"intra_weight={self.intra_weight}"
        )
