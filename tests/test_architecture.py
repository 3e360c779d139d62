"""The import graph of kdseg: every arrow between packages points down, so there are no cycles.

Layers, from the ground floor up (docs: ../shared/ARCHITECTURE.md, the README's layout): a
module may import its own package and any lower layer, at module level or inside a function.
A new package has to be placed here before it can be imported by anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "kdseg"

LAYERS = {
    "errors": 0,  # the one error type and atomic writes
    "guards": 1,
    "models": 1,
    "data": 1,
    "config": 2,  # Hydra structured configs (read data's schemas)
    "distill": 2,
    "eval": 3,
    "lit": 4,
    "deploy": 5,
    "cli": 6,
    "entry": 7,  # the console scripts' entry points: import a command inside a try
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every ``kdseg.*`` module ``path`` imports, wherever in the file, with its line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        out += [(n, node.lineno) for n in names if n.startswith("kdseg.")]
    return out


def test_every_import_between_packages_points_down() -> None:
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        source = _package(module)
        if source in ("__init__", "kdseg"):
            continue
        assert source in LAYERS, f"{module}: package {source!r} has no layer in LAYERS"
        for target, line in _imports(path):
            package = _package(target)
            assert package in LAYERS, f"{path}:{line} imports unknown package {target}"
            if package != source and LAYERS[package] >= LAYERS[source]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} {source} -> {package}")
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The parser finds imports inside functions and TYPE_CHECKING blocks too."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kdseg.lit.train import fit\n"
        "def f():\n    import kdseg.cli.train\n"
    )
    assert [_package(m) for m, _ in _imports(source)] == ["lit", "cli"]
