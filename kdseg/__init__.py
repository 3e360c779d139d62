"""kdseg: knowledge distillation for medical image segmentation, CPU deployment included."""

__version__ = "0.1.0"
