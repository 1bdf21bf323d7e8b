"""Summarise py-spy's collapsed stacks (``--format raw``): where a worker's time went.

    .venv/bin/python -m bench.profile_summary bench/results/profile/engine-noop.txt [--top 30]

Prints the functions with the most inclusive samples (on the stack at all) and the most self
samples (on top of the stack), as shares of all samples, idle ones included.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def load(path: Path) -> tuple[Counter[str], Counter[str], int]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
            for f in stack.split(";")[1:]
        ]
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    return inclusive, own, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match", default="", help="only frames containing this text")
    args = parser.parse_args()
    inclusive, own, total = load(args.path)
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\n{title}:")
        rows = [(f, n) for f, n in counter.most_common() if args.match in f][: args.top]
        for frame, n in rows:
            print(f"{100 * n / total:6.1f}%  {frame}")


if __name__ == "__main__":
    main()
