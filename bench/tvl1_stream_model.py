"""How full K streams of TV-L1 sweep launches would keep the GPU if a band step took a fixed time.

    python bench/tvl1_stream_model.py --configs 1x512,2x512,4x512,6x512,8x512,1x1024,1x2048,4x1024

CPU only, from the per-pair iteration counts bench/tvl1_launch_balance.py recorded (``per_pair``: the iterations
each pair runs in each (level width, warp, outer block), the Triton backend's launches). The model: every
stream runs its batches' launches in order (a launch starts when the stream's previous one has finished: one
program per pair, a converged pair's program costs nothing); the GPU holds ``SMs x programs per SM`` programs
(5 per SM at 224 px and 4 at the other widths for the default flat sweep, 5 at every width with rows padded to
16, ``--padded``; bench/tvl1_sweep_registers.py); waiting programs are dispatched in launch order as slots free;
a program runs (its iterations) x (band steps per iteration at its width) steps of one fixed duration.

It prints the share of the slots' time spent iterating (``util``) for each THREADSxBATCH config, the same
configs bench/tvl1_streams.py times on a GPU. The real band step slows down as the GPU fills (on the H200: ~2.6
us at one stream of bikes pairs, util 0.14 here, ~5.8 us at one stream of synthetic pairs, util 0.55), and the
slots are pooled over the SMs (a program never waits for room on one particular SM), so ``util`` is an upper
bound on how much fill a config can buy, not a prediction of pairs/s: where the measured gain of e.g. 6x512 over
1x512 is far below the model's, the band step's cost, not the fill, bounds the run.
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tvl1_streams import DEFAULT_CONFIGS, parse_configs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "cpu-2026-11-23"
SETS = {"testsrc2": (RESULTS / "tvl1_launch_balance_testsrc2.json", "testsrc2"),
        "bikes": (RESULTS / "tvl1_launch_balance_bikes.json", "bikes.mp4"),
        "synthetic": (RESULTS / "tvl1_launch_balance_synthetic.json", "synthetic"),
        # the end-to-end videos' own pairs: 64 spans of 8 spread over 155 s (the testsrc2 set is the first 96 pairs)
        "e2e": (RESULTS.parent / "cpu-2026-12-07" / "tvl1_launch_balance_e2e.json", "e2e")}
BAND = 512  # pixels per band step (extractors.tvl1_triton.SWEEP_BAND_PIXELS)
UNITS_PER_SM = 20  # a program at 5 per SM takes 4 units, at 4 per SM 5 units


def load_pairs(path: Path, name: str) -> list[dict[tuple[int, int, int], int]]:
    """Per pair: (level width, warp, outer block) -> iterations, as tvl1_launch_balance.py stored them."""
    per_pair = json.loads(path.read_text())["sets"][name]["per_pair"]
    return [{tuple(int(x) for x in key.split(",")): n for key, n in p.items()} for p in per_pair]


def band_steps(width: int) -> int:
    """Band steps of one flat-sweep iteration of a square level (the dual runs one row behind)."""
    return math.ceil((width * width + width) / BAND)


def stream_launches(pairs: list[dict], batch: int, first: int, batches: int) -> list[tuple[int, list[int]]]:
    """A stream's launches in order: (width, each program's duration in band steps); batch k holds pairs
    first + k, first + k + 1, ... (mod the pairs recorded), coarse levels first as the solver runs them."""
    out = []
    for b in range(batches):
        chosen = [pairs[(first + b * batch + k) % len(pairs)] for k in range(batch)]
        for key in sorted({k for p in chosen for k in p}):
            out.append((key[0], [p.get(key, 0) * band_steps(key[0]) for p in chosen]))
    return out


def utilisation(pairs: list[dict], streams: int, batch: int, sms: int = 132, padded: bool = False,
                batches: int = 3) -> float:
    """Share of the slots' time spent iterating while ``streams`` streams each run ``batches`` batches."""
    def units(width: int) -> int:
        return UNITS_PER_SM // (5 if padded or width == 224 else 4)

    work = {s: deque(stream_launches(pairs, batch, s * batches * batch, batches)) for s in range(streams)}
    capacity = free = sms * UNITS_PER_SM
    queue: deque = deque()  # programs waiting, in launch order: (stream, width, duration)
    left = dict.fromkeys(range(streams), 0)  # programs of each stream's current launch not finished
    running: list[tuple[float, int, int, int]] = []  # (end time, tie, stream, units)
    now, busy, tie = 0.0, 0.0, 0

    def launch(s: int) -> None:
        if work[s]:
            width, durations = work[s].popleft()
            queue.extend((s, width, d) for d in durations)
            left[s] = len(durations)

    for s in range(streams):
        launch(s)
    while queue or running:
        while queue and units(queue[0][1]) <= free:
            s, width, d = queue.popleft()
            free -= units(width)
            busy += d * units(width)
            tie += 1
            heapq.heappush(running, (now + d, tie, s, units(width)))
        now, _, s, u = heapq.heappop(running)
        free += u
        left[s] -= 1
        if left[s] == 0:
            launch(s)
    return busy / (capacity * now) if now else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help="comma-separated THREADSxBATCH, as bench/tvl1_streams.py takes them")
    ap.add_argument("--sets", default="e2e,testsrc2,bikes,synthetic", help=f"of {', '.join(SETS)}")
    ap.add_argument("--sms", type=int, default=132, help="streaming multiprocessors (H100/H200 SXM: 132)")
    ap.add_argument("--padded", action="store_true", help="rows padded to 16: 5 programs per SM at every width")
    ap.add_argument("--batches", type=int, default=3, help="batches each stream runs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    configs = parse_configs(args.configs)
    out: dict = {"sms": args.sms, "padded": args.padded, "batches": args.batches, "util": {}}
    for name in filter(None, args.sets.split(",")):
        if name not in SETS:
            raise SystemExit(f"--sets: unknown {name!r} (known: {', '.join(SETS)})")
        pairs = load_pairs(*SETS[name])
        out["util"][name] = {}
        for threads, batch in configs:
            u = utilisation(pairs, threads, batch, args.sms, args.padded, args.batches)
            out["util"][name][f"{threads}x{batch}"] = round(u, 3)
            print(f"{name:>9} {threads}x{batch:<5} util {u:.2f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
