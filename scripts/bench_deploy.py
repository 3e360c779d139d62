"""docs/bench.md and docs/bench.png: every deployment artefact of the demo's models, timed.

Input: the folder ``make demo`` writes (``.demo/``), whose runs are

    runs/demo/distilled     ENet distilled with EMKD from the RA-UNet teacher (width 1.0)
    runs/demo/teacher       the RA-UNet teacher (width 0.5, trained)

and to which this script adds, each with a documented command, when missing:

    runs/demo/mobilenetv2_emkd   MobileNetV2 distilled the same way (kdseg-distill, demo protocol)
    runs/demo/raunet_full        RA-UNet and PSPNet at the paper's width after one training step:
    runs/demo/pspnet_full        real checkpoints, untrained weights, timed only (no Dice)

then exports every artefact (``kdseg-export``: ONNX fp32, int8, pruned, AOTInductor) and runs
``kdseg-bench`` with a generated entries file (``<demo>/bench_entries.yaml``). Artefacts that
exist are reused (delete them to re-export).

    make demo && .venv/bin/python scripts/bench_deploy.py          # writes docs/bench.md, .png
    .venv/bin/python scripts/bench_deploy.py --demo DIR --out DIR --rounds 2
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


def demo_args(data: Path, runs: Path, name: str) -> list[str]:
    """The demo's protocol (``experiment=demo``) with the run written to ``runs/name``."""
    return [
        "experiment=demo",
        f"data.root={data}",
        f"paths.runs_dir={runs}",
        "logger=csv",
        f"hydra.run.dir={runs / name}",
    ]


def distilled_mobilenetv2(runs: Path, data: Path) -> None:
    """MobileNetV2 distilled from the demo's teacher with the demo's EMKD recipe."""
    if ckpt(runs, "mobilenetv2_emkd").exists():
        return
    run(
        "kdseg-distill",
        *demo_args(data, runs, "mobilenetv2_emkd"),
        f"teacher.ckpt={ckpt(runs, 'teacher')}",
        "student=mobilenetv2",
        "student.width=1.0",
        "distill=emkd",
    )


def untrained_full_width(runs: Path, data: Path, model: str) -> str:
    """``model`` at the paper's width after one training step: a real checkpoint, untrained."""
    name = f"{model}_full"
    if not ckpt(runs, name).exists():
        run(
            "kdseg-train",
            *demo_args(data, runs, name),
            f"model={model}",
            "model.width=1.0",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=1",
            "+trainer.limit_val_batches=1",
        )
    return name


def entries(runs: Path) -> list[dict]:
    """The benchmark's rows: students on every backend, preprocessing variants, teachers."""
    enet, mnet = str(ckpt(runs, "distilled")), str(ckpt(runs, "mobilenetv2_emkd"))
    enet_onnx = export(runs, "distilled", "enet.onnx")
    mnet_onnx = export(runs, "mobilenetv2_emkd", "mobilenetv2.onnx")
    mnet_int8 = export(runs, "mobilenetv2_emkd", "mobilenetv2.int8.onnx", "quantize=int8")
    distilled = {"role": "distilled"}
    rows = [
        {"name": "ENet EMKD, PyTorch", "ckpt": enet, "backend": "torch", **distilled},
        {"name": "ENet EMKD, torch.compile", "ckpt": enet, "backend": "compile", **distilled},
        {"name": "ENet EMKD, ONNX fp32", "artifact": enet_onnx, "backend": "onnx", **distilled},
        {
            "name": "ENet EMKD, ONNX int8",
            "artifact": export(runs, "distilled", "enet.int8.onnx", "quantize=int8"),
            "backend": "onnx",
            **distilled,
        },
        {
            "name": "ENet EMKD, AOTInductor",
            "artifact": export(runs, "distilled", "enet.pt2", "format=aoti"),
            "backend": "aoti",
            **distilled,
        },
        {
            "name": "ENet EMKD pruned 30%, ONNX fp32",
            "artifact": export(runs, "distilled", "enet-pruned30.onnx", "prune=0.3"),
            "backend": "onnx",
            **distilled,
        },
        {"name": "MobileNetV2 EMKD, PyTorch", "ckpt": mnet, "backend": "torch", **distilled},
        {
            "name": "MobileNetV2 EMKD, ONNX fp32",
            "artifact": mnet_onnx,
            "backend": "onnx",
            **distilled,
        },
        {
            "name": "MobileNetV2 EMKD, ONNX int8",
            "artifact": mnet_int8,
            "backend": "onnx",
            **distilled,
        },
    ]
    # preprocessing choices (the networks were trained on body-cropped 96x96 slices): their time
    # and their Dice cost. The 256x256 pair shows where int8 pays off (larger activations).
    variants = [
        ("ENet EMKD, ONNX fp32, 128x128", enet_onnx, {"in_plane_size": [128, 128]}),
        ("ENet EMKD, ONNX fp32, no body crop", enet_onnx, {"body_crop": False}),
        ("MobileNetV2 EMKD, ONNX fp32, 256x256", mnet_onnx, {"in_plane_size": [256, 256]}),
        ("MobileNetV2 EMKD, ONNX int8, 256x256", mnet_int8, {"in_plane_size": [256, 256]}),
    ]
    rows += [
        {"name": name, "artifact": art, "backend": "onnx", "preprocess": pre, **distilled}
        for name, art, pre in variants
    ]
    teacher = str(ckpt(runs, "teacher"))
    timed_only = {"role": "teacher", "weights": "untrained", "dice": False}
    rows += [
        {
            "name": "RA-UNet teacher (w 0.5), PyTorch",
            "ckpt": teacher,
            "backend": "torch",
            "role": "teacher",
        },
        {
            "name": "RA-UNet teacher (w 0.5), ONNX fp32",
            "artifact": export(runs, "teacher", "raunet.onnx"),
            "backend": "onnx",
            "role": "teacher",
        },
    ]
    for model, label in (("raunet", "RA-UNet"), ("pspnet", "PSPNet")):
        name = f"{model}_full"
        rows += [
            {
                "name": f"{label} (w 1.0), PyTorch",
                "ckpt": str(ckpt(runs, name)),
                "backend": "torch",
                **timed_only,
            },
            {
                "name": f"{label} (w 1.0), ONNX fp32",
                "artifact": export(runs, name, f"{model}.onnx"),
                "backend": "onnx",
                **timed_only,
            },
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=ROOT / ".demo", help="make demo's folder")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--runs-per-round", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    runs, data = args.demo / "runs" / "demo", args.demo / "data" / "lits"
    if not ckpt(runs, "distilled").exists():
        sys.exit(f"{ckpt(runs, 'distilled')}: missing; run `make demo` first")
    distilled_mobilenetv2(runs, data)
    for model in ("raunet", "pspnet"):
        untrained_full_width(runs, data, model)
    entries_file = args.demo / "bench_entries.yaml"
    entries_file.write_text(yaml.safe_dump(entries(runs), sort_keys=False))
    run(
        "kdseg-bench",
        f"entries_file={entries_file}",
        f"data.root={data}",
        f"output_dir={args.out}",
        f"volume_dir={args.demo / 'bench_volume'}",
        f"rounds={args.rounds}",
        f"runs={args.runs_per_round}",
    )


if __name__ == "__main__":
    main()
