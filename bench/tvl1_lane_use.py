"""Where TV-L1's iterations run (per pyramid level) and how many lane slots each sweep layout spends on them.

    python bench/tvl1_lane_use.py --pairs 8 --json bench/results/cpu-2026-11-23/tvl1_lane_use.json

CPU only (the torch solver at OpenCV's defaults counts the iterations; the layouts' band shapes come from
``extractors.tvl1_triton``, so no GPU is needed). For testsrc2 (the end-to-end benchmark's content) and
bikes.mp4 (large real motion), 224x224 crops as the pipeline makes them: iterations per pair at each
pyramid level, and for the Triton sweep's "rows" and "flat" band layouts the lane slots one iteration
occupies (bands x band size, the dual's extra lag band included) against the pixels it updates. The ratio
of slots weighted by the measured iterations is how many more band steps the rows layout runs (both use
512-lane bands at widths up to 512, so slots and band steps are proportional).
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tvl1 import decode_gray_224, sample_video_dir  # noqa: E402
from study_tvl1_storage import testsrc_frames  # noqa: E402

import extractors.tvl1 as tv  # noqa: E402
from extractors.tvl1_triton import flat_sweep_layout, sweep_layout  # noqa: E402


def iterations_per_level(frames: list[np.ndarray]) -> dict[tuple[int, int], float]:
    """(height, width) of each pyramid level -> TV-L1 iterations per pair run there (consecutive pairs)."""
    count: collections.Counter = collections.Counter()
    real = tv.tvl1_iteration

    def counted(u, *args):
        count[tuple(u.shape[-2:])] += u.shape[0]
        return real(u, *args)

    f0 = torch.from_numpy(np.stack(frames[:-1])).float()
    f1 = torch.from_numpy(np.stack(frames[1:])).float()
    with mock.patch.object(tv, "tvl1_iteration", counted):
        tv.tvl1_flow(f0, f1, tv.TVL1Config(backend="torch", compile=False))
    return {hw: n / f0.shape[0] for hw, n in count.items()}


def lane_slots(h: int, w: int, layout: str) -> int:
    """Lane slots one sweep iteration of an h x w image occupies (bands x lanes per band)."""
    if layout == "flat":
        band, _ = flat_sweep_layout()
        return math.ceil((h * w + w) / band) * band  # the dual runs one row (w pixels) behind
    rows, block_w, _ = sweep_layout(w)
    return (math.ceil(h / rows) + 1) * rows * block_w  # one extra band finishes the dual's rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=8, help="consecutive-frame pairs per video")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sets = {"testsrc2": testsrc_frames(args.pairs + 1, 224),
            "bikes.mp4": decode_gray_224(sample_video_dir() / "bikes.mp4", args.pairs + 1, 224)}
    out: dict = {"date": time.strftime("%Y-%m-%d"), "pairs": args.pairs, "size": 224, "sets": {}}
    for name, frames in sets.items():
        levels = iterations_per_level(frames)
        rows = []
        slots = {"rows": 0.0, "flat": 0.0}
        for (h, w), n in sorted(levels.items(), key=lambda kv: kv[0][1]):
            row = {"width": w, "height": h, "iterations_per_pair": round(n, 1),
                   "finest_equivalent": round(n * h * w / 224**2, 1)}
            for layout in slots:
                s = lane_slots(h, w, layout)
                row[f"{layout}_lane_use"] = round(h * w / s, 3)
                slots[layout] += n * s
            rows.append(row)
        out["sets"][name] = {
            "levels": rows,
            "finest_equivalent_iterations_per_pair": round(sum(r["finest_equivalent"] for r in rows), 1),
            "rows_vs_flat_lane_slots": round(slots["rows"] / slots["flat"], 3),
        }
        print(f"{name}: {out['sets'][name]['finest_equivalent_iterations_per_pair']} finest-level-equivalent "
              f"iterations per pair; rows layout / flat layout lane slots = {out['sets'][name]['rows_vs_flat_lane_slots']}")
        for r in rows:
            print(f"  {r['width']:4d} px wide: {r['iterations_per_pair']:6.1f} iterations per pair "
                  f"({r['finest_equivalent']:5.1f} finest-equivalent); lanes used: rows {r['rows_lane_use']:.2f}, "
                  f"flat {r['flat_lane_use']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
