"""Tests for the batched torch TV-L1 optical flow (extractors/tvl1.py, extractors/tvl1_ops.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from extractors.tvl1 import TVL1Config, flow_to_i3d_input, tvl1_flow
from extractors.tvl1_ops import (
    build_pyramid,
    median_filter,
    median_network,
    resize_linear,
    warp_bicubic,
)

torch.set_num_threads(2)


def _texture(rs: np.random.RandomState, h: int, w: int) -> np.ndarray:
    img = cv2.GaussianBlur(rs.rand(h, w).astype(np.float32), (0, 0), 1.0)
    return (img - img.min()) / (img.max() - img.min()) * 255.0


def _smooth_flow(rs: np.random.RandomState, h: int, w: int, magnitude: float) -> np.ndarray:
    flow = cv2.GaussianBlur(rs.randn(h, w, 2).astype(np.float32), (0, 0), max(h, w) / 6)
    return flow / np.abs(flow).max() * magnitude


def _pair_with_flow(rs: np.random.RandomState, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """frames (I0, I1) as uint8 with I0(x) = I1(x + flow(x)), the convention of DualTVL1."""
    h, w = flow.shape[:2]
    i1 = _texture(rs, h, w)
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    i0 = cv2.remap(i1, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return np.clip(i0, 0, 255).round().astype(np.uint8), np.clip(i1, 0, 255).round().astype(np.uint8)


def _epe(a: np.ndarray, b: np.ndarray, border: int = 0) -> float:
    """Mean endpoint error between (H, W, 2) flows, optionally ignoring a border."""
    d = np.sqrt(((a - b) ** 2).sum(-1))
    if border:
        d = d[border:-border, border:-border]
    return float(d.mean())


def _ours(frames0: list[np.ndarray], frames1: list[np.ndarray], **cfg) -> np.ndarray:
    f0 = torch.from_numpy(np.stack(frames0)).float()
    f1 = torch.from_numpy(np.stack(frames1)).float()
    return tvl1_flow(f0, f1, TVL1Config(**cfg) if cfg else None).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def smooth_pairs():
    rs = np.random.RandomState(7)
    flows = [_smooth_flow(rs, 64, 64, 3.0) for _ in range(3)]
    pairs = [_pair_with_flow(rs, f) for f in flows]
    ours = _ours([p[0] for p in pairs], [p[1] for p in pairs])
    return pairs, flows, ours


# --------------------------------------------------------------------------- operators vs OpenCV
def test_median_network_selects_the_median():
    rs = np.random.RandomState(0)
    for n in (9, 25):
        vals = rs.randn(500, n)
        wires = [vals[:, i].copy() for i in range(n)]
        for op, i, j in median_network(n):
            a, b = wires[i], wires[j]
            if op == "ce":
                wires[i], wires[j] = np.minimum(a, b), np.maximum(a, b)
            elif op == "min":
                wires[i] = np.minimum(a, b)
            elif op == "max":
                wires[j] = np.maximum(a, b)
            else:
                wires[i] = b
        np.testing.assert_array_equal(wires[n // 2], np.median(vals, axis=1))


@pytest.mark.parametrize("ksize", [3, 5])
def test_median_filter_matches_opencv(ksize):
    img = (np.random.RandomState(1).randn(37, 50) * 10).astype(np.float32)
    ours = median_filter(torch.from_numpy(img)[None, None], ksize)[0, 0].numpy()
    np.testing.assert_array_equal(ours, cv2.medianBlur(img, ksize))


def test_pyramid_and_resize_match_opencv():
    img = _texture(np.random.RandomState(2), 61, 83)
    levels = build_pyramid(torch.from_numpy(img)[None, None], nscales=5, scale_step=0.8)
    ref = img
    for level in levels[1:]:
        ref = cv2.resize(ref, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
        assert level.shape[-2:] == ref.shape
        np.testing.assert_allclose(level[0, 0].numpy(), ref, atol=1e-3)
    up = resize_linear(levels[2], tuple(levels[1].shape[-2:]))[0, 0].numpy()
    ref_up = cv2.resize(levels[2][0, 0].numpy(), levels[1].shape[-2:][::-1], interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(up, ref_up, atol=1e-3)


def test_pyramid_stops_below_16_pixels():
    levels = build_pyramid(torch.zeros(1, 1, 24, 40), nscales=5, scale_step=0.8)
    assert [tuple(x.shape[-2:]) for x in levels] == [(24, 40), (19, 32)]


def test_bicubic_warp_matches_opencv_remap():
    rs = np.random.RandomState(3)
    img = _texture(rs, 40, 52)
    flow = _smooth_flow(rs, 40, 52, 6.0)  # reaches outside the image: constant-0 border
    xs, ys = np.meshgrid(np.arange(52, dtype=np.float32), np.arange(40, dtype=np.float32))
    ref = cv2.remap(img, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_CUBIC)
    ours = warp_bicubic(torch.from_numpy(img)[None, None], torch.from_numpy(flow).permute(2, 0, 1)[None])
    np.testing.assert_allclose(ours[0, 0].numpy(), ref, atol=0.02)


# --------------------------------------------------------------------------- flow accuracy
def test_recovers_subpixel_translation():
    rs = np.random.RandomState(4)
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = 1.5, -0.75
    i0, i1 = _pair_with_flow(rs, flow)
    ours = _ours([i0], [i1])[0]
    assert _epe(ours, flow, border=6) < 0.1
    assert abs(float(np.median(ours[..., 0])) - 1.5) < 0.05
    assert abs(float(np.median(ours[..., 1])) + 0.75) < 0.05


def test_recovers_smooth_random_flow(smooth_pairs):
    _, flows, ours = smooth_pairs
    for flow, est in zip(flows, ours):
        assert _epe(est, flow) < 0.25
        assert _epe(np.zeros_like(flow), flow) > 1.0  # the test would catch a zero output


def test_agrees_with_opencv_dualtvl1(smooth_pairs):
    pairs, flows, ours = smooth_pairs
    cv2.setNumThreads(1)
    of = cv2.optflow.DualTVL1OpticalFlow_create()
    for (i0, i1), flow, est in zip(pairs, flows, ours):
        ref = of.calc(i0, i1, None)
        assert _epe(est, ref) < 0.05
        assert _epe(est, flow) <= 1.15 * _epe(ref, flow) + 0.01


def test_agrees_with_opencv_on_nonsquare_image_and_other_params():
    rs = np.random.RandomState(5)
    flow = _smooth_flow(rs, 40, 72, 2.0)
    i0, i1 = _pair_with_flow(rs, flow)
    cv2.setNumThreads(1)
    of = cv2.optflow.DualTVL1OpticalFlow_create(nscales=3, warps=3, medianFiltering=3, scaleStep=0.5)
    ref = of.calc(i0, i1, None)
    ours = _ours([i0], [i1], nscales=3, warps=3, median_filtering=3, scale_step=0.5)[0]
    assert ours.shape == ref.shape
    assert _epe(ours, ref) < 0.05


def test_agrees_with_opencv_on_motion_that_needs_the_pyramid():
    """8 px motion on 96 px frames is solved at the coarse levels: a flow zoomed to the finer level with the
    wrong factor (x scale_step instead of / scale_step) still recovers 3 px motion within the test above."""
    rs = np.random.RandomState(11)
    flow = _smooth_flow(rs, 96, 96, 8.0)
    i0, i1 = _pair_with_flow(rs, flow)
    cv2.setNumThreads(1)
    ref = cv2.optflow.DualTVL1OpticalFlow_create().calc(i0, i1, None)
    ours = _ours([i0], [i1])[0]
    assert _epe(ours, ref) < 0.1, _epe(ours, ref)


def test_median_filter_size_is_the_configured_one():
    """A translating square on a static background: our flow equals OpenCV's to the last digit, so the
    median's size shows (a fixed 3x3 median differed by 0.018 px from OpenCV's 5x5)."""
    rs = np.random.RandomState(12)
    bg = _texture(rs, 48, 48)
    square = _texture(rs, 16, 16)
    i0 = bg.copy()
    i0[16:32, 16:32] = square
    xs, ys = np.meshgrid(np.arange(48, dtype=np.float32), np.arange(48, dtype=np.float32))
    # the square moved by (2.5, -1.5) px in I1
    patch = cv2.remap(i0, xs - 2.5, ys + 1.5, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    inside = (xs >= 18.5) & (xs < 34.5) & (ys >= 14.5) & (ys < 30.5)
    i1 = np.where(inside, patch, bg)
    i0, i1 = (np.clip(x, 0, 255).round().astype(np.uint8) for x in (i0, i1))
    cv2.setNumThreads(1)
    for ksize in (5, 3):
        ref = cv2.optflow.DualTVL1OpticalFlow_create(medianFiltering=ksize).calc(i0, i1, None)
        ours = _ours([i0], [i1], median_filtering=ksize)[0]
        assert _epe(ours, ref) < 5e-3, (ksize, _epe(ours, ref))


# --------------------------------------------------------------------------- contract
def test_shape_dtype_device_contract():
    rs = np.random.RandomState(6)
    frames = torch.from_numpy(np.stack([_texture(rs, 20, 28) for _ in range(4)])).double()
    flow = tvl1_flow(frames[:2], frames[2:], TVL1Config(nscales=2, warps=1, outer_iterations=1))
    assert flow.shape == (2, 2, 20, 28)
    assert flow.dtype == torch.float32
    assert flow.device == frames.device
    assert torch.isfinite(flow).all()


def test_identical_frames_give_zero_flow():
    img = torch.from_numpy(_texture(np.random.RandomState(8), 32, 32))[None]
    flow = tvl1_flow(img, img.clone())
    assert flow.abs().max() < 1e-4


def test_pair_alone_equals_pair_in_batch(smooth_pairs):
    pairs, _, ours = smooth_pairs
    alone = _ours([pairs[1][0]], [pairs[1][1]])[0]
    np.testing.assert_allclose(alone, ours[1], atol=1e-4)


def test_sync_interval_does_not_change_result(smooth_pairs):
    pairs, _, ours = smooth_pairs
    other = _ours([p[0] for p in pairs[:2]], [p[1] for p in pairs[:2]], check_every=7)
    np.testing.assert_allclose(other, ours[:2], atol=1e-4)


def test_float16_state_is_stored_as_float16_and_keeps_the_accuracy(smooth_pairs, monkeypatch):
    """state_dtype="float16": p and the warped gradient really are float16 tensors, and the flow keeps
    float32's accuracy against the ground truth (bench/study_tvl1_storage.py measures it on real frames)."""
    import extractors.tvl1 as tv

    pairs, flows, ours = smooth_pairs
    seen = set()
    iteration = tv.tvl1_iteration

    def spy(u, p, i1w_grad, *args):
        seen.add((u.dtype, p.dtype, i1w_grad.dtype))
        return iteration(u, p, i1w_grad, *args)

    monkeypatch.setattr(tv, "tvl1_iteration", spy)
    half = _ours([p[0] for p in pairs], [p[1] for p in pairs], state_dtype="float16")
    assert seen == {(torch.float32, torch.float16, torch.float16)}
    assert half.dtype == np.float32
    epe32 = np.mean([_epe(o, f, border=4) for o, f in zip(ours, flows)])
    epe16 = np.mean([_epe(h, f, border=4) for h, f in zip(half, flows)])
    assert epe16 <= 1.05 * epe32 + 1e-3, (epe16, epe32)
    assert 0 < np.mean([_epe(h, o) for h, o in zip(half, ours)]) < 0.05  # different, but only slightly


def test_state_dtype_is_part_of_the_flow_feature_hash():
    from extractors.config import ExtractConfig, preprocess_hash, preprocess_params

    cfg = ExtractConfig()
    half = cfg.with_(tvl1=TVL1Config(state_dtype="float16"))
    assert preprocess_params(cfg, "i3d_flow") != preprocess_params(half, "i3d_flow")
    assert preprocess_params(cfg, "i3d_rgb") == preprocess_params(half, "i3d_rgb")
    # The default (float32) leaves the hash of stores written before the field existed (commit 4732f8c)
    # valid, so they are not re-extracted. Change this pin only with a deliberate re-extraction.
    assert preprocess_hash(cfg, "i3d_flow") == "0bf3d83c5e821eea"


def test_flow_to_i3d_input_clips_and_scales():
    flow = torch.tensor([[-40.0, -20.0, -10.0, 0.0, 5.0, 20.0, 33.0]])
    np.testing.assert_allclose(flow_to_i3d_input(flow).numpy(), [[-1.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.0]])
    with pytest.raises(ValueError, match="bound"):
        flow_to_i3d_input(flow, bound=0.0)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (torch.zeros(2, 16, 16), torch.zeros(2, 16, 17), "differ in shape"),
        (torch.zeros(2, 16, 16), torch.zeros(3, 16, 16), "differ in shape"),
        (torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), r"\(B, H, W\)"),
        (torch.zeros(16, 16), torch.zeros(16, 16), r"\(B, H, W\)"),
        (torch.zeros(0, 16, 16), torch.zeros(0, 16, 16), "empty batch"),
        (np.zeros((1, 16, 16)), torch.zeros(1, 16, 17), "differ in shape"),  # (numpy is taken, as a tensor)
    ],
)
def test_bad_inputs_raise_value_error(a, b, message):
    with pytest.raises(ValueError, match=message):
        tvl1_flow(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [{"tau": 0.0}, {"nscales": 0}, {"scale_step": 1.0}, {"gamma": 0.1}, {"median_filtering": 4}, {"check_every": 0},
     {"state_dtype": "bfloat16"}],
)
def test_bad_config_raises_value_error(kwargs):
    with pytest.raises(ValueError, match="TVL1Config"):
        TVL1Config(**kwargs)


_TRITON_CHECK = """
import itertools, json, torch
from extractors.tvl1 import TVL1Config, tvl1_flow
g = torch.Generator().manual_seed(3)
h, w = 36, 41  # not powers of 2: partial bands (sweep) and tiles (grid) at both levels
tex = sum(torch.nn.functional.interpolate(torch.rand(3, 1, h // k, w // k, generator=g) * 85, size=(h, w),
                                          mode="bilinear", align_corners=False) for k in (1, 2, 4))[:, 0]
f0, f1 = torch.roll(tex, 1, dims=2), tex
f0[2] = f1[2]  # an identical pair converges at once: exercises frozen/dropped pairs
kw = dict(nscales=2, warps=2, inner_iterations=8, outer_iterations=2)
dev = "cuda" if torch.cuda.is_available() else "cpu"
from extractors import tvl1_triton
default_layout = tvl1_triton.SWEEP_LAYOUT
out, flows = {}, {}
for state in ("float32", "float16"):  # float16: p and the warped gradient stored as float16
    ref = tvl1_flow(f0, f1, TVL1Config(compile=False, state_dtype=state, **kw))
    out[f"flow_mean_{state}"] = ref[:2].abs().mean().item()
    # name -> (backend, sweep layout, row alignment): "triton" with the sweep's rows layout, the grid
    # backend, the flat and fused sweeps, and those with rows padded to a multiple of 16 (41 -> 48 px)
    for backend, (be, layout, align) in {"triton": ("triton", "rows", 1), "triton-grid": ("triton-grid", "rows", 1),
                                         "triton-flat": ("triton", "flat", 1), "triton-fused": ("triton", "fused", 1),
                                         "triton-flat-a16": ("triton", "flat", 16),
                                         "triton-fused-a16": ("triton", "fused", 16)}.items():
        tvl1_triton.SWEEP_LAYOUT, tvl1_triton.SWEEP_ROW_ALIGN = layout, align
        got = tvl1_flow(f0.to(dev), f1.to(dev), TVL1Config(compile=False, backend=be, check_every=3, state_dtype=state,
                                                           **kw)).cpu()
        epe = (got - ref).pow(2).sum(1).sqrt()
        out[f"{backend}_{state}"] = {"epe_mean": epe.mean().item(), "epe_max": epe.max().item(),
                                     "identical_pair_max": got[2].abs().max().item()}
        flows[backend] = got
    tvl1_triton.SWEEP_LAYOUT, tvl1_triton.SWEEP_ROW_ALIGN = default_layout, 1
    out[f"flat_vs_rows_{state}"] = (flows["triton-flat"] - flows["triton"]).abs().max().item()
    out[f"fused_padded_vs_flat_{state}"] = max((flows[k] - flows["triton-flat"]).abs().max().item()
                                               for k in ("triton-fused", "triton-flat-a16", "triton-fused-a16"))
# The flat and fused layouts' band arithmetic at widths wider than, equal to and dividing a (64-pixel)
# band, and images smaller than one band, with and without padded rows: one sweep launch vs the torch
# iterations, and the padding's values kept out of the image (NaN there changes nothing).
from extractors.tvl1 import _FLT_EPSILON, masked_block
consts = (0.01**2, 0.045, 0.3, 0.25 / 0.3)


def random_state(sh, sw, seed):  # random, unconverged block inputs (u, p, grad, rho_c, 1/|grad|^2, active)
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(2, 2, sh, sw, generator=gen).to(dev)
    p = (torch.randn(2, 2, 2, sh, sw, generator=gen) * 0.1).to(dev)
    gr = (torch.randn(2, 2, sh, sw, generator=gen) * 20).to(dev)
    rh = (torch.randn(2, 1, sh, sw, generator=gen) * 5).to(dev)
    inv = 1.0 / (gr * gr).sum(1, keepdim=True).clamp(min=_FLT_EPSILON)
    return u, p, gr, rh, inv, torch.tensor([True, True], device=dev)


tvl1_triton.SWEEP_BAND_PIXELS = 64
worst = pad_leak = 0.0
for (sh, sw), layout, align in itertools.product(((2, 150), (3, 64), (5, 32), (4, 65), (9, 3)), ("flat", "fused"), (1, 16)):
    tvl1_triton.SWEEP_LAYOUT, tvl1_triton.SWEEP_ROW_ALIGN = layout, align
    u, p, gr, rh, inv, act = random_state(sh, sw, sh * sw)
    ru, rp, ra = masked_block(u.clone(), p.clone(), gr, rh, inv, act.clone(), 6, *consts)
    stride = tvl1_triton.sweep_row_stride(sw)
    runs = []
    for fill in (0.0, float("nan")):  # (the pipeline pads with zeros; NaN shows that no pixel reads the padding)
        pad = lambda t: torch.nn.functional.pad(t, (0, stride - sw), value=fill)  # noqa: E731
        su, sp, sa = tvl1_triton.triton_sweep_block(pad(u), pad(p), pad(gr), pad(rh), None, act.clone(), 6,
                                                    *consts, width=sw)
        runs.append((su[..., :sw], sp[..., :sw], sa))
        worst = max(worst, (su[..., :sw] - ru).abs().max().item(), (sp[..., :sw] - rp).abs().max().item(),
                    float((sa != ra).any()))
    (u0_, p0_, a0_), (u1_, p1_, a1_) = runs
    pad_leak = max(pad_leak, float(not (torch.equal(u0_, u1_) and torch.equal(p0_, p1_) and torch.equal(a0_, a1_))))
tvl1_triton.SWEEP_LAYOUT, tvl1_triton.SWEEP_BAND_PIXELS, tvl1_triton.SWEEP_ROW_ALIGN = default_layout, 512, 1
out["flat_small_bands_max_diff"] = worst
out["padding_leaks"] = pad_leak
# The grid backend's block on random, unconverged state: real TV-L1 state has p = 0 on the last column, which
# hides a divergence that reads the previous row's last pixel at column 0; random p does not.
worst = 0.0
for sh, sw in ((3, 64), (4, 65), (9, 3)):
    u, p, gr, rh, inv, act = random_state(sh, sw, 7 * sh + sw)
    ru, rp, ra = masked_block(u.clone(), p.clone(), gr, rh, inv, act.clone(), 6, *consts)
    tu, tp, ta = tvl1_triton.triton_block(u.clone(), p.clone(), gr, rh, inv, act.clone(), 6, *consts)
    worst = max(worst, (tu - ru).abs().max().item(), (tp - rp).abs().max().item(), float((ta != ra).any()))
out["grid_random_state_max_diff"] = worst
from extractors.tvl1_ops import median_filter
from extractors.tvl1_triton_median import triton_median_filter
u = torch.randn(3, 2, 17, 23, generator=g).to(dev)
u[0, 0, :3, :3] = 1.0  # ties
active = torch.tensor([True, False, True], device=dev)
for k in (3, 5):
    ref_m = torch.where(active.view(-1, 1, 1, 1), median_filter(u, k), u)
    out[f"median{k}_equal"] = bool(torch.equal(ref_m, triton_median_filter(u, k, active)))
from extractors.tvl1 import linearized_residual_constant
from extractors.tvl1_ops import centered_gradient, warp_bicubic
from extractors.tvl1_triton_warp import triton_warp_linearize
i1, i0 = torch.rand(2, 2, 19, 37, generator=g) * 255
stack = torch.cat((i1.unsqueeze(1), centered_gradient(i1)), dim=1)
flow = torch.randn(2, 2, 19, 37, generator=g) * 6  # taps off every border
flow[0, 0, 3, 3], flow[0, 1, 4, 4], flow[1, 0, 5, 5], flow[1, :, 6, 6] = 1e9, -1e9, -3.5, 0.0
wp = warp_bicubic(stack, flow)
rho = linearized_residual_constant(i0, wp[:, 0], wp[:, 1:], flow)
g_t, rho_t = triton_warp_linearize(stack.to(dev), flow.to(dev), i0.to(dev))
out["warp_grad_diff"] = (g_t.cpu() - wp[:, 1:]).abs().max().item()
out["warp_rho_diff"] = (rho_t.cpu() - rho).abs().max().item()
g16 = wp[:, 1:].half().float()  # float16 state
g_t, rho_t = triton_warp_linearize(stack.to(dev), flow.to(dev), i0.to(dev), torch.float16)
out["warp16_dtype"] = str(g_t.dtype)
g_t = g_t.cpu().float()
# Within one float16 ulp (on a GPU, fused multiply-adds can move a value across a rounding boundary;
# in the interpreter it is exact), and rho_c formed from the kernel's own rounded gradient.
out["warp16_grad_ulps"] = ((g_t - g16).abs() / (g16.abs() * 2.0**-10).clamp(min=2.0**-24)).max().item()
out["warp16_rho_diff"] = (rho_t.cpu() - linearized_residual_constant(i0, wp[:, 0], g_t, flow)).abs().max().item()
print(json.dumps(out))
"""


def test_triton_backends_match_torch():
    """Both Triton layouts (one sweep per iteration; two grid kernels per iteration), the median and the
    fused warp kernels compute what the torch path does.

    Runs in a fresh interpreter: without a GPU, Triton's interpreter must be switched on
    (TRITON_INTERPRET=1) before triton is first imported, which this test process may have done.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", _TRITON_CHECK], cwd=root, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for state in ("float32", "float16"):
        assert res[f"flow_mean_{state}"] > 0.2, res
        for backend in ("triton", "triton-grid", "triton-flat", "triton-fused", "triton-flat-a16", "triton-fused-a16"):
            r_ = res[f"{backend}_{state}"]
            # float16: a float32 rounding difference can flip a stored value by one float16 ulp
            # (measured: mean 7e-5 px, max 0.013 px at this size)
            assert r_["epe_mean"] < 1e-3 and r_["epe_max"] < (1e-2 if state == "float32" else 5e-2), (state, backend, res)
            assert r_["identical_pair_max"] < 1e-6, (state, backend, res)
        # The two band layouts do the same arithmetic per pixel; only the stopping error's summation
        # order differs, which moves a stop only when the error lies within rounding of the threshold
        # (not the case for these pairs in the interpreter; on a GPU, FMA contraction may differ too).
        assert res[f"flat_vs_rows_{state}"] < (1e-2 if torch.cuda.is_available() else 1e-6), res
        # fused steps and padded rows: the flat layout's arithmetic and summation order, so the same flow
        assert res[f"fused_padded_vs_flat_{state}"] < (1e-2 if torch.cuda.is_available() else 1e-12), res
    assert res["flat_small_bands_max_diff"] < 1e-4, res  # (and the same active flags)
    assert res["padding_leaks"] == 0.0, res
    assert res["grid_random_state_max_diff"] < 1e-4, res
    assert res["median3_equal"] and res["median5_equal"], res  # bit-exact, converged pairs untouched
    # The fused warp + linearisation: bit-exact in the interpreter (the GPU may contract into FMAs).
    assert res["warp_grad_diff"] < 1e-3 and res["warp_rho_diff"] < 1e-2, res
    assert res["warp16_dtype"] == "torch.float16", res
    assert res["warp16_grad_ulps"] <= 1.0 and res["warp16_rho_diff"] < 1e-2, res


def test_triton_median_source_is_in_sync():
    """The unrolled median kernels are what ``python -m extractors.tvl1_triton_median`` generates."""
    pytest.importorskip("triton")
    from extractors.tvl1_triton_median import _current, _generate

    assert _generate() == _current(), "regenerate: python -m extractors.tvl1_triton_median"


def test_triton_kernels_compile_for_h100(tmp_path, monkeypatch):
    """The real Triton compiler (not the interpreter) accepts every kernel for sm_90, without a GPU.

    The interpreter runs the kernels' arithmetic but not their lowering (loop-carried types,
    barriers, register allocation); this catches what only a GPU run would otherwise show.
    Also pins the sweep kernels' register budgets (the "rows" layout at 224 px wide and the "flat"
    layout; registers and spills, float32 and float16 state, with and without a register cap).
    """
    pytest.importorskip("triton")
    import re
    import subprocess

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from extractors import tvl1_triton as T
    from extractors import tvl1_triton_median as M
    from extractors import tvl1_triton_warp as Wp

    ptrs = {n: "*fp32" for n in ("u_ptr", "p_ptr", "g_ptr", "rho_ptr", "inv_ptr")}
    scalars = {"H": "i32", "W": "i32"}
    half = {"p_ptr": "*fp16", "g_ptr": "*fp16"}  # TVL1Config(state_dtype="float16")
    sweep = {**{k: v for k, v in ptrs.items() if k != "inv_ptr"}, "active_ptr": "*i1", **scalars, "steps": "i32",
             "threshold": "fp32", "lt": "fp32", "theta": "fp32", "tt": "fp32"}
    # Sweep kernels as a launch compiles them (see _launch_attrs) at the pyramid's finest width (224,
    # divisible by 16: vectorised loads) and an odd one (179; 91 for the rows layout's 4-row bands):
    # (layout, width, state, maxnreg) -> (registers, spilled bytes) at most, from ptxas (Triton 3.6). The
    # registers set how many 8-warp programs fit on an SM (64K registers: <= 40 -> 6, 48 -> 5, 64 -> 4).
    expect = {
        ("rows", 224, "*fp32", None): (40, 8), ("rows", 179, "*fp32", None): (56, 0), ("rows", 91, "*fp32", None): (56, 0),
        ("rows", 179, "*fp32", 48): (48, 0), ("rows", 224, "*fp16", None): (40, 0), ("rows", 179, "*fp16", 48): (48, 0),
        ("flat", 224, "*fp32", None): (48, 0), ("flat", 179, "*fp32", None): (64, 4),
        ("flat", 224, "*fp16", None): (48, 0), ("flat", 179, "*fp16", None): (64, 0),
        # flat1: one pixel per thread (16 warps), no layout conversions at odd widths
        ("flat1", 224, "*fp32", None): (40, 0), ("flat1", 179, "*fp32", None): (40, 0),
        ("flat1", 179, "*fp16", None): (40, 0),
        # _a16: rows padded to a multiple of 16 (SWEEP_ROW_ALIGN): at every width the kernel compiles as at 224 px
        ("flat_a16", 179, "*fp32", None): (48, 0), ("flat_a16", 91, "*fp32", None): (48, 0),
        ("flat_a16", 179, "*fp16", None): (48, 0),
        # fused: a band step's loads all issued at once (more registers live)
        ("fused", 224, "*fp32", None): (62, 0), ("fused_a16", 179, "*fp32", None): (62, 0),
        ("fused_a16", 179, "*fp32", 48): (48, 0), ("fused1_a16", 179, "*fp32", 40): (40, 0),
    }
    bar_syncs, loads = {}, {}
    kernels = []
    for layout, width, st, cap in expect:
        if layout == "rows":
            rows, block_w, warps = T.sweep_layout(width)
            fn, extra, constexprs = T._sweep_kernel, {"ROWS": "constexpr", "BLOCK_W": "constexpr"}, {"ROWS": rows, "BLOCK_W": block_w}
        else:
            monkeypatch.setattr(T, "SWEEP_PIXELS_PER_THREAD", 1 if layout.split("_")[0].endswith("1") else 2)
            band, warps = T.flat_sweep_layout()
            stride = -(-width // 16) * 16 if layout.endswith("_a16") else width
            fn = T._sweep_fused_kernel if layout.startswith("fused") else T._sweep_flat_kernel
            extra = {"S": "i32", "BAND": "constexpr", "PADDED": "constexpr"}
            constexprs = {"BAND": band, "PADDED": stride != width}
        kernels.append((fn, {**sweep, **({} if st == "*fp32" else half), **extra}, constexprs,
                        {"num_warps": warps, "num_stages": 1, **({"maxnreg": cap} if cap else {})},
                        {"H": width, "W": width, "steps": 30, **({} if layout == "rows" else {"S": stride})},
                        (layout, width, st, cap)))
    kernels += [
        (T._primal_kernel, {"u_ptr": "*fp32", "p_ptr": st, "g_ptr": st, "rho_ptr": "*fp32", "inv_ptr": "*fp32",
                            "active_ptr": "*i1", "err_ptr": "*fp32", **scalars, "lt": "fp32", "theta": "fp32",
                            "BLOCK_SIZE": "constexpr"}, {"BLOCK_SIZE": T.BLOCK}, {}, {}, None)
        for st in ("*fp32", "*fp16")
    ] + [
        (T._dual_kernel, {"u_ptr": "*fp32", "p_ptr": st, "active_ptr": "*i1", **scalars, "tt": "fp32",
                          "BLOCK_SIZE": "constexpr"}, {"BLOCK_SIZE": T.BLOCK}, {}, {}, None)
        for st in ("*fp32", "*fp16")
    ] + [
        (kernel, {"u_ptr": "*fp32", "out_ptr": "*fp32", "active_ptr": "*i1", "C": "i32", **scalars,
                  "BLOCK_SIZE": "constexpr"}, {"BLOCK_SIZE": M.BLOCK}, {}, {}, None)
        for kernel in (M._median3_kernel, M._median5_kernel)
    ] + [
        (Wp._warp_kernel, {"img_ptr": "*fp32", "u_ptr": "*fp32", "i0_ptr": "*fp32", "g_ptr": g, "rho_ptr": "*fp32",
                           **scalars, "BLOCK_SIZE": "constexpr"}, {"BLOCK_SIZE": Wp.BLOCK}, {}, {}, None)
        for g in ("*fp32", "*fp16")
    ]
    for fn, signature, constexprs, options, ints, case in kernels:
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs,
                                            attrs=_launch_attrs(signature, ints)),
                                  target=GPUTarget("cuda", 90, 32), options=options)
        assert "cubin" in compiled.asm and len(compiled.asm["cubin"]) > 0, fn.__name__
        if case is not None:
            regs_expected, spill_max = expect[case]
            ptx = compiled.asm["ptx"]
            # A sum reduction alone emits 2-3 bar.sync (Triton 3.6, measured by compiling the kernels
            # without their tl.debug_barrier calls); the band/iteration barriers bring each to >= 4.
            assert ptx.count("bar.sync") >= 4, ("the sweep's barriers were lost", case)
            bar_syncs[case] = ptx.count("bar.sync")
            loads[case] = len(re.findall(r"ld\.global", ptx))
            # Register allocation happens in ptxas (bundled with triton): ask it for registers and spills.
            from triton.backends.nvidia.compiler import get_ptxas

            src = tmp_path / "sweep.ptx"
            src.write_text(ptx)
            r = subprocess.run([get_ptxas(90).path, "-v", "--gpu-name", "sm_90a", str(src), "-o", str(tmp_path / "o")],
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr[-2000:]
            spills = [int(n) for n in re.findall(r"(\d+) bytes spill stores", r.stderr)]
            regs = [int(n) for n in re.findall(r"Used (\d+) registers", r.stderr)]
            assert spills and max(spills) <= spill_max, (case, r.stderr)
            assert regs and max(regs) <= regs_expected, (case, r.stderr)
    # At 2 pixels per thread and a width not divisible by 16 the flat sweep stores u and p through layout
    # conversions (13 bar.sync in its PTX vs 4); at 1 pixel per thread there are none.
    assert bar_syncs[("flat", 179, "*fp32", None)] > bar_syncs[("flat1", 179, "*fp32", None)] == 4, bar_syncs
    # ... nor with rows padded to a multiple of 16, at 2 pixels per thread too
    assert bar_syncs[("flat_a16", 179, "*fp32", None)] == bar_syncs[("fused_a16", 179, "*fp32", None)] == 4, bar_syncs
    # Padded rows vectorise the loads at odd widths as at 224 px (the padding columns are computed, not
    # masked, so the masks stay constant over aligned groups of lanes): as few load instructions as there.
    assert loads[("flat_a16", 179, "*fp32", None)] == loads[("flat", 224, "*fp32", None)] \
        < loads[("flat", 179, "*fp32", None)], loads


def _launch_attrs(signature: dict, ints: dict) -> dict:
    """What a launch tells the compiler besides the types (Triton 3.6 ``specialize_impl``): pointers are
    16-byte aligned (torch allocations are) and integer arguments divisible by 16 are marked so. This
    changes vectorisation and so the registers: compiled without it, the rows sweep at 224 px took 56
    registers instead of the 40 a launch gets (the figure quoted before 2026-11-23's sixth session)."""
    names = list(signature)
    return {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
            if signature[n].startswith("*") or (n in ints and ints[n] % 16 == 0)}


def test_sweep_layout():
    from extractors.tvl1_triton import sweep_layout

    assert sweep_layout(224) == (2, 256, 8)  # 512-pixel bands of whole rows, 2 pixels per thread
    assert sweep_layout(23) == (16, 32, 8)
    assert sweep_layout(1920) == (1, 2048, 32)  # one row per band
    assert sweep_layout(224, band_pixels=2048) == (8, 256, 32)
    for bad in (48, 16):
        with pytest.raises(ValueError, match="power of 2"):
            sweep_layout(224, band_pixels=bad)
    with pytest.raises(ValueError, match="wider than"):
        sweep_layout(10_000)


def test_flat_sweep_layout_and_knob(monkeypatch):
    from extractors import tvl1_triton
    from extractors.tvl1_triton import flat_sweep_layout, triton_sweep_block

    assert flat_sweep_layout() == (512, 8)  # any width: 512 consecutive pixels per band, 2 per thread
    assert flat_sweep_layout(2048) == (2048, 32)
    with pytest.raises(ValueError, match="power of 2"):
        flat_sweep_layout(48)
    monkeypatch.setattr(tvl1_triton, "SWEEP_PIXELS_PER_THREAD", 1)
    assert flat_sweep_layout() == (512, 16) and tvl1_triton.sweep_layout(224) == (2, 256, 16)
    monkeypatch.setattr(tvl1_triton, "SWEEP_PIXELS_PER_THREAD", 4)
    with pytest.raises(ValueError, match="SWEEP_PIXELS_PER_THREAD"):
        flat_sweep_layout()
    monkeypatch.setattr(tvl1_triton, "SWEEP_PIXELS_PER_THREAD", 2)
    monkeypatch.setattr(tvl1_triton, "SWEEP_LAYOUT", "diagonal")
    u = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="SWEEP_LAYOUT"):
        triton_sweep_block(u, torch.zeros(1, 2, 2, 4, 4), u, u[:, :1], None, torch.ones(1, dtype=torch.bool),
                           1, 1e-4, 0.045, 0.3, 0.83)


def test_sweep_row_stride_and_padded_launch_checks(monkeypatch):
    from extractors import tvl1_triton
    from extractors.tvl1_triton import sweep_row_stride, triton_sweep_block

    assert tvl1_triton.SWEEP_ROW_ALIGN == 1 and sweep_row_stride(179) == 179  # off by default (not timed yet)
    monkeypatch.setattr(tvl1_triton, "SWEEP_ROW_ALIGN", 16)
    assert [sweep_row_stride(w) for w in (224, 179, 143, 114, 91, 3)] == [224, 192, 144, 128, 96, 16]
    monkeypatch.setattr(tvl1_triton, "SWEEP_LAYOUT", "rows")  # pads inside its own bands
    assert sweep_row_stride(179) == 179
    monkeypatch.setattr(tvl1_triton, "SWEEP_ROW_ALIGN", 0)
    with pytest.raises(ValueError, match="SWEEP_ROW_ALIGN"):
        sweep_row_stride(179)
    u, p, a = torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 2, 4, 16), torch.ones(1, dtype=torch.bool)
    with pytest.raises(ValueError, match="flat or fused"):  # rows layout, padded rows
        triton_sweep_block(u, p, u, u[:, :1], None, a, 1, 1e-4, 0.045, 0.3, 0.83, width=13)
    monkeypatch.setattr(tvl1_triton, "SWEEP_LAYOUT", "fused")
    with pytest.raises(ValueError, match="width 17 for rows of 16"):
        triton_sweep_block(u, p, u, u[:, :1], None, a, 1, 1e-4, 0.045, 0.3, 0.83, width=17)


def test_sweep_scalars_reach_the_kernel_as_floats(monkeypatch):
    """Triton types a Python int as i32: an int threshold (TVL1Config(epsilon=0)) made the kernel's
    loop-carried error int32 and failed to compile on the GPU (the interpreter does not care)."""
    from extractors import tvl1_triton

    seen = []

    class Capture:
        def __getitem__(self, grid):
            return lambda *args, **kw: seen.append(args)

    monkeypatch.setattr(tvl1_triton, "_sweep_kernel", Capture())
    monkeypatch.setattr(tvl1_triton, "_sweep_flat_kernel", Capture())
    u = torch.zeros(1, 2, 4, 4)
    for layout in ("rows", "flat"):  # (the fused kernel takes the flat one's arguments)
        monkeypatch.setattr(tvl1_triton, "SWEEP_LAYOUT", layout)
        tvl1_triton.triton_sweep_block(u, torch.zeros(1, 2, 2, 4, 4), u, u[:, :1], None,
                                       torch.ones(1, dtype=torch.bool), 1, 0, 1, 1, 1)
    # (threshold, lambda*theta, theta, tau/theta; the flat kernel's row stride follows, an int)
    assert len(seen) == 2 and all(isinstance(a, float) for args in seen for a in args[8:12]), seen


def test_backend_is_validated(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        TVL1Config(backend="cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    f = torch.zeros(1, 16, 16)
    with pytest.raises(ValueError, match="runs on a CUDA device, not cpu"):
        tvl1_flow(f, f, TVL1Config(backend="triton"))


def test_auto_backend_is_triton_on_cuda_and_torch_elsewhere():
    from extractors.tvl1 import resolve_backend, uses_torch_compile

    assert TVL1Config().backend == "auto"
    assert resolve_backend(TVL1Config(), "cpu") == "torch"
    assert resolve_backend(TVL1Config(backend="triton-grid"), "cpu") == "triton-grid"  # explicit choices stand
    pytest.importorskip("triton")
    assert resolve_backend(TVL1Config(), "cuda") == "triton"
    assert not uses_torch_compile(TVL1Config(), "cuda")  # so the pipeline runs TV-L1 concurrently there
    assert uses_torch_compile(TVL1Config(backend="torch"), "cuda")


def test_flow_to_i3d_input_takes_numpy_and_refuses_integers():
    import numpy as np

    from extractors.tvl1 import flow_to_i3d_input

    flow = np.linspace(-30, 30, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    out = flow_to_i3d_input(flow)
    assert torch.equal(out, flow_to_i3d_input(torch.from_numpy(flow)))
    assert out.min().item() == -1.0 and out.max().item() == 1.0
    with pytest.raises(TypeError, match="float flow"):
        flow_to_i3d_input(np.zeros((2, 3, 4), np.int16))
