"""docs/bench.md and docs/bench.png: every deployment artefact of the trained models, timed.

Input: a runs folder holding (trained with ``experiment=demo`` on phantom LiTS, see the report)

    <runs>/enet_emkd, <runs>/mobilenetv2_emkd      distilled students (EMKD from RA-UNet)
    <runs>/raunet                                  the RA-UNet teacher (full width)
    <runs>/pspnet                                  PSPNet at full width (made here if missing:
                                                   one training step, so untrained weights)

Every step is a documented command: ``kdseg-train`` (PSPNet), ``kdseg-export`` (ONNX fp32,
int8, pruned, AOTInductor) and finally ``kdseg-bench`` with a generated entries file
(``<runs>/../bench_entries.yaml``). Artefacts that exist are reused (delete them to re-export).

    .venv/bin/python scripts/bench_deploy.py --runs RUNS --data PHANTOM_LITS_DIR
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(command: str, *args: str) -> None:
    """Run one kdseg command from the repository root, echoing it."""
    print(f"\n$ {command} {' '.join(args)}", flush=True)
    subprocess.run([str(BIN / command), *args], check=True, cwd=ROOT)


def ckpt(runs: Path, name: str) -> Path:
    return runs / name / "checkpoints" / "best.ckpt"


def export(runs: Path, name: str, output: str, *args: str) -> str:
    """``kdseg-export`` of run ``name`` to ``<run>/export/<output>`` unless it exists."""
    target = runs / name / "export" / output
    if not target.exists():
        run("kdseg-export", f"ckpt={ckpt(runs, name)}", f"output={target}", *args)
    return str(target)


def untrained_pspnet(runs: Path, data: Path) -> None:
    """PSPNet at full width after one training step: a real checkpoint with untrained weights."""
    if ckpt(runs, "pspnet").exists():
        return
    run(
        "kdseg-train",
        "experiment=demo",
        f"data.root={data}",
        f"paths.runs_dir={runs}",
        "logger=csv",
        "model=pspnet",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        f"hydra.run.dir={runs / 'pspnet'}",
    )


def entries(runs: Path) -> list[dict]:
    """The benchmark's rows: students on every backend, preprocessing variants, teachers."""
    enet, mnet = str(ckpt(runs, "enet_emkd")), str(ckpt(runs, "mobilenetv2_emkd"))
    rows = [
        {"name": "ENet EMKD, PyTorch", "ckpt": enet, "backend": "torch", "role": "distilled"},
        {
            "name": "ENet EMKD, torch.compile",
            "ckpt": enet,
            "backend": "compile",
            "role": "distilled",
        },
        {
            "name": "ENet EMKD, ONNX fp32",
            "ckpt": enet,
            "backend": "onnx",
            "role": "distilled",
            "artifact": export(runs, "enet_emkd", "enet.onnx"),
        },
        {
            "name": "ENet EMKD, ONNX int8",
            "backend": "onnx",
            "role": "distilled",
            "artifact": export(runs, "enet_emkd", "enet.int8.onnx", "quantize=int8"),
        },
        {
            "name": "ENet EMKD, AOTInductor",
            "backend": "aoti",
            "role": "distilled",
            "artifact": export(runs, "enet_emkd", "enet.pt2", "format=aoti"),
        },
        {
            "name": "ENet EMKD pruned 30%, ONNX fp32",
            "backend": "onnx",
            "role": "distilled",
            "artifact": export(runs, "enet_emkd", "enet-pruned30.onnx", "prune=0.3"),
        },
        {
            "name": "MobileNetV2 EMKD, PyTorch",
            "ckpt": mnet,
            "backend": "torch",
            "role": "distilled",
        },
        {
            "name": "MobileNetV2 EMKD, ONNX fp32",
            "ckpt": mnet,
            "backend": "onnx",
            "role": "distilled",
            "artifact": export(runs, "mobilenetv2_emkd", "mobilenetv2.onnx"),
        },
        {
            "name": "MobileNetV2 EMKD, ONNX int8",
            "backend": "onnx",
            "role": "distilled",
            "artifact": export(runs, "mobilenetv2_emkd", "mobilenetv2.int8.onnx", "quantize=int8"),
        },
    ]
    enet_onnx = rows[2]["artifact"]
    for name, pre in (
        ("128x128", {"in_plane_size": [128, 128]}),
        ("no body crop", {"body_crop": False}),
    ):
        rows.append(
            {
                "name": f"ENet EMKD, ONNX fp32, {name}",
                "ckpt": enet,
                "artifact": enet_onnx,
                "backend": "onnx",
                "role": "distilled",
                "preprocess": pre,
            }
        )
        rows.append(
            {
                "name": f"ENet EMKD, PyTorch, {name}",
                "ckpt": enet,
                "backend": "torch",
                "role": "distilled",
                "preprocess": pre,
            }
        )
    teacher, psp = str(ckpt(runs, "raunet")), str(ckpt(runs, "pspnet"))
    rows += [
        {
            "name": "RA-UNet teacher, PyTorch",
            "ckpt": teacher,
            "backend": "torch",
            "role": "teacher",
        },
        {
            "name": "RA-UNet teacher, ONNX fp32",
            "ckpt": teacher,
            "backend": "onnx",
            "role": "teacher",
            "artifact": export(runs, "raunet", "raunet.onnx"),
        },
        {
            "name": "PSPNet, PyTorch",
            "ckpt": psp,
            "backend": "torch",
            "role": "teacher",
            "weights": "untrained",
            "dice": False,
        },
        {
            "name": "PSPNet, ONNX fp32",
            "ckpt": psp,
            "backend": "onnx",
            "role": "teacher",
            "weights": "untrained",
            "dice": False,
            "artifact": export(runs, "pspnet", "pspnet.onnx"),
        },
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument(
        "--data", type=Path, required=True, help="phantom LiTS folder (test split: Dice)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--volume-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--runs-per-round", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    untrained_pspnet(args.runs, args.data)
    entries_file = args.runs.parent / "bench_entries.yaml"
    entries_file.write_text(yaml.safe_dump(entries(args.runs), sort_keys=False))
    run(
        "kdseg-bench",
        f"entries_file={entries_file}",
        f"data.root={args.data}",
        f"output_dir={args.out}",
        f"volume_dir={args.volume_dir or args.runs.parent / 'volumes'}",
        f"rounds={args.rounds}",
        f"runs={args.runs_per_round}",
    )


if __name__ == "__main__":
    main()
