"""Throughput of feature extraction: each extractor alone and the whole pipeline, in frames/s.

Random-init networks (speed does not depend on the weights), 224 crop, a generated test
video (testsrc2 + 440 Hz tone, ``--seconds`` long, 25 fps). "frames" are output frames at
25 fps, so a rate of R frames/s processes R/25 seconds of video per second.

    python bench/bench_extract.py --device cpu --threads 2            # this machine
    python bench/bench_extract.py --device cuda --e2e --autocast      # an H100: + end to end, + autocast check
    python bench/bench_extract.py --device cuda --only-e2e --e2e-videos 16 --video-workers 6 \
        --batch-size 16 --flow-batch 256                              # dataset throughput, several decoders

Per-extractor rows time one network on preprocessed inputs for ``--snippets`` snippets
(I3D RGB, TV-L1 with the OpenCV default parameters, I3D flow, CLIP on 4 frames/snippet,
VGGish on one 0.96 s window per snippet); "decode+preprocess" decodes and crops the
whole video. ``--e2e`` runs ``extract_video`` on the whole video (all four features).
``--autocast`` (CUDA) prints the minimum cosine of bf16/fp16 autocast vs fp32 per network
on real frames: the pipeline's ``precision=auto`` keeps bf16 only where it is >= 0.999.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extractors.audio_decode import decode_audio  # noqa: E402
from extractors.config import ALL_FEATURES, ExtractConfig  # noqa: E402
from extractors.decode import open_frames  # noqa: E402
from extractors.pipeline import Extractors, extract_video  # noqa: E402
from extractors.preprocess import FramePreprocessor, PreprocessSpec, iter_preprocessed  # noqa: E402
from extractors.probe import probe_video  # noqa: E402
from extractors.tvl1 import (  # noqa: E402
    BACKENDS as TVL1_BACKENDS, STATE_DTYPES, TVL1Config, flow_to_i3d_input, resolve_backend, tvl1_flow,
)


FAST_TVL1 = TVL1Config(nscales=1, warps=1, inner_iterations=5, outer_iterations=1)  # --e2e-tvl1 fast (with --tvl1-backend)


def make_video(path: Path, seconds: float, size: str, rate: float = 25) -> Path:
    import subprocess

    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate:g}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(seconds), "-map", "0:v", "-map", "1:a",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int = 1) -> float:
    fn()  # warm-up (cuDNN autotune, allocator, lazy init)
    sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t) / repeats


def decode_frames(video: Path, spec: PreprocessSpec, positions) -> tuple[dict, float]:
    probe = probe_video(video)
    t = time.perf_counter()
    pre = FramePreprocessor(spec, lambda k: (k % 16) in positions)
    rgb, gray, clip = [], [], {}
    for b in iter_preprocessed(open_frames(video, probe, 25.0), pre, batch=16):
        rgb.append(b["rgb"])
        gray.append(b["gray"])
        clip.update(b.get("clip", {}))
    dt = time.perf_counter() - t
    return {"rgb": np.concatenate(rgb), "gray": np.concatenate(gray), "clip": clip}, dt


def sweep_layout_in_use(cfg: ExtractConfig, device: torch.device) -> str | None:
    """The Triton sweep's band layout TV-L1 runs with (None when the backend is not "triton")."""
    if resolve_backend(cfg.tvl1, device) != "triton":
        return None
    from extractors import tvl1_triton

    return tvl1_triton.SWEEP_LAYOUT


def sweep_setting(name: str) -> int | None:
    """A launch setting of the Triton sweep in use (tvl1_triton.NAME; None when Triton is not installed)."""
    try:
        from extractors import tvl1_triton
    except ImportError:
        return None
    return getattr(tvl1_triton, name)


def emit(result: dict, out: str | None) -> None:
    print(json.dumps(result, indent=2))
    if out:
        Path(out).write_text(json.dumps(result, indent=2))


def cosine_min(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


def run_e2e(args, cfg: ExtractConfig, video: Path, tmp: Path, result: dict) -> None:
    """extract_video on the whole video, all four features, into a fresh store."""
    from storage import FeatureStore

    e2e_cfg = cfg if args.e2e_tvl1 == "default" else replace(cfg, tvl1=replace(FAST_TVL1, backend=cfg.tvl1.backend, state_dtype=cfg.tvl1.state_dtype))
    store = FeatureStore.create(tmp / "store")
    r = extract_video(video, "bench", store, e2e_cfg, Extractors(e2e_cfg))
    result["end_to_end"] = {"frames_per_second": r.frames_per_second, "seconds": r.seconds,
                            "tvl1": args.e2e_tvl1, "precision": r.precision, "backend": r.decode_backend}


def run_e2e_many(args, cfg: ExtractConfig, tmp: Path, result: dict) -> None:
    """extract_many over --e2e-videos videos (THUMOS-like 320x180 at 30 fps) with --video-workers decoders.

    A 2 s video goes through first (model loading, cuDNN autotuning and torch.compile stay out of
    the timing); the figure is all output frames / wall time of the whole extract_many call.
    """
    from concurrent.futures import ThreadPoolExecutor

    from extractors.pipeline import extract_many
    from storage import FeatureStore

    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda i: make_video(tmp / f"many{i}.mp4", args.e2e_seconds, "320x180", 30),
                              range(args.e2e_videos)))
    warm = make_video(tmp / "warm.mp4", 2.0, "320x180", 30)
    c = replace(cfg, video_workers=args.video_workers, features=tuple(filter(None, args.features.split(","))))
    if args.e2e_tvl1 == "fast":
        c = replace(c, tvl1=replace(FAST_TVL1, backend=c.tvl1.backend, state_dtype=c.tvl1.state_dtype))
    models = Extractors(c)
    store = FeatureStore.create(tmp / "store_many")
    extract_many([("warm", warm)], store, c, models)
    sync(models.device)
    t = time.perf_counter()
    res = extract_many([(f"v{i}", p) for i, p in enumerate(paths)], store, c, models)
    sync(models.device)
    wall = time.perf_counter() - t
    failed = [r for r in res if not r.ok]
    frames = sum(r.num_frames or 0 for r in res if r.ok)
    stages: dict[str, float] = {}
    for r in res:
        for k, v in getattr(r, "stage_seconds", {}).items():
            stages[k] = round(stages.get(k, 0.0) + v, 2)
    result["end_to_end_many"] = {
        "videos": len(paths), "seconds_each": args.e2e_seconds, "video_workers": args.video_workers,
        "frames": frames, "wall_s": round(wall, 2), "frames_per_second": round(frames / wall, 1),
        "failed": [str(r.error) for r in failed], "precision": res[0].precision if res[0].ok else None,
        "flow_batch_pairs": c.flow_batch_pairs, "batch_size": c.batch_size, "window_snippets": c.window_snippets,
        "features": list(c.features),
        "tvl1_backend": resolve_backend(c.tvl1, models.device), "concurrent_flow": models.concurrent_flow,
        "stage_seconds_summed_over_videos": stages,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="320x240", help="generated video size")
    ap.add_argument("--snippets", type=int, default=2, help="snippets per extractor micro-benchmark")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--flow-batch", type=int, default=32, help="TV-L1 pairs per call")
    ap.add_argument("--window-snippets", type=int, default=16, help="snippets per decoded window (flow batches stay within one)")
    ap.add_argument("--e2e", action="store_true", help="also time extract_video on the whole video")
    ap.add_argument("--only-e2e", action="store_true", help="skip the per-extractor rows")
    ap.add_argument("--only-many", action="store_true",
                    help="only the --e2e-videos run (no per-extractor rows, no cold single-video run)")
    ap.add_argument("--e2e-tvl1", default="default", choices=["default", "fast"],
                    help="TV-L1 setting for --e2e: OpenCV defaults, or 1 scale/1 warp/5 iterations")
    ap.add_argument("--e2e-videos", type=int, default=0, help="also time extract_many on this many videos")
    ap.add_argument("--e2e-seconds", type=float, default=60.0, help="length of each --e2e-videos video")
    ap.add_argument("--video-workers", type=int, default=4, help="videos decoded at once for --e2e-videos")
    ap.add_argument("--tvl1-backend", default="auto", choices=list(TVL1_BACKENDS), help="TVL1Config.backend")
    ap.add_argument("--tvl1-state-dtype", default="float32", choices=list(STATE_DTYPES), help="TVL1Config.state_dtype")
    ap.add_argument("--sweep-maxnreg", type=int, default=None, help="register cap of the Triton sweep (tvl1_triton.SWEEP_MAXNREG)")
    ap.add_argument("--sweep-layout", default=None, choices=["flat", "rows", "fused"],
                    help="band shape of the Triton sweep (tvl1_triton.SWEEP_LAYOUT)")
    ap.add_argument("--sweep-align", type=int, default=None,
                    help="row stride multiple of the Triton sweep, e.g. 16 (tvl1_triton.SWEEP_ROW_ALIGN)")
    ap.add_argument("--sweep-ppt", type=int, default=None, choices=[1, 2],
                    help="pixels per thread of the Triton sweep (tvl1_triton.SWEEP_PIXELS_PER_THREAD)")
    ap.add_argument("--sweep-band", type=int, default=None,
                    help="pixels per band of the Triton sweep, a power of 2 (tvl1_triton.SWEEP_BAND_PIXELS)")
    ap.add_argument("--precision", default="auto", choices=["fp32", "auto", "bf16", "fp16"])
    ap.add_argument("--features", default=",".join(ALL_FEATURES),
                    help="comma-separated features the --e2e-videos run extracts (e.g. i3d_flow: TV-L1 and I3D "
                         "flow without the other networks beside it)")
    ap.add_argument("--autocast", action="store_true", help="CUDA: cosine of bf16/fp16 autocast vs fp32")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.sweep_maxnreg or args.sweep_layout or args.sweep_ppt or args.sweep_band or args.sweep_align:
        from extractors import tvl1_triton

        if args.sweep_band:
            tvl1_triton.sweep_layout(224, args.sweep_band)  # validates
            tvl1_triton.SWEEP_BAND_PIXELS = args.sweep_band
        tvl1_triton.SWEEP_MAXNREG = args.sweep_maxnreg
        tvl1_triton.SWEEP_LAYOUT = args.sweep_layout or tvl1_triton.SWEEP_LAYOUT
        tvl1_triton.SWEEP_PIXELS_PER_THREAD = args.sweep_ppt or tvl1_triton.SWEEP_PIXELS_PER_THREAD
        tvl1_triton.SWEEP_ROW_ALIGN = args.sweep_align or tvl1_triton.SWEEP_ROW_ALIGN
        tvl1_triton.sweep_row_stride(224)  # validates
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    (tmp / "no_weights").mkdir()  # an empty weights dir: random-init networks (a missing dir would be refused)
    cfg = ExtractConfig(allow_random_weights=True, weights_dir=str(tmp / "no_weights"), device=args.device,
                        batch_size=args.batch_size, flow_batch_pairs=args.flow_batch, precision=args.precision,
                        tvl1=TVL1Config(backend=args.tvl1_backend, state_dtype=args.tvl1_state_dtype),
                        window_snippets=args.window_snippets)
    result = {"machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}",
              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "tvl1_backend": resolve_backend(cfg.tvl1, device), "tvl1_state_dtype": cfg.tvl1.state_dtype,
              "sweep_maxnreg": args.sweep_maxnreg, "sweep_layout": sweep_layout_in_use(cfg, device),
              "sweep_ppt": sweep_setting("SWEEP_PIXELS_PER_THREAD"), "sweep_band": sweep_setting("SWEEP_BAND_PIXELS"),
              "sweep_align": sweep_setting("SWEEP_ROW_ALIGN")}
    if args.only_many:
        if args.e2e_videos:
            run_e2e_many(args, cfg, tmp, result)
        emit(result, args.out)
        return
    video = make_video(tmp / "bench.mp4", args.seconds, args.size)
    positions = {2, 6, 10, 14}
    frames, dec_s = decode_frames(video, PreprocessSpec(), positions)
    n_frames = len(frames["rgb"])
    rows = {"decode+preprocess (whole video)": n_frames / dec_s}
    result.update({"video": f"{args.size} {args.seconds:g}s testsrc2 h264 + aac", "frames": n_frames,
                   "frames_per_second": rows})
    if args.only_e2e:
        run_e2e(args, cfg, video, tmp, result)
        if args.e2e_videos:
            run_e2e_many(args, cfg, tmp, result)
        emit(result, args.out)
        return
    models = Extractors(cfg)
    s = min(args.snippets, n_frames // 16 - 1)  # (one snippet's frames kept back: the flow of its last frame)
    if s < 1:
        raise SystemExit(f"--seconds {args.seconds:g} gives {n_frames} frames: the per-extractor rows need at least "
                         "32 (two snippets); use --seconds 2 or more")
    result["snippets_per_extractor"] = s
    nf = 16 * s
    # The networks' rows run at the precision the pipeline would use: --precision bf16/fp16 as given, auto as
    # bf16 (what its cosine check kept for all three networks in every recorded run), fp32 on the CPU.
    # (Before 2026-11-23's sixth session these rows ran without autocast, i.e. fp32.)
    amp_dtype = {"bf16": torch.bfloat16, "auto": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    if device.type != "cuda":
        amp_dtype = None
    result["networks_precision"] = str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32"

    def amp():
        return torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

    rgb = torch.from_numpy(frames["rgb"][:nf]).reshape(s, 16, 224, 224, 3).to(device)
    gray = torch.from_numpy(frames["gray"][: nf + 1]).to(device)
    from extractors.i3d import rgb_to_i3d_input

    i3d_rgb, i3d_flow = models.model("i3d_rgb"), models.model("i3d_flow")
    with amp():
        rows["i3d_rgb"] = nf / timed(lambda: [i3d_rgb.features(rgb_to_i3d_input(rgb[i : i + args.batch_size]))
                                              for i in range(0, s, args.batch_size)], device)
    flows = {}

    def run_tvl1():
        out = []
        for i in range(0, nf, args.flow_batch):
            j = min(nf, i + args.flow_batch)
            out.append(flow_to_i3d_input(tvl1_flow(gray[i:j], gray[i + 1 : j + 1], cfg.tvl1, check_finite=False)))
        flows["x"] = torch.cat(out)[:nf]

    rows["tvl1 (OpenCV defaults)"] = nf / timed(run_tvl1, device)
    fx = flows["x"].reshape(s, 16, 2, 224, 224).permute(0, 2, 1, 3, 4)
    with amp():
        rows["i3d_flow"] = nf / timed(lambda: [i3d_flow.features(fx[i : i + args.batch_size])
                                               for i in range(0, s, args.batch_size)], device)
    clip = models.model("clip_vitb16")
    crops = torch.from_numpy(np.stack([frames["clip"][k] for k in sorted(frames["clip"])][: 4 * s]))
    with amp():
        rows["clip_vitb16 (4 frames/snippet)"] = nf / timed(lambda: clip.embed_crops(crops, batch_size=64), device)
    wav = decode_audio(video, probe_video(video))
    vgg = models.model("vggish")
    centers = (np.arange(s) * 16 + 8) / 25.0
    rows["vggish (0.96 s per snippet)"] = nf / timed(lambda: vgg.embed_centered(wav, 16000, centers), device)

    if args.e2e:
        run_e2e(args, cfg, video, tmp, result)
    if args.e2e_videos:
        run_e2e_many(args, cfg, tmp, result)
    if args.autocast and device.type == "cuda":
        checks = {}
        for name, fn in (
            ("i3d_rgb", lambda: i3d_rgb.features(rgb_to_i3d_input(rgb[: args.batch_size]))),
            ("i3d_flow", lambda: i3d_flow.features(fx[: args.batch_size])),
            ("clip_vitb16", lambda: clip.visual((crops.to(device).float() * clip._scale + clip._shift))),
        ):
            ref = fn()
            checks[name] = {}
            for dt in (torch.bfloat16, torch.float16):
                with torch.autocast("cuda", dtype=dt):
                    low = fn()
                checks[name][str(dt).replace("torch.", "")] = cosine_min(ref, low)
        result["autocast_min_cosine"] = checks
    emit(result, args.out)


if __name__ == "__main__":
    main()
