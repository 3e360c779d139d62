"""``kdseg-models``: parameters, multiply-adds and feature taps of every registered model."""

from __future__ import annotations

import argparse

from kdseg.models.cost import main_table


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
    args = parser.parse_args()
    print(
        main_table(
            size=args.size,
            in_channels=args.in_channels,
            num_classes=args.num_classes,
            width=args.width,
            names=args.names or None,
            time_threads=args.time or None,
        )
    )


if __name__ == "__main__":
    main()
