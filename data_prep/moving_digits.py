"""Generate the moving-objects video set (8 motion classes that need time to tell apart) as shards.

    python -m data_prep.moving_digits --output DIR [--num-train 2000 --num-val 500 --frames 16 --size 32 --seed 0]

Writes DIR/train and DIR/val, each with clips-NNNNNN.tar shards and manifest.json.
"""

from __future__ import annotations

import argparse
import sys
import time

from jepa.data.moving_digits import SHAPES, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.moving_digits", description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="folder that gets train/ and val/")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=500)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=32, help="canvas side in pixels (even)")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=2.0, help="std of per-pixel Gaussian noise in grey levels (0 = none)")
    parser.add_argument("--shard-samples", type=int, default=1000, help="clips per shard")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in the output folders")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        manifests = generate(
            args.output, num_train=args.num_train, num_val=args.num_val, frames=args.frames, size=args.size,
            fps=args.fps, seed=args.seed, noise=args.noise, shard_samples=args.shard_samples, overwrite=args.overwrite,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{split} {m['num_samples']} clips in {len(m['shards'])} shards" for split, m in manifests.items())
    objects = "drawn shapes" if manifests["train"]["label_names"]["object"] == list(SHAPES) else "Fashion-MNIST"
    print(f"{counts}; objects: {objects}; output {args.output} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
