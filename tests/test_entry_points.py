"""Each console script of pyproject.toml also runs as ``python -m kdseg.cli.<name>``.

Without ``if __name__ == "__main__": main()`` the module is imported and the command exits 0
having done nothing: a run script written that way (e.g. to run a working tree's code with
another environment's Python) silently trains, evaluates or exports nothing.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _scripts() -> dict[str, str]:
    """``kdseg-<name>`` -> its module, from pyproject.toml's ``[project.scripts]``."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^(kdseg-[\w-]+)\s*=\s*"([\w.]+):main"', section, re.M))


def _runs_main_as_a_script(module: str) -> bool:
    tree = ast.parse((ROOT / Path(*module.split("."))).with_suffix(".py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and ast.unparse(node.test).replace("'", '"') == '__name__ == "__main__"'
            and any(ast.unparse(s) == "main()" for s in node.body)
        ):
            return True
    return False


@pytest.mark.parametrize(("script", "module"), sorted(_scripts().items()))
def test_every_command_runs_with_python_m(script: str, module: str) -> None:
    assert _runs_main_as_a_script(module), f"python -m {module} would not run {script}"


def test_python_m_does_the_work(tmp_path: Path) -> None:
    """One command run for real: its output is written, as the console script writes it."""
    assert len(_scripts()) >= 12
    root = tmp_path / "lits"
    params = "params={size_range: [32, 32], slices_range: [8, 8], max_tumors: 1}"
    result = subprocess.run(
        [sys.executable, "-m", "kdseg.cli.phantom", "dataset=lits", f"root={root}",
         "n_cases=1", "seed=1", params],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 lits phantom case(s)" in result.stdout
    assert sorted(p.name for p in root.glob("*.nii.gz")) == [
        "segmentation-0.nii.gz",
        "volume-0.nii.gz",
    ]
