"""How fast this machine trains study v4's teacher, in 15 seconds: decide whether a one-command
v4 run can end inside a session before starting it (``docs/study_v4/rerun_oneshot_*.md``).

Six training steps (forward, cross-entropy, backward, Adam) of RA-UNet w0.5 on a batch of 8
random 144 x 144 slices, one thread, as v4's teacher trains; prints the steps' seconds and the
slices per second of the fastest step after the first. Compute only: a real epoch adds data
loading and validation (v4's teacher ran at 13-16 slices/s on machines where this probe was
not yet measured, 5.6-6.6 on the machine where it gave 7.4).

    OMP_NUM_THREADS=1 python scripts/teacher_step_probe.py
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from kdseg.models import build_model


def main(steps: int = 6, batch: int = 8, size: int = 144) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("raunet", in_channels=1, num_classes=3, width=0.5)
    optim = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, 3, (batch, size, size))
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x).logits, y)
        optim.zero_grad()
        loss.backward()
        optim.step()
        seconds.append(time.perf_counter() - start)
    print(f"step seconds: {', '.join(f'{s:.3f}' for s in seconds)}")
    print(f"slices/s (fastest step after the first): {batch / min(seconds[1:]):.1f}")


if __name__ == "__main__":
    main()
