"""``kdseg-models``: parameters, multiply-adds and feature taps of every registered model."""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

from kdseg.errors import ConfigError, InputError
from kdseg.guards import check_threads
from kdseg.models.cost import main_table
from kdseg.models.registry import MAX_WIDTH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip("`").split(": ", 1)[-1])
    parser.add_argument("--size", type=int, default=512, help="slice size (default 512)")
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier for every model")
    parser.add_argument(
        "--time",
        type=int,
        default=0,
        metavar="THREADS",
        help="also time the CPU forward pass per slice with this many threads (0: no timing)",
    )
    parser.add_argument("names", nargs="*", help="models to list (default: all registered)")
    parser.error = _fail  # type: ignore[method-assign]  # one line, exit 2, no usage dump
    args = parser.parse_args()
    from kdseg.models.registry import available_models

    unknown = [n for n in args.names if n not in available_models()]
    if unknown:
        _fail(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(available_models())}")
    for name, value, low in (
        ("--size", args.size, 16),
        ("--in-channels", args.in_channels, 1),
        ("--num-classes", args.num_classes, 1),
        ("--time", args.time, 0),
    ):
        if value < low:
            _fail(f"{name} {value}: must be at least {low}")
    try:
        check_threads(args.time, "--time ")
    except InputError as exc:
        _fail(exc.message)
    if not (math.isfinite(args.width) and 0 < args.width <= MAX_WIDTH):
        _fail(f"--width {args.width:g}: must be above 0 and at most {MAX_WIDTH:g}")
    try:
        table = main_table(
            size=args.size,
            in_channels=args.in_channels,
            num_classes=args.num_classes,
            width=args.width,
            names=args.names or None,
            time_threads=args.time or None,
        )
    except ConfigError as exc:  # a width a network cannot be built at
        _fail(str(exc))
    print(table)


def _fail(message: str) -> NoReturn:
    print(f"kdseg-models: error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
