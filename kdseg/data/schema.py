"""What a self-describing checkpoint or artefact must carry, checked before anything uses it.

A checkpoint's ``hyper_parameters`` and an artefact's ``kdseg`` metadata both hold a ``model``
section (at least the registered ``name``) and a ``data`` section (the task, the 2.5D context,
channels, classes and the preprocessing config). A file edited by hand, written by another tool
or by an older kdseg fails here with one line naming the file and the field, not later with a
``KeyError`` deep inside prediction.
"""

from __future__ import annotations

import os
from typing import Any

from kdseg.errors import InputError


def check_model_info(path: str | os.PathLike, model: Any, where: str) -> dict[str, Any]:
    """The ``model`` section: a mapping with a string ``name``; returned as a plain dict."""
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise InputError(path, f"{where}: the model section has no model name")
    return dict(model)


def check_data_info(path: str | os.PathLike, data: Any, where: str) -> dict[str, Any]:
    """The ``data`` section: task, context, channels, classes and a usable preprocessing config.

    ``where`` says which part of the file was read (``checkpoint`` or ``ONNX metadata``).
    """
    if not isinstance(data, dict):
        raise InputError(path, f"{where}: the data section is not a mapping")
    from kdseg.data.preprocess import PreprocessConfig
    from kdseg.data.tasks import Task

    try:
        Task(data.get("task"))
    except ValueError as exc:
        raise InputError(path, f"{where}: {exc}") from None
    for key in ("context", "in_channels", "num_classes"):
        value = data.get(key, 0 if key == "context" else None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(path, f"{where}: data.{key} is {value!r}, not a whole number")
    pre = data.get("preprocess")
    if not isinstance(pre, dict):
        raise InputError(path, f"{where}: no preprocessing config (data.preprocess)")
    try:
        config = PreprocessConfig.from_dict(pre)
        if len(config.window) != 2 or config.window[0] >= config.window[1]:
            raise ValueError(f"window {config.window}")
    except (TypeError, ValueError, KeyError, InputError) as exc:
        raise InputError(path, f"{where}: unusable data.preprocess ({exc})") from None
    return dict(data)
