#!/usr/bin/env python3
"""Run the fuzz targets (tests/test_fuzz_targets.py: the PROXY header reader, the exit
detector, the TLS record path) for a while: rounds of FUZZ_EXAMPLES examples each, a fresh
seed a round, until `--seconds` have passed or a round fails. The suite runs the same targets
with its own, smaller, number of examples; this is for longer hunts.

    python scripts/fuzz.py --seconds 600
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to hunt")
    parser.add_argument("--examples", type=int, default=5000, help="examples per target a round")
    args = parser.parse_args()
    ends = time.monotonic() + args.seconds
    env = {**os.environ, "HYPOTHESIS_PROFILE": "fuzz", "FUZZ_EXAMPLES": str(args.examples)}
    rounds = 0
    while time.monotonic() < ends:
        seed = random.randrange(2**32)
        rounds += 1
        print(f"fuzz.py: round {rounds}, seed {seed}", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"--hypothesis-seed={seed}", "tests/test_fuzz_targets.py"],
            cwd=ROOT, env=env, check=False, timeout=max(60.0, ends - time.monotonic() + 60),
        )  # fmt: skip
        if done.returncode != 0:
            print(f"fuzz.py: round {rounds} failed (seed {seed}): see above", flush=True)
            return 1
    print(f"fuzz.py: {rounds} rounds of {args.examples} examples per target, nothing found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
