"""scripts/roi_ceiling.py: the ground truth through a stage-2 grid and back. A grid near the
phantom's spacing keeps it (Dice near 1), a coarse one loses small structures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():  # noqa: ANN202 - a module loaded from a path
    spec = importlib.util.spec_from_file_location("roi_ceiling", ROOT / "scripts/roi_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceiling_is_near_one_on_a_fine_grid_and_drops_on_a_coarse_one(phantom_lits: Path) -> None:
    from kdseg.data.preprocess import Preprocessor
    from kdseg.data.preprocess_config import PreprocessConfig

    script = _script()

    def pre(mm: float, size: int) -> Preprocessor:
        config = {"body_crop": False, "roi": "organ", "roi_margin_mm": 10, "roi_jitter_mm": 0}
        config |= {"spacing_mm": [mm, mm], "in_plane_size": [size, size]}
        return Preprocessor(PreprocessConfig.from_dict(config))

    fine = script.ceiling(str(phantom_lits), "volume-0", pre(1.0, 256))
    coarse = script.ceiling(str(phantom_lits), "volume-0", pre(12.0, 24))
    assert fine[2] > 0.98 and coarse[2] < fine[2]  # organ
    assert fine[0] == 0 or fine[1] > coarse[1]  # tumor, when the case has one
