"""CutMix images for the distillation terms: the teacher labels what the labels cannot.

Beyond the paper (an option of kdseg, off by default). "Function matching" (Beyer et al., *A
good teacher is patient and consistent*, CVPR 2022) distils on images that teacher and student
both see with the same strong mix-style augmentation: a student with few training images then
learns the teacher's function on many new inputs, not only the teacher's answers on the
training slices. For segmentation, CutMix (Yun et al., ICCV 2019) is the mix that keeps every
pixel a real image pixel; French et al. (BMVC 2020, *Semi-supervised semantic segmentation needs
strong, varied perturbations*) showed it is the perturbation that makes teacher-student
consistency work for dense prediction.

With ``distill.mix: cutmix`` each training step runs L_seg on the clean batch, exactly as the
student trained alone does, and every distillation term on a CutMix of that batch: image ``i``
gets a box of image ``perm[i]`` pasted in, with a box area drawn uniformly from [0, 1] (CutMix's
Beta(1, 1)), its centre uniform in the image and the box clipped at the border. The same box is
applied to the labels and the stored teacher probabilities, so label-needing terms (RAD, the
balanced and region KD) see the composite's exact labels. An image is unlabeled when either
source is, unless nothing of another image was pasted into it. All of it works on (B, C,
*spatial) tensors of any spatial rank.

The same mix serves plain training as a control (``loss.mix: cutmix``): L_seg on the clean batch
plus L_seg on a CutMix of it against the mixed labels, at the same number of student passes,
so a study can tell what the teacher adds from what the mixed images add.

The draws come from a generator of their own (``MixGenerator``), seeded from the run's seed and
saved in checkpoints, so the mix changes neither the data order nor the global random streams'
seeding, and a resumed run draws on where it stopped.
"""

from __future__ import annotations

from typing import Any

import torch

from kdseg.errors import ConfigError

MIX_KINDS = ("cutmix",)
#: Added to the run's seed for the mix generator, so it never equals the data's streams.
MIX_SEED_OFFSET = 0x6D6978


def check_mix(kind: Any, key: str = "distill.mix") -> str | None:
    """``None`` (off) or a known mix name; anything else is a config error about ``key``."""
    if kind is None or kind is False or (isinstance(kind, str) and kind.lower() in {"", "none"}):
        return None
    if not isinstance(kind, str) or kind.lower() not in MIX_KINDS:
        raise ConfigError(f"{key} must be null or one of {list(MIX_KINDS)}, got {kind!r}")
    return kind.lower()


def cutmix_boxes(
    batch: int, spatial: tuple[int, ...], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(perm, mask): the partner of each image and a (B, 1, *spatial) bool mask of its box.

    The box's unclipped volume is a fraction ``u ~ U(0, 1)`` of the image (each side ``u ** (1 /
    ndim)`` of the image's side), its centre uniform over the image, then clipped at the border.
    """
    perm = torch.randperm(batch, generator=generator)
    mask = torch.zeros((batch, 1, *spatial), dtype=torch.bool)
    draws = torch.rand((batch, 1 + len(spatial)), generator=generator, dtype=torch.float64)
    for i in range(batch):
        side = float(draws[i, 0]) ** (1.0 / len(spatial))
        box: list[slice] = []
        for d, size in enumerate(spatial):
            centre = float(draws[i, 1 + d]) * size
            half = side * size / 2.0
            lo, hi = round(max(0.0, centre - half)), round(min(float(size), centre + half))
            box.append(slice(lo, hi))
        mask[(i, 0, *box)] = True
    return perm, mask


def paste(x: torch.Tensor, perm: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with each image's box taken from its partner ``x[perm]`` (a new tensor)."""
    return torch.where(mask.to(x.device), x[perm.to(x.device)], x)


class MixGenerator:
    """The mix's own random stream: seeded from the run's seed, saved in checkpoints."""

    KEY = "kdseg_mix_generator"

    def __init__(
        self, kind: str, seed: int, rank: int = 0, world_size: int = 1, stream: int = 0
    ) -> None:
        """``stream``: 0 for the distillation terms' mix, 1 for L_seg's (``loss.mix``), so the
        two draw different boxes and are saved under their own checkpoint keys."""
        self.kind = kind
        self.generator = torch.Generator().manual_seed(int(seed) + MIX_SEED_OFFSET + stream)
        self.rank, self.world_size = rank, world_size
        self.key = self.KEY if stream == 0 else f"{self.KEY}_{stream}"

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A CutMix of ``batch``: image, label, the teacher's stored probabilities and the
        ``labeled`` flags mixed with the same boxes; other keys kept as they are.

        Under DDP every rank draws the boxes of all ranks and keeps its own, so the ranks mix
        differently while their generators stay equal (rank 0's checkpoint fits them all)."""
        images = batch["image"]
        spatial = tuple(images.shape[2:])
        draws = [
            cutmix_boxes(images.shape[0], spatial, self.generator) for _ in range(self.world_size)
        ]
        perm, mask = draws[self.rank]
        out = dict(batch)
        for key in ("image", "label", "teacher"):
            if key in batch:
                out[key] = paste(batch[key], perm, mask)
        labeled = batch.get("labeled")
        if labeled is not None:
            # a label from the partner counts only where its box holds pixels of another image
            pasted = mask.flatten(1).any(1) & (perm != torch.arange(len(perm)))
            partner = labeled[perm.to(labeled.device)] | ~pasted.to(labeled.device)
            out["labeled"] = labeled & partner
        return out

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def load(self, state: torch.Tensor) -> None:
        self.generator.set_state(state.cpu())
