"""Convert a folder or CSV list of videos into webdataset shards of H.264 clips.

    python -m data_prep.videos_to_shards --input DIR_OR_CSV --output DIR [--resize 128] [--fps 8] [--max-frames 64]

Writes {prefix}-NNNNNN.tar shards, manifest.json and report.json (files that could not be
read); prints a one-line summary. Exit code 0 if at least one video converted, else 1.
"""

from __future__ import annotations

import argparse
import sys

from jepa.data.video_shards import VIDEO_EXTENSIONS, videos_to_shards


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.videos_to_shards", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True,
                        help=f"a folder searched for {', '.join(VIDEO_EXTENSIONS)} (DIR/<class>/<video> gives labels) "
                             "or a CSV of path[,label] rows")
    parser.add_argument("--output", required=True, help="folder for the shards, manifest.json and report.json")
    parser.add_argument("--resize", type=int, default=None, metavar="SHORT_SIDE",
                        help="resize the short side to this (even) size, keeping the aspect")
    parser.add_argument("--fps", type=float, default=None, help="resample to this frame rate")
    parser.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames per video")
    parser.add_argument("--reencode", action="store_true",
                        help="re-encode even H.264 MP4 originals that could be kept as they are")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="trust the container's frame count instead of decoding kept originals in full")
    parser.add_argument("--shard-size-mb", type=float, default=256.0, help="target shard size (default 256)")
    parser.add_argument("--samples-per-shard", type=int, default=None, help="also start a new shard after this many videos")
    parser.add_argument("--prefix", default="clips", help="shard name prefix (default clips)")
    parser.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                        help="write in input order (default: shuffled so that shards mix classes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the write-order shuffle")
    parser.add_argument("--workers", type=int, default=1, help="conversion processes")
    parser.add_argument("--overwrite", action="store_true", help="replace shards and manifest already in --output")
    args = parser.parse_args(argv)
    if args.shard_size_mb <= 0:
        parser.error("--shard-size-mb must be positive")

    try:
        result = videos_to_shards(
            args.input, args.output, short_side=args.resize, fps=args.fps, max_frames=args.max_frames,
            reencode=args.reencode, verify=args.verify, shard_bytes=int(args.shard_size_mb * 2**20),
            shard_samples=args.samples_per_shard, prefix=args.prefix, shuffle=args.shuffle, seed=args.seed,
            workers=args.workers, overwrite=args.overwrite,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(result.summary())
    if result.num_ok == 0:
        print(f"error: no video could be converted; the reasons are in {args.output}/report.json", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
