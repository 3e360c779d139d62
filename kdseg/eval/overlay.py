"""Montage of representative axial slices with the organ and tumor outlined.

Array convention: ``image`` and ``label`` are (X, Y, Z) arrays with Z the axial (slice) axis, as
nibabel loads a NIfTI volume. For RAS-canonical volumes (``nibabel.as_closest_canonical``) each
slice is drawn in the radiological convention: anterior up, the patient's right on the viewer's
left. Other orientations are drawn the same way, index for index.

Slices: the Z range that contains the organ (the whole volume when there is none), with up to a
third of the panels given to the slices with the largest tumor area and the rest spread evenly
over the organ. Each panel is titled ``z = <index>``, or with the caller's ``slice_titles``
(``kdseg-predict``, which draws RAS arrays whatever the input's orientation, gives the label's
own array index of each slice). Figures are built on a pyplot-free Agg canvas, so no global
backend state is touched and the PNG writer and the array for experiment loggers share one
renderer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kdseg.errors import atomic_path

ORGAN_COLOUR = "lime"
TUMOR_COLOUR = "red"
PANEL_INCHES = 3.0
DPI = 100


def select_slices(
    label: np.ndarray,
    n_slices: int,
    organ_labels: Sequence[int] | None = (1, 2),
    tumor_label: int | None = 2,
) -> list[int]:
    """Sorted, distinct Z indices of the slices to show (see the module docstring). ``None``:
    the model predicts no organ (a tumor-only one) or no tumor (an organ-only one)."""
    if n_slices < 1:
        raise ValueError(f"n_slices must be at least 1, got {n_slices}")
    organ_z = np.flatnonzero(np.isin(label, organ_labels or ()).any(axis=(0, 1)))
    if organ_z.size == 0:
        organ_z = np.arange(label.shape[2])
    n = min(n_slices, organ_z.size)
    tumor_area = (label == (-1 if tumor_label is None else tumor_label)).sum(axis=(0, 1))
    n_tumor = min(max(1, n // 3), int((tumor_area > 0).sum()))
    chosen = {int(z) for z in np.argsort(-tumor_area, kind="stable")[:n_tumor]}
    spread = np.linspace(0, organ_z.size - 1, n - len(chosen)).round().astype(int)
    chosen.update(int(z) for z in organ_z[spread])
    for z in organ_z:  # a spread slice that was also a tumor slice leaves a gap: fill it
        if len(chosen) >= n:
            break
        chosen.add(int(z))
    return sorted(chosen)


def _display(slice2d: np.ndarray) -> np.ndarray:
    """An (X, Y) slice as rows/columns for ``imshow``: anterior up, patient's right on the left."""
    return slice2d.T[::-1, ::-1]


def _render(
    image: np.ndarray,
    label: np.ndarray,
    n_slices: int,
    window: tuple[float, float] | None,
    title: str | None,
    organ_labels: Sequence[int] | None,
    tumor_label: int | None,
    spacing: Sequence[float] | None,
    slice_titles: Sequence[str] | None = None,
) -> Figure:
    """Draw the montage on an Agg canvas; the one renderer behind both public functions."""
    image = np.asarray(image)
    label = np.asarray(label)
    if image.ndim != 3 or image.shape != label.shape:
        raise ValueError(f"image {image.shape} and label {label.shape} must be equal 3-D shapes")
    slices = select_slices(label, n_slices, organ_labels, tumor_label)
    vmin, vmax = window if window is not None else (float(image.min()), float(image.max()))
    aspect = 1.0 if spacing is None else float(spacing[1]) / float(spacing[0])
    n_cols = min(3, len(slices))
    n_rows = math.ceil(len(slices) / n_cols)
    fig = Figure(
        figsize=(PANEL_INCHES * n_cols, PANEL_INCHES * n_rows + 0.6), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, z in zip(axes.flat[: len(slices)], slices, strict=True):
        ax.imshow(_display(image[:, :, z]), cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect)
        for mask, colour in (
            (np.isin(label[:, :, z], organ_labels or ()), ORGAN_COLOUR),
            (label[:, :, z] == (-1 if tumor_label is None else tumor_label), TUMOR_COLOUR),
        ):
            if mask.any():
                ax.contour(
                    _display(mask).astype(np.float32), levels=[0.5], colors=colour, linewidths=1.0
                )
        ax.set_title(f"z = {z}" if slice_titles is None else slice_titles[z], fontsize=9)
    handles = [  # what the model predicts: a tumor-only model's tumor is no "organ"
        Line2D([], [], color=colour, label=name)
        for name, colour, drawn in (
            ("organ", ORGAN_COLOUR, organ_labels),
            ("tumor", TUMOR_COLOUR, tumor_label is not None),
        )
        if drawn
    ]
    fig.legend(
        handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=9
    )
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def overlay_figure_array(
    image: np.ndarray,
    label: np.ndarray,
    n_slices: int = 6,
    window: tuple[float, float] | None = (-160, 240),
    title: str | None = None,
    organ_labels: Sequence[int] | None = (1, 2),
    tumor_label: int | None = 2,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """The montage as an (H, W, 3) uint8 RGB array, e.g. for ``wandb.Image``.

    Arguments as in :func:`save_overlay`.
    """
    fig = _render(image, label, n_slices, window, title, organ_labels, tumor_label, spacing)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_overlay(
    image: np.ndarray,
    label: np.ndarray,
    path: str | os.PathLike,
    n_slices: int = 6,
    window: tuple[float, float] | None = (-160, 240),
    title: str | None = None,
    organ_labels: Sequence[int] | None = (1, 2),
    tumor_label: int | None = 2,
    spacing: Sequence[float] | None = None,
    slice_titles: Sequence[str] | None = None,
) -> Path:
    """Write the montage of ``n_slices`` axial slices as a PNG, atomically; return the path.

    ``image`` (HU) and ``label`` are (X, Y, Z) arrays; ``window`` is the displayed HU range
    (``None``: the image's full range); ``spacing`` (mm, optional) sets the pixel aspect ratio.
    ``slice_titles``: a panel title for each Z index (default ``z = <index>``).
    ``organ_labels`` / ``tumor_label``: as :func:`kdseg.eval.lesions.report_labels` gives them
    for the model's task (``None``: not predicted, not outlined, not in the legend).
    """
    fig = _render(
        image, label, n_slices, window, title, organ_labels, tumor_label, spacing, slice_titles
    )
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
