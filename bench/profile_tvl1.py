"""Where TV-L1's GPU time goes: kernel table of one batch, recompilations, and timed variants.

    python bench/profile_tvl1.py --pairs 256          # CUDA; real-video pairs (bikes.mp4, 224 px)
    python bench/profile_tvl1.py --pairs 1024 --no-profile --source both --rounds 2 \
        --variants f32=backend:triton f16=backend:triton,state_dtype:float16,sweep_maxnreg:48

Prints torch.profiler's top kernels by device time for one ``tvl1_flow`` call (``--profile``), dynamo's
counters (recompiles, graph breaks), the iterations actually run per pyramid level, and
pairs/s for each variant named in ``--variants`` (``name=field:value,...`` over TVL1Config's fields and the
sweep kernel's launch settings ``sweep_band`` / ``sweep_maxnreg`` / ``sweep_layout`` / ``sweep_ppt`` (pixels per
thread) / ``sweep_align`` (row stride multiple)), timed in the same process.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
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

import extractors.tvl1 as T  # noqa: E402


# Variant keys that are launch settings of the Triton sweep kernel, not TVL1Config fields.
KNOBS = {"sweep_band": "SWEEP_BAND_PIXELS", "sweep_maxnreg": "SWEEP_MAXNREG", "sweep_layout": "SWEEP_LAYOUT",
         "sweep_ppt": "SWEEP_PIXELS_PER_THREAD", "sweep_align": "SWEEP_ROW_ALIGN"}


def parse_variant(spec: str) -> tuple[str, T.TVL1Config, dict]:
    """"name=field:value,..." -> (name, TVL1Config, knobs); fields are TVL1Config's, knobs KNOBS' keys."""
    name, _, fields = spec.partition("=")
    kw, knobs = {}, {}
    for item in filter(None, fields.split(",")):
        k, _, v = item.partition(":")
        if k in KNOBS:
            knobs[KNOBS[k]] = None if v == "None" else v if k == "sweep_layout" else int(v)
        else:
            kw[k] = None if v == "None" else type_of(k)(v)
    return name, T.TVL1Config(**kw), knobs


def type_of(field: str):
    types = {f.name: str(f.type) for f in dataclasses.fields(T.TVL1Config)}
    if field not in types:
        raise SystemExit(f"unknown variant field {field!r}: TVL1Config fields or {', '.join(KNOBS)}")
    t = types[field]
    if t.startswith("bool"):
        return lambda v: {"true": True, "false": False}[v.lower()]
    return str if t.startswith("str") else float if t.startswith("float") else int


def knobs_set(knobs: dict):
    """Context manager setting the sweep kernel's launch settings (tvl1_triton module constants) for a while."""
    from extractors import tvl1_triton

    return mock.patch.multiple(tvl1_triton, **knobs) if knobs else contextlib.nullcontext()


def timed(f0, f1, cfg, repeats=2) -> float:
    T.tvl1_flow(f0, f1, cfg, check_finite=False)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        T.tvl1_flow(f0, f1, cfg, check_finite=False)
    torch.cuda.synchronize()
    return repeats * f0.shape[0] / (time.perf_counter() - t)


def sweep_kernels_compiled() -> list[dict]:
    """Registers and spills of every compiled variant of the sweep kernel (what sets its occupancy)."""
    from extractors import tvl1_triton

    out = []
    try:
        compiled = [(kernel.fn.__name__, k) for kernel in (tvl1_triton._sweep_kernel, tvl1_triton._sweep_flat_kernel,
                                                     tvl1_triton._sweep_fused_kernel)
                    for caches in kernel.device_caches.values() for k in caches[0].values()]
        for name, k in compiled:
            k._init_handles()
            src = getattr(k, "src", None)
            out.append({"kernel": name, "p": str(src.signature.get("p_ptr")) if src else None,
                        "constants": str(getattr(src, "constants", None)),  # ROWS, BLOCK_W / BAND: the layout
                        "num_warps": getattr(k.metadata, "num_warps", None),
                        "maxnreg": getattr(k.metadata, "maxnreg", None), "n_regs": k.n_regs, "n_spills": k.n_spills})
    except Exception as e:  # Triton internals: diagnostics only, never fail the benchmark on them
        out.append({"error": repr(e)})
    return out


def pair_sets(n: int, source: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """CUDA (frames0, frames1) batches of n pairs: consecutive bikes.mp4 frames (large motion) and/or
    bench_tvl1's synthetic pairs (real textures warped by smooth flow of 1-6 px)."""
    fs = decode_gray_224(sample_video_dir() / "bikes.mp4", 250, 224)
    out = {}
    if source in ("bikes", "both"):
        idx = [k % (len(fs) - 1) for k in range(n)]
        out["bikes"] = (torch.from_numpy(np.stack([fs[k] for k in idx])).float().cuda(),
                        torch.from_numpy(np.stack([fs[k + 1] for k in idx])).float().cuda())
    if source in ("synthetic", "both"):
        pairs = synthetic_pairs(fs[:64], n, seed=1)
        out["synthetic"] = (torch.from_numpy(np.stack([p[0] for p in pairs])).float().cuda(),
                            torch.from_numpy(np.stack([p[1] for p in pairs])).float().cuda())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--variants", nargs="*", default=["default="])
    ap.add_argument("--profile", default="default=", help="the config to profile, same syntax as a variant")
    ap.add_argument("--source", default="bikes", choices=["bikes", "synthetic", "both"], help="pairs to time")
    ap.add_argument("--rounds", type=int, default=1, help="time the variants this many times, interleaved")
    ap.add_argument("--sizes", default="",
                    help="comma-separated batch sizes <= --pairs: time each variant on the first n pairs of each set "
                         "(small batches leave most SMs idle, so their time is the slowest pairs' chain of band "
                         "steps: with bench/tvl1_launch_balance.py's count of those steps, the time of one)")
    ap.add_argument("--no-profile", action="store_true", help="only time the variants")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sets = pair_sets(args.pairs, args.source)
    out: dict = {"pairs": args.pairs, "device": torch.cuda.get_device_name(), "source": args.source}
    f0, f1 = next(iter(sets.values()))

    if not args.no_profile:
        out["profiled"] = args.profile
        _, cfg, knobs = parse_variant(args.profile)
        with knobs_set(knobs):
            t = time.perf_counter()
            T.tvl1_flow(f0, f1, cfg, check_finite=False)
            torch.cuda.synchronize()
            out["first_call_s"] = round(time.perf_counter() - t, 1)

            from torch._dynamo.utils import counters

            out["dynamo_counters"] = {k: dict(v) for k, v in counters.items() if v}
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                T.tvl1_flow(f0, f1, cfg, check_finite=False)
                torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60))
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=15, max_name_column_width=60))

    # Interleaved rounds, so that a variant is not favoured by when it ran (clocks, other tenants).
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else [args.pairs]
    if max(sizes) > args.pairs:
        ap.error(f"--sizes {args.sizes}: at most --pairs {args.pairs}")
    variants = [parse_variant(spec) for spec in args.variants]  # (a typo fails here, before any timing)
    failed: dict[str, str] = out.setdefault("failed", {})
    for r in range(args.rounds):
        for name, vcfg, knobs in variants:
            if name in failed:
                continue
            try:
                for set_name, (a, b) in sets.items():
                    for n in sizes:
                        key = (f"pairs_per_s[{name}]" + ("" if len(sets) == 1 else f"[{set_name}]")
                               + ("" if not args.sizes else f"[n={n}]"))
                        with knobs_set(knobs):
                            rate = round(timed(a[:n], b[:n], vcfg), 1)
                        out.setdefault(key, []).append(rate)  # one rate per round
                        print(r, key, rate, flush=True)
                        if args.json:  # after every timing: a run killed at its time limit keeps what it measured
                            args.json.write_text(json.dumps(out, indent=1, default=str))
            except Exception as e:  # noqa: BLE001 -- one variant that fails to compile must not cost the others
                # their timings (device time is scarce); a CUDA fault still poisons the context for the rest
                failed[name] = f"{type(e).__name__}: {e}"[:2000]
                print(r, name, "FAILED", failed[name], flush=True)
                if args.json:
                    args.json.write_text(json.dumps(out, indent=1, default=str))
    try:
        out["sweep_kernels"] = sweep_kernels_compiled()
    except Exception as e:  # noqa: BLE001 -- (after a CUDA fault in a variant): keep the timings
        out["sweep_kernels"] = f"{type(e).__name__}: {e}"[:500]
    print(json.dumps(out, indent=1, default=str))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
