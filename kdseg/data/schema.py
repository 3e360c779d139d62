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
    from kdseg.data.preprocess_config import PreprocessConfig
    from kdseg.data.tasks import Task

    try:
        Task(data.get("task"))
    except ValueError as exc:
        raise InputError(path, f"{where}: {exc}") from None
    for key in ("context", "in_channels", "num_classes"):
        value = data.get(key, 0 if key == "context" else None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(path, f"{where}: data.{key} is {value!r}, not a whole number")
    context = data.get("context", 0)
    if data["in_channels"] != 2 * context + 1:
        raise InputError(
            path,
            f"{where}: data.in_channels is {data['in_channels']}, but context {context} "
            f"stacks {2 * context + 1} slices",
        )
    task = Task(data.get("task"))
    if data["num_classes"] != task.num_classes:
        raise InputError(
            path,
            f"{where}: data.num_classes is {data['num_classes']}, but task {task.name} has "
            f"{task.num_classes}",
        )
    pre = data.get("preprocess")
    if not isinstance(pre, dict):
        raise InputError(path, f"{where}: no preprocessing config (data.preprocess)")
    try:  # the config checks its window, sizes and axis codes itself
        PreprocessConfig.from_dict(pre)
    except (TypeError, ValueError, KeyError, InputError) as exc:
        raise InputError(path, f"{where}: unusable data.preprocess ({exc})") from None
    return dict(data)
