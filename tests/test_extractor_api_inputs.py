"""The extractors' Python APIs called as outside code would, with inputs that used to fail deep inside (or
worse, not at all): each now gets a ValueError (shapes, values) or TypeError (dtypes) naming the problem."""
from __future__ import annotations

import numpy as np
import pytest
import torch


def test_tvl1_refuses_non_finite_complex_and_bool_frames():
    from extractors.tvl1 import tvl1_flow

    a = torch.rand(2, 16, 16) * 255
    b = a.clone()
    a[1, 5, 5] = float("nan")  # (reached the warp as an out-of-bounds index, failing both pairs)
    with pytest.raises(ValueError, match=r"frames0 holds NaN or inf values \(pairs \[1\]\)"):
        tvl1_flow(a, b)
    b[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"frames1 holds NaN or inf values \(pairs \[0\]\)"):
        tvl1_flow(a.nan_to_num(0.0), b)
    for t in (a.to(torch.complex64), a > 100):
        with pytest.raises(TypeError, match="must hold real grey levels"):
            tvl1_flow(t, t)
    with pytest.raises(TypeError, match="must be a torch.Tensor or numpy array, got list"):
        tvl1_flow([[[0.0]]], [[[0.0]]])


def test_tvl1_takes_numpy_frames_like_the_other_entry_points():
    """(numpy frames were refused as 'must be a torch.Tensor', unlike every other extractor API)"""
    from extractors.tvl1 import TVL1Config, tvl1_flow

    rng = np.random.default_rng(0)
    g0 = rng.uniform(0, 255, (2, 24, 24)).astype(np.float32)
    g1 = np.roll(g0, 1, axis=2)[..., ::-1]  # (negative strides, as a flipped array has)
    cfg = TVL1Config(nscales=1, warps=1, inner_iterations=3, outer_iterations=1)
    want = tvl1_flow(torch.from_numpy(g0), torch.from_numpy(g1.copy()), cfg)
    torch.testing.assert_close(tvl1_flow(g0, g1, cfg), want, rtol=0, atol=0)
    torch.testing.assert_close(tvl1_flow(g0.astype(np.uint8), torch.from_numpy(g1.copy()).to(torch.uint8), cfg),
                               tvl1_flow(torch.from_numpy(g0.astype(np.uint8)),
                                         torch.from_numpy(g1.copy()).to(torch.uint8), cfg), rtol=0, atol=0)


def test_vggish_refuses_a_rate_given_in_khz():
    from extractors.vggish import resampled_length

    assert resampled_length(32000, 32000) == 16000
    assert resampled_length(44101, 44100) == 16000  # to_mono_16k's (resampy's) length: was rounded up to 16001
    with pytest.raises(ValueError, match=r"give it in Hz \(16000, not 16\)"):
        resampled_length(32000, 16)  # (became 2,000 s of audio per 2 s, and gigabytes)


def test_clip_api_names_odd_inputs(tmp_path):
    from extractors.clip_features import ClipWeightsError, pool_snippet_embeddings, read_clip_state_dict

    with pytest.raises(ClipWeightsError, match="not a regular file"):
        read_clip_state_dict(tmp_path)  # (a directory was reported as "does not exist")
    with pytest.raises(ValueError, match=r"expected \(T, k, D\) frame embeddings, got \(3, 512\)"):
        pool_snippet_embeddings(torch.rand(3, 512))  # (returned shape (3,))
    assert pool_snippet_embeddings(torch.rand(3, 2, 8)).shape == (3, 8)
    e = np.random.default_rng(0).standard_normal((3, 2, 8)).astype(np.float32)  # (numpy: was an AttributeError)
    assert torch.equal(pool_snippet_embeddings(e), pool_snippet_embeddings(torch.from_numpy(e)))


def test_vggish_frontend_takes_numpy_waveforms():
    from extractors.vggish_frontend import LogMelFrontend

    fe = LogMelFrontend()
    wav = np.random.default_rng(1).uniform(-1, 1, 16000).astype(np.float32)
    assert torch.equal(fe.patches(wav), fe.patches(torch.from_numpy(wav)))
    assert torch.equal(fe.log_mel(wav), fe.log_mel(torch.from_numpy(wav)))


def test_open_frames_refuses_a_frame_rate_that_is_not_positive():
    from extractors.decode import open_frames

    for fps in (0, -25, float("nan"), float("inf"), "25", True):
        with pytest.raises(ValueError, match="fps must be a positive number"):
            open_frames("/nowhere.mp4", None, fps)
