"""Logit KD inside the dilated organ mask (beyond the paper): no KL on far background."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from kdseg.distill.adapters import spatial_dims
from kdseg.distill.losses.base import pixel_classes
from kdseg.distill.losses.prediction import SoftmaxKLLoss
from kdseg.distill.losses.registry import register_loss

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def dilate(mask: torch.Tensor, radius: int | Sequence[int]) -> torch.Tensor:
    """Binary dilation of a (B, *spatial) boolean mask by ``radius`` pixels (a box of side
    2r + 1; an int is repeated over every spatial dim, or one radius per dim).

    Max pooling with stride 1, one spatial axis at a time (a box is separable: the same result
    as one (2r + 1)^dims pool, at a fraction of the cost), so the same code serves 2D and 3D.
    Radius 0 returns the mask.
    """
    dims = mask.ndim - 1
    radii = (int(radius),) * dims if isinstance(radius, int) else tuple(int(r) for r in radius)
    if len(radii) != dims:
        raise ValueError(f"dilation {radii} does not match a {dims}-D mask")
    grown = mask[:, None].float()
    for axis, r in enumerate(radii):
        if r:
            kernel = tuple(2 * r + 1 if a == axis else 1 for a in range(dims))
            padding = tuple(r if a == axis else 0 for a in range(dims))
            grown = _MAX_POOL[dims](grown, kernel, stride=1, padding=padding)
    return grown[:, 0] > 0


@register_loss("kd_region", temperature=1.0, dilation=4)
class RegionKLLoss(SoftmaxKLLoss):
    """Pixel-wise Hinton KD restricted to the dilated foreground (kdseg, beyond the paper).

    ``L = T^2 / |R| sum_{x in R} KL(softmax(z_T(x) / T) || softmax(z_S(x) / T))`` over the
    batch's pixels R within ``dilation`` pixels (a box, per spatial dim) of a foreground pixel
    (class > 0: organ or lesion). Far background, most of a CT slice and most of pixel KD's
    value, is left to L_seg; the KL then spends its weight on the organ, its lesions and the
    border around them. Foreground is the ground truth (resized, nearest, to the teacher's
    map); pixels labeled outside [0, C) (e.g. -1, unlabeled) and whole batches without labels
    use the teacher's argmax. A batch without foreground gives 0 (attached to the graph).

    Channels (classes) must match; a student map of another size is resized to the teacher's.
    ``dilation`` is in pixels of the teacher's map: an int for every spatial dim, or one per dim
    (e.g. ``[1, 4, 4]`` for thick slices in 3D).
    """

    def __init__(self, temperature: float = 1.0, dilation: int | Sequence[int] = 4) -> None:
        super().__init__(temperature)
        radii = [dilation] if isinstance(dilation, int) else list(dilation)
        if not radii or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in radii):
            raise ValueError(
                f"dilation must be a whole number >= 0 (or one per dim), got {dilation}"
            )
        self.dilation = int(dilation) if isinstance(dilation, int) else tuple(radii)

    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        spatial_dims(teacher)  # 1-3 spatial dims, else a clear error (max pooling needs it)
        return super().compute(student, teacher, labels)

    def reduce(
        self, per_pixel: torch.Tensor, labels: torch.Tensor | None, teacher: torch.Tensor
    ) -> torch.Tensor:
        region = dilate(pixel_classes(labels, teacher, self.tap_strides[1]) > 0, self.dilation)
        # where, not a product: a pixel outside the region never counts, even a NaN one
        inside = torch.where(region, per_pixel, per_pixel.new_zeros(()))
        return inside.sum() / region.sum().clamp_min(1).to(per_pixel.dtype)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, dilation={self.dilation}"
