"""Segmentation networks: registry, the logits-plus-taps output type, one file per network."""

from kdseg.models.registry import (
    available_models,
    batch_norm_refusal,
    build_from_config,
    build_model,
    model_options,
    register_model,
)
from kdseg.models.taps import LogitsOnly, SegmentationModel, SegOutput, TapInfo

__all__ = [
    "LogitsOnly",
    "SegOutput",
    "SegmentationModel",
    "TapInfo",
    "available_models",
    "batch_norm_refusal",
    "build_from_config",
    "build_model",
    "model_options",
    "register_model",
]
