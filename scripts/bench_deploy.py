"""docs/bench.md and docs/bench.png: every deployment artefact of demo-protocol models, timed.

Input: the folder ``make demo`` writes (``.demo/``): its phantom data and test split. To it this
script adds, each with a documented command, when missing:

    runs/demo/bench_teacher           RA-UNet (width 0.5) trained with the demo protocol, but for
                                      ``--epochs`` epochs (30: the demo's 10 teach no tumors)
    runs/demo/bench_enet_emkd         ENet and MobileNetV2 distilled from it with EMKD, the same
    runs/demo/bench_mobilenetv2_emkd  protocol and epochs
    runs/demo/raunet_full             RA-UNet and PSPNet at the paper's width after one training
    runs/demo/pspnet_full             step: real checkpoints, untrained weights, timed only

then exports every artefact (``kdseg-export``: ONNX fp32, int8, pruned, AOTInductor) and runs
``kdseg-bench`` with a generated entries file (``<demo>/bench_entries.yaml``). Runs and
artefacts that exist are reused (delete them to redo them).

    make demo && .venv/bin/python scripts/bench_deploy.py          # writes docs/bench.md, .png
    .venv/bin/python scripts/bench_deploy.py --demo DIR --out DIR --rounds 2 --epochs 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

from kdseg.errors import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# kdseg-export refuses an int8 file that disagrees with its fp32 twin; the bench measures it
# anyway, to show its Dice next to its speed
INT8 = ("quantize=int8", "int8.force=true")


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
        f"data.cache_root={data.parents[1] / 'cache'}",  # the demo's (scripts/demo.py)
        f"paths.runs_dir={runs}",
        "logger=csv",
        f"hydra.run.dir={runs / name}",
    ]


def trained(runs: Path, data: Path, name: str, epochs: int, command: str, *args: str) -> str:
    """Run ``command`` (kdseg-train / kdseg-distill) as ``runs/name`` unless it has a checkpoint."""
    if not ckpt(runs, name).exists():
        run(command, *demo_args(data, runs, name), f"trainer.max_epochs={epochs}", *args)
    return str(ckpt(runs, name))


def bench_models(runs: Path, data: Path, epochs: int) -> None:
    """The RA-UNet teacher and the ENet and MobileNetV2 students distilled from it with EMKD."""
    teacher = trained(
        runs, data, "bench_teacher", epochs, "kdseg-train", "model=raunet", "model.width=0.5"
    )
    for student in ("enet", "mobilenetv2"):
        trained(
            runs,
            data,
            f"bench_{student}_emkd",
            epochs,
            "kdseg-distill",
            f"teacher.ckpt={teacher}",
            f"student={student}",
            "student.width=1.0",
            "distill=emkd",
        )


def untrained_full_width(runs: Path, data: Path, model: str) -> str:
    """``model`` at the paper's width after one training step: a real checkpoint, untrained."""
    one_step = ("+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1")
    args = (f"model={model}", "model.width=1.0", *one_step)
    return trained(runs, data, f"{model}_full", 1, "kdseg-train", *args)


def entries(runs: Path) -> list[dict]:
    """The benchmark's rows: students on every backend, preprocessing variants, teachers."""
    enet_run, mnet_run = "bench_enet_emkd", "bench_mobilenetv2_emkd"
    enet, mnet = str(ckpt(runs, enet_run)), str(ckpt(runs, mnet_run))
    enet_onnx = export(runs, enet_run, "enet.onnx")
    mnet_onnx = export(runs, mnet_run, "mobilenetv2.onnx")
    mnet_int8 = export(runs, mnet_run, "mobilenetv2.int8.onnx", *INT8)
    distilled = {"role": "distilled"}
    rows = [
        {"name": "ENet EMKD, PyTorch", "ckpt": enet, "backend": "torch", **distilled},
        {"name": "ENet EMKD, torch.compile", "ckpt": enet, "backend": "compile", **distilled},
        {"name": "ENet EMKD, ONNX fp32", "artifact": enet_onnx, "backend": "onnx", **distilled},
        {
            "name": "ENet EMKD, ONNX int8",
            "artifact": export(runs, enet_run, "enet.int8.onnx", *INT8),
            "backend": "onnx",
            **distilled,
        },
        {
            "name": "ENet EMKD, AOTInductor",
            "artifact": export(runs, enet_run, "enet.pt2", "format=aoti"),
            "backend": "aoti",
            **distilled,
        },
        {
            "name": "ENet EMKD pruned 30%, ONNX fp32",
            "artifact": export(runs, enet_run, "enet-pruned30.onnx", "prune=0.3"),
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
    teacher = str(ckpt(runs, "bench_teacher"))
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
            "artifact": export(runs, "bench_teacher", "raunet.onnx"),
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
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of the models")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    runs, data = args.demo / "runs" / "demo", args.demo / "data" / "lits"
    if not any(data.glob("volume-*.nii*")):
        sys.exit(f"{data}: no phantom data; run `make demo` first")
    bench_models(runs, data, args.epochs)
    for model in ("raunet", "pspnet"):
        untrained_full_width(runs, data, model)
    entries_file = args.demo / "bench_entries.yaml"
    write_text_atomic(entries_file, yaml.safe_dump(entries(runs), sort_keys=False))
    run(
        "kdseg-bench",
        f"entries_file={entries_file}",
        f"data.root={data}",
        f"data.cache_root={args.demo / 'cache'}",  # the demo's (scripts/demo.py)
        f"output_dir={args.out}",
        f"volume_dir={args.demo / 'bench_volume'}",
        f"rounds={args.rounds}",
        f"runs={args.runs_per_round}",
    )


if __name__ == "__main__":
    main()
