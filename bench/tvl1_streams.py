"""Does TV-L1 on several CUDA streams at once fill the GPU, or does one stream with a bigger batch do better?

    python bench/tvl1_streams.py --configs 1x512,2x512,4x512,6x512,8x512,1x1024,1x2048,4x1024 \
        --json bench/out/tvl1_streams.json

The pipeline runs each video's TV-L1 on its worker thread's own CUDA stream, one window per call
(``flow_batch_pairs``: 512 pairs in configs/extract/gpu.yaml), and counts on the streams to fill the SMs that
one batch's slowest pairs leave idle (a sweep launch lasts as long as its slowest pair: docs/tvl1.md, "the
slowest pair's chain"). End to end on the H200 (BENCHMARKS.md, 2026-12-04) TV-L1 solved ~1,065 pairs/s of
its testsrc2 videos, ~47 M flat band steps/s by bench/tvl1_launch_balance.py's count over the whole video
(``--source e2e``: 44,022 per pair), against 63 M for one stream of synthetic pairs; 6 or 12 videos in flight
instead of 8 did not help. This separates the explanations:

* ``TxB``: T threads, each on its own stream (as the pipeline's workers), each solving batches of B pairs;
  aggregate pairs/s over the same total work. If 8x512 runs well above 1x512, the streams overlap; if
  1x2048 beats 4x512, bigger TV-L1 batches (``window_snippets`` x 16 = ``flow_batch_pairs``) are the lever.

Pairs come from one of the end-to-end benchmark's videos (``--source e2e``, the default: 155 s of testsrc2,
made and decoded as bench/bench_extract.py and the pipeline do, taken as ``--unique``/8 spans of 8 consecutive
pairs spread over the video, since its first seconds are cheaper than the rest: bench/tvl1_launch_balance.py
``--source e2e``), from the first frames of a testsrc2 clip (``testsrc2``, as bench/study_tvl1_storage.py
prepares them) or from bikes.mp4; batch k holds pair k mod ``--unique`` (a pair's work does not depend on its
batch). Configs are timed in interleaved rounds. ``--device cpu`` (torch backend, tiny ``--size``) only checks
that the script runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tvl1 import decode_gray_224, sample_video_dir  # noqa: E402
from profile_tvl1 import knobs_set, parse_variant  # noqa: E402
from study_tvl1_storage import testsrc_frames  # noqa: E402
from tvl1_launch_balance import e2e_frames, spread_spans  # noqa: E402

import extractors.tvl1 as T  # noqa: E402

# One stream as the pipeline's worker runs it, ~6 at once as end to end on the H200, and bigger batches.
DEFAULT_CONFIGS = "1x512,2x512,4x512,6x512,8x512,1x1024,1x2048,4x1024"


def parse_configs(text: str) -> list[tuple[int, int]]:
    """"1x512,8x512" -> [(1, 512), (8, 512)]: (threads, pairs per batch)."""
    out = []
    for item in filter(None, text.split(",")):
        t, sep, b = item.partition("x")
        if not sep or not t.isdigit() or not b.isdigit() or int(t) < 1 or int(b) < 1:
            raise SystemExit(f"--configs: {item!r} is not THREADSxBATCH (e.g. 4x512)")
        out.append((int(t), int(b)))
    return out


def run_config(f0: torch.Tensor, f1: torch.Tensor, streams: list, threads: int, batch: int, total: int,
               cfg: T.TVL1Config) -> dict:
    """Solve about ``total`` pairs as ``threads`` threads x batches of ``batch`` pairs; aggregate pairs/s.

    Thread t runs on ``streams[t]`` (None: no CUDA). The streams live for the whole run, so the caching
    allocator's per-stream pools are filled in the first round and reused later, not allocated on the clock.
    """
    n, cuda = f0.shape[0], f0.device.type == "cuda"
    repeats = max(1, math.ceil(total / (threads * batch)))
    clock: dict[str, float] = {}
    # The clock starts when the last thread arrives, before any is released (not when the caller gets the GIL back).
    barrier = threading.Barrier(threads + 1, action=lambda: clock.setdefault("t0", time.perf_counter()), timeout=600)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        stream = streams[t]
        try:
            with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                # batch r of thread t holds pairs (r * threads + t) * batch + k mod n; inputs gathered off the clock
                inputs = []
                for r in range(repeats):
                    i = torch.arange(batch, device=f0.device) + (r * threads + t) * batch
                    inputs.append((f0[i % n], f1[i % n]))
                if cuda:
                    stream.synchronize()
                barrier.wait()
                for a, b in inputs:
                    T.tvl1_flow(a, b, cfg, check_finite=False)
                if cuda:
                    stream.synchronize()
        except BaseException as e:  # reported by the caller, not lost in the thread
            errors.append(e)
            barrier.abort()  # (the others and the caller stop waiting)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(f0.device)
    for p in pool:
        p.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass  # a thread failed: its error is reported below
    for p in pool:
        p.join()
    seconds = time.perf_counter() - clock.get("t0", 0.0)
    pairs = threads * batch * repeats
    if errors:
        return {"pairs": pairs, "error": repr(errors[0])}
    return {"pairs": pairs, "seconds": round(seconds, 3), "pairs_per_s": round(pairs / seconds, 1),
            "peak_gb": round(torch.cuda.max_memory_allocated(f0.device) / 1e9, 2) if cuda else None}


def summarize(runs: dict[str, list[dict]], rounds: int) -> dict:
    """Mean pairs/s per config over the rounds after the first (the first fills the streams' memory pools),
    or over the one round; ``vs_first``: against the first config."""
    out, base = {}, None
    for key, results in runs.items():
        timed = [x for x in (results[1:] if rounds > 1 and len(results) > 1 else results) if "pairs_per_s" in x]
        if not timed:
            out[key] = {"error": next((x["error"] for x in results if "error" in x), "not run")}
            continue
        rate = sum(x["pairs_per_s"] for x in timed) / len(timed)
        base = base or rate
        out[key] = {"pairs_per_s": round(rate, 1), "vs_first": round(rate / base, 2),
                    "peak_gb": max((x["peak_gb"] or 0) for x in timed)}
    return out


def source_pairs(source: str, unique: int, size: int, seconds: float = 155.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """First and second frames of ``unique`` consecutive-frame pairs of ``source``, crops of ``size``."""
    if source == "e2e":
        frames = e2e_frames(seconds)
        starts = spread_spans(len(frames), math.ceil(unique / 8), 8)
        idx = [s + k for s in starts for k in range(8)][:unique]
        o = (224 - size) // 2  # (a smaller --size: the centre of the 224 crop)
        crop = [f[o : o + size, o : o + size] for f in frames]
        return [crop[i] for i in idx], [crop[i + 1] for i in idx]
    if source == "testsrc2":
        frames = testsrc_frames(unique + 1, size)
    else:
        frames = decode_gray_224(sample_video_dir() / "bikes.mp4", unique + 1, size)
    return frames[:-1], frames[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help="comma-separated THREADSxBATCH: threads (own CUDA stream each) x pairs per tvl1_flow call")
    ap.add_argument("--total", type=int, default=4096, help="pairs per config (rounded up to whole batches)")
    ap.add_argument("--unique", type=int, default=512, help="distinct consecutive-frame pairs")
    ap.add_argument("--source", default="e2e", choices=["e2e", "testsrc2", "bikes"],
                    help="e2e: spans of 8 pairs spread over a 155 s end-to-end benchmark video; testsrc2: the first "
                         "frames of a testsrc2 clip; bikes: bikes.mp4")
    ap.add_argument("--e2e-seconds", type=float, default=155.0, help="--source e2e: video length (gpu_session's -long)")
    ap.add_argument("--variant", default="default=backend:auto",
                    help="the TV-L1 setting, bench/profile_tvl1.py's variant syntax (e.g. "
                         "flat_a16=backend:triton,sweep_align:16)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="time the configs this many times, interleaved; with 2 or more the first is a warm-up")
    ap.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a smoke test: tiny --size)")
    ap.add_argument("--size", type=int, default=224, help="crop size (224 as in the pipeline)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    configs = parse_configs(args.configs)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this measures GPU streams (use --device cpu --size 32 for a smoke test)")
    f0, f1 = (torch.from_numpy(np.stack(x)).float().to(device) for x in source_pairs(args.source, args.unique, args.size, args.e2e_seconds))
    name, cfg, knobs = parse_variant(args.variant)
    cuda = device.type == "cuda"
    streams = [torch.cuda.Stream(device) if cuda else None for _ in range(max(t for t, _ in configs))]
    out: dict = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(device) if cuda else "cpu",
                 "source": args.source, "unique_pairs": f0.shape[0], "size": args.size, "variant": args.variant,
                 "total": args.total, "rounds": args.rounds, "runs": {}}

    def save() -> None:  # after every config: a killed or failed run keeps what it measured
        out["summary"] = summarize(out["runs"], args.rounds)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=1))

    with knobs_set(knobs):
        T.tvl1_flow(f0[:8], f1[:8], cfg)  # compile the kernels outside the timing
        if cuda:
            torch.cuda.synchronize()  # (the frames and the warm-up, before other streams read them)
        for r in range(args.rounds):
            for threads, batch in configs:
                key = f"{threads}x{batch}"
                res = run_config(f0, f1, streams, threads, batch, args.total, cfg)
                out["runs"].setdefault(key, []).append(res)
                print(r, key, res, flush=True)
                save()
    for key, row in out["summary"].items():
        if "error" in row:
            print(f"{key:>8}: failed: {row['error']}")
        else:
            print(f"{key:>8}: {row['pairs_per_s']:9.1f} pairs/s  ({row['vs_first']:.2f}x the first config)  "
                  f"peak {row['peak_gb']} GB")
    if any("error" in row for row in out["summary"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
