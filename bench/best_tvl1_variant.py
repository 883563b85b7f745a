"""The fastest exact (float32) TV-L1 sweep variant in profile_tvl1's JSON (gpu_session.sh's e2e-*-best steps).

    python bench/best_tvl1_variant.py OUT/tvl1_variants.json   # prints a variant name

Score: the geometric mean of its bikes.mp4 and synthetic pairs/s (means over rounds). A variant needs both
sets' rates to count; with none (the step did not run, failed, or was killed early) it prints ``flat``, the
default layout, so that the step runs the default rather than whichever variant happened to be timed alone.
"""
from __future__ import annotations

import json
import math
import sys

#: the exact variants (float16 state changes the values: it is timed, never chosen here); ties go to the first
EXACT = ("flat", "rows", "flat1", "flat256", "flat1024", "flat_a16", "fused_a16", "fused_a16_r48", "fused1_a16_r40")


def score(rates: dict, name: str) -> float:
    per_set = [sum(v) / len(v) for k, v in rates.items()
               if k.startswith(f"pairs_per_s[{name}][") and isinstance(v, list) and v]
    if len(per_set) != 2 or min(per_set) <= 0:
        return 0.0
    return math.exp(sum(map(math.log, per_set)) / len(per_set))


def best(rates: dict) -> str:
    name = max(EXACT, key=lambda n: score(rates, n))
    return name if score(rates, name) > 0 else "flat"


def main(argv: list[str]) -> int:
    try:
        with open(argv[0]) as f:
            rates = json.load(f)
    except (IndexError, OSError, ValueError):
        rates = {}
    print(best(rates if isinstance(rates, dict) else {}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
