"""Accuracy study: what storing TV-L1 state in 16-bit floats would do to the flow (CPU, no GPU needed).

The Triton sweep kernel is memory-bound (docs/tvl1.md: 60 bytes per pixel and iteration, ~58% of an
H100's bandwidth). Storing some planes in float16 would cut the bytes, but it changes the result, so
before any kernel work this measures the change with the reference torch solver, emulating the
storage by rounding each stored plane to float16 (all arithmetic stays float32, as it would in a kernel
that loads 16-bit values and computes in 32-bit):

  fp32          the reference (what every backend computes today)
  p16           the dual variable p (4 planes, |p| <= 1 by construction) rounded after every update
  g16           the warped gradient grad I1(x+u0) (2 planes, read every iteration) rounded once per warp
  p16+g16       both (traffic 60 -> 40 bytes per pixel and iteration)
  p16+g16+rho16 also rho_c (60 -> 38 bytes)
  float16       TVL1Config(state_dtype="float16") itself (= p16+g16; reports its difference from the emulation)

Measured per mode, on the same pairs as bench/bench_tvl1.py: EPE vs ground truth on synthetic pairs
(smooth random flow warping real frames), EPE vs the float32 flow and vs OpenCV on consecutive real
frames (bikes.mp4: large motion; bigbuckbunny.mp4; testsrc2: the content of bench_extract.py's end-to-end
videos, 320x180 at 30 fps resampled to 25 fps, short side 256, centre crop 224), the I3D-input difference (flow clipped to +-20 px
and scaled to [-1, 1]: relative L2, mean and max abs), the cosine of I3D-flow features of one 16-flow
snippet per set (a randomly initialised, seeded I3D: no weights here, so only a sensitivity proxy), and
the work: finest-level-equivalent iterations per pair (rounding noise that kept pairs from meeting the
stopping test would cost more iterations than it saves bytes). The same differences between OpenCV's
flow and our float32 flow are the baseline: two faithful float32 implementations differ that much.

  python bench/study_tvl1_storage.py --json bench/results/tvl1_storage.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import extractors.tvl1 as tv  # noqa: E402
from bench_tvl1 import (  # noqa: E402
    VIDEOS, decode_gray_224, epe, have_opencv_tvl1, run_opencv, sample_video_dir, synthetic_pairs,
)
from extractors.tvl1 import TVL1Config, flow_to_i3d_input, tvl1_flow  # noqa: E402

MODES = {  # planes rounded by the emulation, TVL1Config.state_dtype
    "fp32": ((), "float32"),
    "p16": (("p",), "float32"),
    "g16": (("grad",), "float32"),
    "p16+g16": (("p", "grad"), "float32"),
    "p16+g16+rho16": (("p", "grad", "rho"), "float32"),
    "float16": ((), "float16"),
}
BYTES = {"fp32": 60, "p16": 44, "g16": 56, "p16+g16": 40, "p16+g16+rho16": 38, "float16": 40}  # per pixel and iteration


def _half(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).to(torch.float32)


class _Work:
    """Counts finest-level-equivalent iterations: pairs x pixels of every iteration / pixels of the finest level."""

    def __init__(self) -> None:
        self.pixel_iterations = 0


def emulate(planes: tuple[str, ...], work: _Work):
    """Context manager patching extractors.tvl1's steps so the named planes are stored as float16
    (rounded where written) and every iteration is counted in ``work``."""
    saved = {name: getattr(tv, name) for name in ("dual_step", "warp_bicubic", "linearized_residual_constant", "tvl1_iteration")}

    def dual_step(p, u, tt):
        out = saved["dual_step"](p, u, tt)
        return _half(out) if "p" in planes else out

    def warp_bicubic(stack, u):
        out = saved["warp_bicubic"](stack, u)
        if "grad" in planes:  # channels 1:3 are the warped gradient; channel 0 (I1w) feeds rho_c only
            out = torch.cat((out[:, :1], _half(out[:, 1:])), dim=1)
        return out

    def linearized_residual_constant(i0, i1w, grad, u0):
        out = saved["linearized_residual_constant"](i0, i1w, grad, u0)
        return _half(out) if "rho" in planes else out

    def tvl1_iteration(u, *args):
        work.pixel_iterations += u.shape[0] * u.shape[-2] * u.shape[-1]
        return saved["tvl1_iteration"](u, *args)

    return mock.patch.multiple(tv, dual_step=dual_step, warp_bicubic=warp_bicubic,
                               linearized_residual_constant=linearized_residual_constant, tvl1_iteration=tvl1_iteration)


def input_diff(flows: np.ndarray, ref: np.ndarray, net) -> dict:
    """How different the I3D flow-stream inputs (and a seeded random I3D's features) of two flow sets are."""
    a = flow_to_i3d_input(torch.from_numpy(np.ascontiguousarray(flows)))
    b = flow_to_i3d_input(torch.from_numpy(np.ascontiguousarray(ref)))
    d = (a - b).abs()
    out = {"i3d_input_rel_l2": round(float((a - b).norm() / b.norm()), 5),
           "i3d_input_mean_abs_diff": round(float(d.mean()), 5), "i3d_input_max_abs_diff": round(float(d.max()), 4)}
    if len(flows) >= 16:  # one snippet: (1, 2, 16, H, W)
        with torch.no_grad():
            fa = net.features(a[:16].permute(3, 0, 1, 2).unsqueeze(0))
            fb = net.features(b[:16].permute(3, 0, 1, 2).unsqueeze(0))
        out["i3d_flow_feature_cosine_random_init"] = round(float(torch.nn.functional.cosine_similarity(fa, fb)), 6)
    return out


def testsrc_frames(n: int, size: int) -> list[np.ndarray]:
    """Gray 224 crops of a generated testsrc2 clip, prepared like the pipeline's I3D frames."""
    import subprocess
    import tempfile

    path = Path(tempfile.mkdtemp()) / "testsrc2.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
                    "-t", str(n / 25 + 1), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    cap = cv2.VideoCapture(str(path))
    decoded = []
    ok, frame = cap.read()
    while ok:
        decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        ok, frame = cap.read()
    out = []
    for k in range(n):  # 25 fps by timestamp from 30 fps
        g = decoded[min(round(k / 25 * 30), len(decoded) - 1)]
        h, w = g.shape
        s = 256 / min(h, w)
        g = cv2.resize(g, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
        h, w = g.shape
        t, left = (h - size) // 2, (w - size) // 2
        out.append(np.ascontiguousarray(g[t : t + size, left : left + size]))
    return out


def solve(pairs, batch: int, state_dtype: str = "float32") -> np.ndarray:
    cfg = TVL1Config(backend="torch", compile=False, state_dtype=state_dtype)
    out = []
    for s in range(0, len(pairs), batch):
        f0 = torch.from_numpy(np.stack([p[0] for p in pairs[s : s + batch]])).float()
        f1 = torch.from_numpy(np.stack([p[1] for p in pairs[s : s + batch]])).float()
        out.append(tvl1_flow(f0, f1, cfg).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic-pairs", type=int, default=24)
    ap.add_argument("--video-pairs", type=int, default=16, help="consecutive-frame pairs per video")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    size = 224
    video_dir = sample_video_dir()
    frames = {name: decode_gray_224(video_dir / name, args.video_pairs + 1, size) for name in VIDEOS}
    synth = synthetic_pairs([f for fs in frames.values() for f in fs], args.synthetic_pairs)
    gt = np.stack([p[2] for p in synth])
    frames["testsrc2"] = testsrc_frames(args.video_pairs + 1, size)
    real = {name: [(fs[k], fs[k + 1], None) for k in range(len(fs) - 1)] for name, fs in frames.items()}
    sets = {"synthetic": synth, **real}
    opencv = {name: np.stack(run_opencv(pairs)[0]) for name, pairs in sets.items()} if have_opencv_tvl1() else {}

    results: dict = {"machine": f"{platform.machine()}, {args.threads} threads", "torch": torch.__version__,
                     "date": time.strftime("%Y-%m-%d"), "size": size, "modes": {}}
    if opencv:
        results["opencv_synthetic_epe"] = round(float(np.mean([epe(a, b) for a, b in zip(opencv["synthetic"], gt)])), 4)
    from extractors.i3d import build_i3d

    net = build_i3d(2, seed=0).eval()
    results["random_init_i3d"] = True
    reference: dict[str, np.ndarray] = {}
    emulated: dict[str, np.ndarray] = {}
    for mode in args.modes.split(","):
        planes, state_dtype = MODES[mode]
        row: dict = {"bytes_per_pixel_iteration": BYTES[mode]}
        for name, pairs in sets.items():
            work = _Work()
            t = time.perf_counter()
            with emulate(planes, work):
                flows = solve(pairs, args.batch, state_dtype)
            stats = {"seconds": round(time.perf_counter() - t, 1),
                     "iterations_per_pair": round(work.pixel_iterations / len(pairs) / (size * size), 1)}
            if name == "synthetic":
                stats["epe_vs_truth"] = round(float(np.mean([epe(a, b) for a, b in zip(flows, gt)])), 4)
                if opencv:
                    stats["epe_ratio_to_opencv"] = round(stats["epe_vs_truth"] / results["opencv_synthetic_epe"], 4)
            if mode == "p16+g16":
                emulated[name] = flows
            if mode == "float16" and name in emulated:  # the real option vs its emulation: expected 0
                stats["vs_emulation_max_abs"] = float(np.abs(flows - emulated[name]).max())
            if mode == "fp32":
                reference[name] = flows
                if name in opencv:  # the baseline: OpenCV vs our float32 flow
                    stats["opencv_vs_fp32"] = input_diff(opencv[name], flows, net)
            else:
                d = [epe(a, b) for a, b in zip(flows, reference[name])]
                stats["vs_fp32_epe_mean"], stats["vs_fp32_epe_max"] = round(float(np.mean(d)), 4), round(float(np.max(d)), 4)
                stats["vs_fp32"] = input_diff(flows, reference[name], net)
            if name in opencv:
                stats["vs_opencv_epe_mean"] = round(float(np.mean([epe(a, b) for a, b in zip(flows, opencv[name])])), 4)
            row[name] = stats
        results["modes"][mode] = row
        print(mode, json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
