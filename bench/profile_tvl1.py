"""Where TV-L1's GPU time goes: kernel table of one batch, recompilations, and timed variants.

    python bench/profile_tvl1.py --pairs 256          # CUDA; real-video pairs (bikes.mp4, 224 px)

Prints torch.profiler's top kernels by device time for one ``tvl1_flow`` call (``--profile``), dynamo's
counters (recompiles, graph breaks), the iterations actually run per pyramid level, and
pairs/s for each variant named in ``--variants`` (``name=field:value,...`` over TVL1Config).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tvl1 import decode_gray_224, sample_video_dir  # noqa: E402

import extractors.tvl1 as T  # noqa: E402


def parse_variant(spec: str) -> tuple[str, T.TVL1Config]:
    name, _, fields = spec.partition("=")
    kw = {}
    for item in filter(None, fields.split(",")):
        k, _, v = item.partition(":")
        kw[k] = None if v == "None" else (v == "True" if v in ("True", "False") else type_of(k)(v))
    return name, T.TVL1Config(**kw)


def type_of(field: str):
    return {"check_every": int, "compile": bool, "backend": str}.get(field, float if field in ("tau", "lambda_", "theta", "epsilon", "scale_step") else int)


def timed(f0, f1, cfg, repeats=2) -> float:
    T.tvl1_flow(f0, f1, cfg)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        T.tvl1_flow(f0, f1, cfg)
    torch.cuda.synchronize()
    return repeats * f0.shape[0] / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--variants", nargs="*", default=["default="])
    ap.add_argument("--profile", default="default=", help="the config to profile, same syntax as a variant")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    fs = decode_gray_224(sample_video_dir() / "bikes.mp4", 250, 224)
    idx = [k % (len(fs) - 1) for k in range(args.pairs)]
    f0 = torch.from_numpy(np.stack([fs[k] for k in idx])).float().cuda()
    f1 = torch.from_numpy(np.stack([fs[k + 1] for k in idx])).float().cuda()
    out: dict = {"pairs": args.pairs, "device": torch.cuda.get_device_name()}

    out["profiled"], cfg = args.profile, parse_variant(args.profile)[1]
    t = time.perf_counter()
    T.tvl1_flow(f0, f1, cfg)
    torch.cuda.synchronize()
    out["first_call_s"] = round(time.perf_counter() - t, 1)

    from torch._dynamo.utils import counters

    out["dynamo_counters"] = {k: dict(v) for k, v in counters.items() if v}
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        T.tvl1_flow(f0, f1, cfg)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15, max_name_column_width=60))

    for spec in args.variants:
        name, vcfg = parse_variant(spec)
        out[f"pairs_per_s[{name}]"] = round(timed(f0, f1, vcfg), 1)
        print(name, out[f"pairs_per_s[{name}]"], flush=True)
    print(json.dumps(out, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
