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
    try:
        config = PreprocessConfig.from_dict(pre)
        if len(config.window) != 2 or config.window[0] >= config.window[1]:
            raise ValueError(f"window {config.window}")
        for key in ("in_plane_size", "crop_size"):
            size = getattr(config, key)
            if size is not None and (len(size) != 2 or not all(_positive_int(v) for v in size)):
                raise ValueError(f"{key} {list(size)}: not two positive whole numbers")
        codes = config.axcodes.upper()
        axes = {c: i for i, pair in enumerate(("LR", "PA", "IS")) for c in pair}
        if len(codes) != 3 or sorted(axes.get(c, -1) for c in codes) != [0, 1, 2]:
            raise ValueError(f"axcodes {config.axcodes!r}: not one of L/R, P/A and I/S each")
    except (TypeError, ValueError, KeyError, InputError) as exc:
        raise InputError(path, f"{where}: unusable data.preprocess ({exc})") from None
    return dict(data)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
