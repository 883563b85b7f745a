"""How much of a Triton sweep launch waits on its slowest pair: TV-L1's per-pair iteration counts per launch.

    python bench/tvl1_launch_balance.py --pairs 48 --json bench/results/cpu-2026-11-23/tvl1_launch_balance.json

CPU only. The default CUDA backend ("triton") runs one launch per (pyramid level, warp, outer block): one
program per pair, each iterating until its own stopping test holds (up to 30 iterations). A batch's pairs
are all resident at once (512 pairs; 4-6 programs per SM x 132 SMs), so on a single stream a launch lasts
about as long as its slowest pair, while the work done is the sum over pairs. This script solves each pair
alone with the torch solver (a pair's iterations do not depend on its batch; tests/test_tvl1.py) and records
how many iterations it runs in every block, then reports, weighted by pixels per level:

* ``busy``: sum over launches of (sum of the pairs' iterations) / (pairs x the slowest pair's iterations),
  i.e. the share of the resident programs' time spent iterating when one stream runs the batch alone;
* the same if one launch covered a whole warp (median filter inside the kernel) or a whole level;
* the critical path: the band steps the slowest pair of each launch runs, summed over launches. A lone
  program runs a band step in about a memory round trip and a barrier, so this is a floor on a batch's time
  that no number of SMs removes (compare it with the measured batch times in BENCHMARKS.md).

Pairs are consecutive frames of one clip, as in the pipeline (a TV-L1 batch is one window of one video):
testsrc2 (the end-to-end benchmark's content) and bikes.mp4 (real large motion); or, with ``--source
synthetic``, the synthetic pairs bench/profile_tvl1.py times (so that its small-batch timings, step
``tvl1-tail`` of bench/gpu_session.sh, can be divided by the band steps counted here). Idle slots are filled by
other streams' launches in the pipeline (several windows' TV-L1 run at once), so ``busy`` bounds what a
single stream gets, not the pipeline.

``--source e2e`` measures the work of the end-to-end benchmark itself: one of bench/bench_extract.py's videos
(``--e2e-seconds``, default 155 s, made by its own ``make_video``) through the pipeline's decode and
preprocessing, sampled as ``--spans`` spans of ``--pairs`` consecutive pairs spread evenly over the video
(the clip's start alone is not typical of it). Multiplying its ``work_band_steps_per_pair`` (flat) by the
end-to-end frames/s gives the band steps/s the pipeline ran (docs/tvl1.md):

    python bench/tvl1_launch_balance.py --source e2e --spans 24 --pairs 8 --batches 8 --json OUT.json
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tvl1 import decode_gray_224, sample_video_dir, synthetic_pairs  # noqa: E402
from study_tvl1_storage import testsrc_frames  # noqa: E402

import extractors.tvl1 as tv  # noqa: E402
from extractors.tvl1_triton import SWEEP_BAND_PIXELS  # noqa: E402
from tvl1_lane_use import lane_slots  # noqa: E402

Key = tuple[int, int, int]  # (level width, warp, outer block)


def block_iterations(f0: np.ndarray, f1: np.ndarray) -> dict[Key, int]:
    """Iterations one pair runs in each (level width, warp, outer block), OpenCV's loop at its defaults."""
    counts: collections.Counter = collections.Counter()
    state = {"w": 0, "warp": -1, "outer": -1}
    real_iter, real_median, real_warp, real_scale = tv.tvl1_iteration, tv._torch_median, tv._solve_warp, tv._solve_scale

    def scale(i0, *a, **k):
        state["w"], state["warp"] = i0.shape[-1], -1
        return real_scale(i0, *a, **k)

    def warp(*a, **k):
        state["warp"] += 1
        state["outer"] = -1
        return real_warp(*a, **k)

    def median(*a, **k):  # called at the start of every outer block
        state["outer"] += 1
        return real_median(*a, **k)

    def iteration(u, *a):
        counts[(state["w"], state["warp"], state["outer"])] += u.shape[0]
        return real_iter(u, *a)

    with mock.patch.multiple(tv, tvl1_iteration=iteration, _torch_median=median, _solve_warp=warp, _solve_scale=scale):
        tv.tvl1_flow(torch.from_numpy(f0[None]).float(), torch.from_numpy(f1[None]).float(),
                     tv.TVL1Config(backend="torch", compile=False, check_every=1))
    return dict(counts)


def e2e_frames(seconds: float) -> list[np.ndarray]:
    """Gray 224 crops of one end-to-end benchmark video, decoded and preprocessed as the pipeline does."""
    import tempfile

    from bench_extract import make_video
    from extractors.decode import open_frames
    from extractors.preprocess import FramePreprocessor, PreprocessSpec, iter_preprocessed
    from extractors.probe import probe_video

    path = make_video(Path(tempfile.mkdtemp()) / "e2e.mp4", seconds, "320x180", 30)  # as bench_extract's e2e videos
    probe = probe_video(path)
    source = open_frames(path, probe, 25.0)
    pre = FramePreprocessor(PreprocessSpec(want_rgb=False, want_gray=True, want_clip=False), lambda k: False)
    try:
        return [g for b in iter_preprocessed(source, pre, batch=16) for g in np.asarray(b["gray"])]
    finally:
        source.close()


def spread_spans(n_frames: int, spans: int, pairs: int) -> list[int]:
    """First frames of ``spans`` runs of ``pairs`` consecutive pairs, evenly spread over ``n_frames`` frames."""
    if n_frames < pairs + 1:
        raise ValueError(f"{n_frames} frames cannot hold a span of {pairs} pairs")
    return sorted({int(x) for x in np.linspace(0, n_frames - pairs - 1, spans)})


def launches_of(per_pair: list[dict[Key, int]], group: int) -> dict[tuple, list[int]]:
    """Launch key (the first ``group`` fields of a block key) -> each pair's iterations in that launch."""
    launches: dict[tuple, list[int]] = collections.defaultdict(lambda: [0] * len(per_pair))
    for i, blocks in enumerate(per_pair):
        for key, n in blocks.items():
            launches[key[:group]][i] += n
    return launches


def busy_share(per_pair: list[dict[Key, int]], group: int, area: dict[int, int]) -> float:
    """Sum of work / sum of (pairs x slowest pair) over launches that group the key's first ``group`` fields."""
    work = span = 0.0
    for key, its in launches_of(per_pair, group).items():
        work += sum(its) * area[key[0]]
        span += max(its) * len(its) * area[key[0]]
    return work / span


def critical_path_band_steps(per_pair: list[dict[Key, int]], layout: str) -> int:
    """Band steps (each ending in a CTA barrier) of the slowest pair of every launch, summed: the time a
    batch takes at the least, however many SMs are free, in units of one lone program's band step."""
    steps = 0
    for (w, _, _), its in launches_of(per_pair, 3).items():
        steps += max(its) * lane_slots(w, w, layout) // SWEEP_BAND_PIXELS
    return steps


def summarize(per_pair: list[dict[Key, int]]) -> dict:
    """The figures of one batch (pairs in batch order)."""
    area = {k[0]: k[0] * k[0] for b in per_pair for k in b}  # square 224 crops: square levels
    warp_totals = [n for n in launches_of(per_pair, 2).values()]
    cap = tv.TVL1Config().inner_iterations * tv.TVL1Config().outer_iterations
    return {
        "pairs": len(per_pair),
        "launches": len(launches_of(per_pair, 3)),
        "busy_per_outer_block": round(busy_share(per_pair, 3, area), 3),
        "busy_per_warp": round(busy_share(per_pair, 2, area), 3),
        "busy_per_level": round(busy_share(per_pair, 1, area), 3),
        # (pair, warp) solves that ran into OpenCV's 300-iteration cap without converging
        "capped_warp_share": round(sum(n >= cap for its in warp_totals for n in its) / sum(len(i) for i in warp_totals), 4),
        "critical_path_band_steps": {lay: critical_path_band_steps(per_pair, lay) for lay in ("rows", "flat")},
        "work_band_steps_per_pair": {lay: round(sum(n * lane_slots(k[0], k[0], lay) // SWEEP_BAND_PIXELS
                                                    for b in per_pair for k, n in b.items()) / len(per_pair), 1)
                                     for lay in ("rows", "flat")},
        "finest_equivalent_iterations_per_pair": round(
            sum(n * area[k[0]] for b in per_pair for k, n in b.items()) / len(per_pair) / 224**2, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=48, help="consecutive-frame pairs solved per clip (bikes.mp4 has 249)")
    ap.add_argument("--batches", default="8,48",
                    help="batch sizes to report; batch k holds pair k %% pairs, as bench/profile_tvl1.py builds its batches")
    ap.add_argument("--source", default="both", choices=["testsrc2", "bikes", "synthetic", "both", "e2e"],
                    help="both: testsrc2 and bikes; synthetic: bench/profile_tvl1.py's synthetic pairs (not consecutive); "
                         "e2e: --spans spans of --pairs pairs spread over one end-to-end benchmark video")
    ap.add_argument("--spans", type=int, default=24, help="--source e2e: spans sampled over the video")
    ap.add_argument("--e2e-seconds", type=float, default=155.0, help="--source e2e: video length (gpu_session's -long)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sets = {}
    if args.source in ("testsrc2", "both"):
        sets["testsrc2"] = testsrc_frames(args.pairs + 1, 224)
    if args.source in ("bikes", "both"):
        sets["bikes.mp4"] = decode_gray_224(sample_video_dir() / "bikes.mp4", args.pairs + 1, 224)
    pairs = {name: list(zip(frames[:-1], frames[1:])) for name, frames in sets.items()}
    starts: list[int] = []
    if args.source == "e2e":
        frames = e2e_frames(args.e2e_seconds)
        starts = spread_spans(len(frames), args.spans, args.pairs)
        pairs["e2e"] = [(frames[s + k], frames[s + k + 1]) for s in starts for k in range(args.pairs)]
    if args.source == "synthetic":  # the same pairs as profile_tvl1.pair_sets (real textures, smooth flow of 1-6 px)
        textures = decode_gray_224(sample_video_dir() / "bikes.mp4", 250, 224)[:64]
        pairs["synthetic"] = [(a, b) for a, b, _ in synthetic_pairs(textures, args.pairs, seed=1)]
    out: dict = {"date": time.strftime("%Y-%m-%d"), "size": 224, "sets": {}}
    for name, set_pairs in pairs.items():
        t0 = time.perf_counter()
        per_pair = [block_iterations(a, b) for a, b in set_pairs]
        res: dict = {"unique_pairs": len(per_pair), "seconds": round(time.perf_counter() - t0, 1), "batches": {}}
        for b in (int(x) for x in args.batches.split(",")):
            r = res["batches"][b] = summarize([per_pair[k % len(per_pair)] for k in range(b)])
            print(f"{name}, batch {b}: {r['launches']} launches; single-stream busy share per outer block "
                  f"{r['busy_per_outer_block']:.3f} (one launch per warp {r['busy_per_warp']:.3f}, per level "
                  f"{r['busy_per_level']:.3f}); {r['capped_warp_share']:.1%} of (pair, warp) solves hit the 300-iteration "
                  f"cap; {r['finest_equivalent_iterations_per_pair']} finest-equivalent iterations per pair; critical "
                  f"path {r['critical_path_band_steps']['rows']} band steps (flat {r['critical_path_band_steps']['flat']}) "
                  f"vs {r['work_band_steps_per_pair']['rows']} (flat {r['work_band_steps_per_pair']['flat']}) per pair")
        # per pair: "width,warp,outer" -> iterations, so that other batchings can be worked out later
        res["per_pair"] = [{",".join(map(str, k)): n for k, n in sorted(b.items())} for b in per_pair]
        if name == "e2e":  # each span's own work: how much the content varies along the video
            res["span_starts"] = starts
            res["span_work_band_steps_per_pair"] = [
                summarize(per_pair[i * args.pairs : (i + 1) * args.pairs])["work_band_steps_per_pair"]["flat"]
                for i in range(len(starts))]
            w = summarize(per_pair)["work_band_steps_per_pair"]["flat"]
            print(f"e2e: {len(per_pair)} pairs in {len(starts)} spans; flat band steps per pair {w} (spans "
                  f"{min(res['span_work_band_steps_per_pair'])} to {max(res['span_work_band_steps_per_pair'])})")
        out["sets"][name] = res
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
