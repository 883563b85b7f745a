"""CUDA paths: the same results as on the CPU (skipped where there is no GPU, as on CI).

Run on a GPU machine with ``python -m pytest tests/test_gpu.py``; bench/gpu_session.sh does.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from extractors.tvl1 import TVL1Config, tvl1_flow
from tests.media import have_ffmpeg, make_video, small_extract_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _pairs(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random textures (detail at every scale, no flat areas) shifted by a sub-pixel translation."""
    g = torch.Generator().manual_seed(seed)
    tex = sum(torch.nn.functional.interpolate(torch.rand(n, 1, size // k, size // k, generator=g) * 255 / 3,
                                              size=(size, size), mode="bilinear", align_corners=False)
              for k in (1, 2, 4))
    shift = torch.rand(n, 2, generator=g) * 4 - 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = shift * 2 / size
    grid = torch.nn.functional.affine_grid(theta, (n, 1, size, size), align_corners=False)
    moved = torch.nn.functional.grid_sample(tex, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return moved[:, 0].clamp(0, 255), tex[:, 0].clamp(0, 255)


@pytest.mark.parametrize("compile_,backend,state", [
    (False, "torch", "float32"), (True, "torch", "float32"), (None, "triton", "float32"), (None, "triton-grid", "float32"),
    (False, "torch", "float16"), (True, "torch", "float16"), (None, "triton", "float16"), (None, "triton-grid", "float16"),
    (None, "triton-rows", "float32"), (None, "triton-rows", "float16"),  # the sweep's "rows" band layout
    (None, "triton-fused", "float32"), (None, "triton-flat-a16", "float32"), (None, "triton-fused-a16", "float16"),
])
def test_tvl1_on_cuda_matches_cpu(compile_, backend, state, monkeypatch):
    from extractors import tvl1_triton

    if backend.startswith("triton-") and backend != "triton-grid":  # a sweep layout, maybe with padded rows
        monkeypatch.setattr(tvl1_triton, "SWEEP_LAYOUT", backend.split("-")[1])
        monkeypatch.setattr(tvl1_triton, "SWEEP_ROW_ALIGN", 16 if backend.endswith("-a16") else 1)
        backend = "triton"
    f0, f1 = _pairs(6, 64)
    cfg = TVL1Config(compile=compile_, backend=backend, state_dtype=state)
    cpu = tvl1_flow(f0, f1, TVL1Config(compile=False, state_dtype=state))
    gpu = tvl1_flow(f0.cuda(), f1.cuda(), cfg).cpu()
    epe = (gpu - cpu).pow(2).sum(1).sqrt()
    # Float rounding differs between devices; where it flips a pair's stopping test, the pair runs
    # one more/fewer iteration, so agreement is close on average, not bit-exact (bench_tvl1.py
    # reports the same on real-texture pairs at 224 px: mean 0.006 px).
    assert epe.mean() < 0.03 and (epe > 0.5).float().mean() < 0.01, (epe.mean(), epe.max())
    assert cpu.abs().mean() > 0.3  # the pairs really move


@pytest.mark.parametrize("layout,state,maxnreg", [
    ("rows", "float32", None), ("rows", "float32", 48), ("rows", "float16", None), ("rows", "float16", 48),
    ("flat", "float32", None), ("flat", "float16", None), ("flat1", "float32", None),
    ("flat_a16", "float32", None), ("flat_a16", "float16", None), ("fused", "float32", None),
    ("fused_a16", "float16", None), ("fused_a16", "float32", 48), ("fused1_a16", "float32", 40)])
@pytest.mark.parametrize("hw", [(5, 300), (9, 224), (5, 23), (40, 224), (3, 600)])
def test_triton_sweep_block_equals_masked_block_on_cuda(hw, layout, state, maxnreg, monkeypatch):
    """One sweep launch vs the torch iterations on the same CUDA inputs, at the band layouts that matter:
    rows: ROWS = 1 (300 and 600 px wide), 2 (224, production), 16 > H (23); flat: bands wider and
    narrower than a row (600 px > 512). float32 and float16 state, with and without the register cap
    the benchmark tries. Races between bands would show here as differences and as run-to-run
    nondeterminism (the sweep itself has no atomics)."""
    from extractors import tvl1_triton
    from extractors.tvl1 import _FLT_EPSILON, STATE_DTYPES, masked_block
    from extractors.tvl1_triton import triton_sweep_block

    name, _, align = layout.partition("_a")  # "_a16": rows padded to a multiple of 16
    monkeypatch.setattr(tvl1_triton, "SWEEP_MAXNREG", maxnreg)
    monkeypatch.setattr(tvl1_triton, "SWEEP_LAYOUT", name.rstrip("1"))
    monkeypatch.setattr(tvl1_triton, "SWEEP_PIXELS_PER_THREAD", 1 if name.endswith("1") else 2)  # 1: 16 warps
    monkeypatch.setattr(tvl1_triton, "SWEEP_ROW_ALIGN", int(align or 1))
    h, w = hw
    g = torch.Generator().manual_seed(h * w)
    b = 3
    sd = STATE_DTYPES[state]
    u = torch.randn(b, 2, h, w, generator=g).cuda()
    p = (torch.randn(b, 2, 2, h, w, generator=g) * 0.1).cuda().to(sd)
    grad = (torch.randn(b, 2, h, w, generator=g) * 20).cuda().to(sd)
    rho = (torch.randn(b, 1, h, w, generator=g) * 5).cuda()
    inv = 1.0 / (grad.float() ** 2).sum(1, keepdim=True).clamp(min=_FLT_EPSILON)
    tol = 1e-4 if state == "float32" else 1e-2  # float16: a rounding flip is one float16 ulp
    active = torch.tensor([True, False, True], device="cuda")
    args = (grad, rho, inv)
    consts = (0.01**2, 0.15 * 0.3, 0.3, 0.25 / 0.3)
    ru, rp, ra = masked_block(u.clone(), p.clone(), *args, active.clone(), 30, *consts)
    runs = []
    stride = tvl1_triton.sweep_row_stride(w)

    def pad(t):  # NaN: the padding columns must never reach a pixel (the pipeline pads with zeros)
        return torch.nn.functional.pad(t, (0, stride - w), value=float("nan")).contiguous()

    for _ in range(3):
        su, sp, sa = triton_sweep_block(pad(u), pad(p), pad(grad), pad(rho), inv, active.clone(), 30, *consts,
                                        width=w)
        su, sp = su[..., :w], sp[..., :w]
        runs.append((su.clone(), sp.clone()))
        assert torch.equal(sa, ra) and sp.dtype == sd
        du, dp = (su - ru).abs().max(), (sp.float() - rp.float()).abs().max()
        assert du < tol and dp < tol, (du, dp)
        assert torch.equal(su[1], u[1]) and torch.equal(sp[1], p[1])  # the inactive pair is untouched
    for su, sp in runs[1:]:
        assert torch.equal(su, runs[0][0]) and torch.equal(sp, runs[0][1])


def test_tvl1_pair_result_does_not_depend_on_batch_on_cuda():
    f0, f1 = _pairs(8, 48, seed=1)
    whole = tvl1_flow(f0.cuda(), f1.cuda())
    for i in (0, 5):
        alone = tvl1_flow(f0[i : i + 1].cuda(), f1[i : i + 1].cuda())
        # The compiled kernels' reductions are split by batch size, so the rounding of a pair's
        # stopping error (and, rarely, where it stops) depends on its batch: close, not bit-exact.
        epe = (whole[i] - alone[0]).pow(2).sum(0).sqrt()
        assert epe.mean() < 0.1 and (epe > 0.5).float().mean() < 0.03, (i, epe.mean(), epe.max())


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # float64 and no additive epsilon: random-init flow features are ~1e-7, so a fixed 1e-12 in the
    # denominator (as first written) pulled identical rows down to cosine 0.91.
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)


@pytest.fixture(scope="module")
def cpu_reference(tmp_path_factory):
    if not have_ffmpeg():
        pytest.skip("ffmpeg/ffprobe not on PATH")
    from extractors.pipeline import Extractors, extract_video
    from storage import FeatureStore

    d = tmp_path_factory.mktemp("gpu")
    (d / "weights").mkdir()
    video = make_video(d / "v.mp4", seconds=2.6, size=(96, 72), audio=True, source="testsrc2")
    cfg = small_extract_config(d / "weights", crop_size=64, resize_short=72)
    store = FeatureStore.create(d / "cpu")
    extract_video(video, "v", store, cfg, Extractors(cfg))
    return d, video, cfg, store.load("v")


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_extract_video_on_cuda_matches_cpu(cpu_reference, precision):
    from extractors.pipeline import Extractors, extract_video
    from storage import FeatureStore

    d, video, cfg, ref = cpu_reference
    gcfg = replace(cfg, device="cuda", precision=precision)
    store = FeatureStore.create(d / f"cuda_{precision}")
    report = extract_video(video, "v", store, gcfg, Extractors(gcfg))
    got = store.load("v")
    floor = 0.9999 if precision == "fp32" else 0.999  # auto keeps bf16 only where cosine >= 0.999
    for name in ("i3d_rgb", "clip_vitb16", "vggish"):
        cos = _cos(got[name], ref[name])
        assert cos.min() >= floor - 5e-4, (name, report.precision[name], cos.min())
    # TV-L1 agrees closely but not bit-exactly across devices (see above).
    assert _cos(got["i3d_flow"], ref["i3d_flow"]).min() > 0.99
    assert np.array_equal(got["audio_mask"], ref["audio_mask"])
    prov = store.provenance("v")
    assert prov["i3d_rgb"].params["device"] == "cuda"
    assert prov["i3d_rgb"].params["precision"] == report.precision["i3d_rgb"]
    if precision == "fp32":
        assert set(report.precision.values()) == {"fp32"}


@pytest.mark.parametrize("tvl1_backend", ["torch", "triton"])
def test_extract_many_with_several_decoders_on_cuda(cpu_reference, tvl1_backend):
    """With the Triton backend TV-L1 runs outside the lock, several windows at once on per-worker streams."""
    from extractors.pipeline import Extractors, extract_many
    from storage import FeatureStore

    d, video, cfg, ref = cpu_reference
    gcfg = replace(cfg, device="cuda", precision="fp32", video_workers=3, tvl1=replace(cfg.tvl1, backend=tvl1_backend))
    models = Extractors(gcfg)
    assert models.concurrent_flow == (tvl1_backend == "triton")
    store = FeatureStore.create(d / f"cuda_many_{tvl1_backend}")
    res = extract_many([(f"v{i}", video) for i in range(4)], store, gcfg, models)
    assert all(r.ok for r in res)
    first = store.load("v0")
    for i in range(4):  # same video four times: the same results up to cuDNN/TF32 rounding
        for name in ("i3d_rgb", "i3d_flow", "clip_vitb16", "vggish"):
            assert _cos(store.load(f"v{i}")[name], first[name]).min() > 0.999, (i, name)
        assert _cos(store.load(f"v{i}")["i3d_rgb"], ref["i3d_rgb"]).min() > 0.9999
        assert _cos(store.load(f"v{i}")["i3d_flow"], ref["i3d_flow"]).min() > 0.99, (i, tvl1_backend)  # as above


def _train_and_score(tmp_path, device: str) -> dict:
    """Both training modes on ``device``: weakly supervised, and UTAL (cluster purity, mAP) over four seeds.

    One seed's mAP on this tiny problem varies by several points, and CUDA kernels round differently, so
    a run follows another path than on the CPU: on the CPU, UTAL seed 0 gives 0.092 and seeds 1-3
    0.14-0.15, weak 0.135, against random segments' 0.053; on the H200, UTAL seed 0 gave 0.071."""
    from models import train as train_mod
    from models.predict import predict
    from models.scoring import evaluate_predictions, random_segment_predictions, whole_video_predictions
    from tests._model_fixtures import tiny_config, tiny_problem

    ds, _, store = tiny_problem()
    test = store.videos(ds.videos(ds.test_subset))
    rand = evaluate_predictions(random_segment_predictions(test, ds.classes), ds).average_mAP
    whole = evaluate_predictions(whole_video_predictions(test, ds.classes), ds).average_mAP
    out: dict = {"rand": rand, "whole": whole, "utal": [], "purity": []}
    res = train_mod.train(tiny_config(mode="weak", device=device), store, ds, tmp_path / "weak")
    assert all(np.isfinite(v) for h in res.history for v in h.values() if isinstance(v, float))
    out["weak"] = evaluate_predictions(predict(res.checkpoint, store, ds, device=device), ds).average_mAP
    for seed in range(4):
        res = train_mod.train(tiny_config(mode="utal", device=device).replace(train={"seed": seed}), store, ds,
                              tmp_path / f"utal{seed}")
        assert all(np.isfinite(v) for h in res.history for v in h.values() if isinstance(v, float))
        out["purity"].append(res.cluster_history[-1]["purity"])
        out["utal"].append(evaluate_predictions(predict(res.checkpoint, store, ds, device=device), ds).average_mAP)
    return out


def test_training_and_prediction_on_cuda(tmp_path):
    r = _train_and_score(tmp_path, "cuda")
    # The CPU tests' margins (tests/test_model_train.py), weak's 2.5x random lowered to 2x (2.55x on the CPU).
    assert r["weak"] > 10 * r["whole"] and r["weak"] > 2 * r["rand"], r
    assert min(r["purity"]) > 0.75, r  # chance is ~1/4 for 4 balanced classes
    assert sum(r["utal"]) / len(r["utal"]) > 2 * r["rand"], r
