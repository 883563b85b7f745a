"""VGGish: front end vs a numpy reference of the released mel_features.py, checkpoint
loading in the torchvggish format, patch / centred embedding geometry, postprocessor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors import vggish_frontend as fe
from extractors.vggish import (
    VGGishCheckpointError,
    build_vggish,
    centered_coverage,
    load_vggish,
    patch_center_seconds,
    to_mono_16k,
)

torch.set_num_threads(2)


# ---------------------------------------------------------------- numpy reference of
# tensorflow/models research/audioset/vggish/{mel_features,vggish_input}.py (float64)
def np_frame(data: np.ndarray, window_length: int, hop_length: int) -> np.ndarray:
    num_frames = 1 + int(np.floor((data.shape[0] - window_length) / hop_length))
    shape = (num_frames, window_length) + data.shape[1:]
    strides = (data.strides[0] * hop_length,) + data.strides
    return np.lib.stride_tricks.as_strided(data, shape=shape, strides=strides)


def np_periodic_hann(window_length: int) -> np.ndarray:
    return 0.5 - (0.5 * np.cos(2 * np.pi / window_length * np.arange(window_length)))


def np_stft_magnitude(signal, fft_length, hop_length, window_length):
    frames = np_frame(signal, window_length, hop_length)
    return np.abs(np.fft.rfft(frames * np_periodic_hann(window_length), int(fft_length)))


def np_hertz_to_mel(hz):
    return 1127.0 * np.log(1.0 + (hz / 700.0))


def np_spectrogram_to_mel_matrix(num_mel_bins, num_spectrogram_bins, audio_sample_rate, lower_edge_hertz, upper_edge_hertz):
    nyquist_hertz = audio_sample_rate / 2.0
    spectrogram_bins_mel = np_hertz_to_mel(np.linspace(0.0, nyquist_hertz, num_spectrogram_bins))
    band_edges_mel = np.linspace(np_hertz_to_mel(lower_edge_hertz), np_hertz_to_mel(upper_edge_hertz), num_mel_bins + 2)
    m = np.empty((num_spectrogram_bins, num_mel_bins))
    for i in range(num_mel_bins):
        lower, center, upper = band_edges_mel[i : i + 3]
        lower_slope = (spectrogram_bins_mel - lower) / (center - lower)
        upper_slope = (upper - spectrogram_bins_mel) / (upper - center)
        m[:, i] = np.maximum(0.0, np.minimum(lower_slope, upper_slope))
    m[0, :] = 0.0
    return m


def np_log_mel_spectrogram(data, audio_sample_rate=16000, log_offset=0.01, window_length_secs=0.025, hop_length_secs=0.010):
    window_length_samples = int(round(audio_sample_rate * window_length_secs))
    hop_length_samples = int(round(audio_sample_rate * hop_length_secs))
    fft_length = 2 ** int(np.ceil(np.log(window_length_samples) / np.log(2.0)))
    spectrogram = np_stft_magnitude(data, fft_length, hop_length_samples, window_length_samples)
    mel = spectrogram @ np_spectrogram_to_mel_matrix(64, spectrogram.shape[1], audio_sample_rate, 125.0, 7500.0)
    return np.log(mel + log_offset)


def np_waveform_to_examples(data: np.ndarray) -> np.ndarray:
    log_mel = np_log_mel_spectrogram(data)
    return np_frame(log_mel, 96, 96)


def _signal(seconds: float, seed: int = 0, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    chirp = 0.5 * np.sin(2 * np.pi * (200 + 900 * t) * t)
    return (chirp + 0.05 * rng.standard_normal(t.shape)).astype(np.float64)


# ---------------------------------------------------------------- front end
def test_mel_matrix_matches_mel_features():
    ref = np_spectrogram_to_mel_matrix(64, 257, 16000, 125.0, 7500.0)
    ours = fe.mel_matrix().numpy()
    assert ours.shape == (257, 64)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    assert np.all(ours[0] == 0.0)  # HTK: DC bin excluded


def test_torchaudio_fbanks_differ_from_mel_features():
    """Why the matrix is built by hand: torchaudio's HTK triangles are linear in Hz and keep DC."""
    import torchaudio.functional as AF

    ta = AF.melscale_fbanks(257, 125.0, 7500.0, 64, 16000, norm=None, mel_scale="htk").numpy()
    assert np.abs(ta - fe.mel_matrix().numpy()).max() > 1e-3


def test_torchaudio_spectrogram_reads_offset_frames():
    """Why framing is done by hand: torchaudio centres the 400-sample window in the 512 FFT."""
    import torchaudio

    x = _signal(0.5)
    ref = np_stft_magnitude(x, 512, 160, 400)
    spec = torchaudio.transforms.Spectrogram(n_fft=512, win_length=400, hop_length=160, power=1, center=False)
    plain = spec(torch.from_numpy(x).float()).T.numpy()
    assert plain.shape[0] < ref.shape[0]  # fewer frames
    assert np.abs(plain - ref[: plain.shape[0]]).max() > 1e-2  # different samples
    shifted = spec(torch.nn.functional.pad(torch.from_numpy(x).float(), (56, 56))).T.numpy()
    np.testing.assert_allclose(shifted, ref, atol=1e-3)  # equal only with a 56-sample shift


@pytest.mark.parametrize("kind", ["chirp", "silence", "loud_noise"])
def test_log_mel_matches_reference(kind):
    x = {"chirp": _signal(1.3), "silence": np.zeros(8000), "loud_noise": np.random.default_rng(1).uniform(-1, 1, 12345)}[kind]
    ref = np_log_mel_spectrogram(x)
    ours = fe.LogMelFrontend().log_mel(torch.from_numpy(x)).numpy()
    assert ours.shape == ref.shape == (1 + (len(x) - 400) // 160, 64)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_patches_match_waveform_to_examples_including_chunking():
    x = _signal(5.1, seed=3)
    ref = np_waveform_to_examples(x)
    front = fe.LogMelFrontend()
    one_shot = front.patches(torch.from_numpy(x)).numpy()
    chunked = front.patches(torch.from_numpy(x), max_frames_per_chunk=96 * 2).numpy()
    assert ref.shape == one_shot.shape == (5, 96, 64)
    np.testing.assert_allclose(one_shot, ref, atol=1e-4)
    np.testing.assert_allclose(chunked, one_shot, atol=1e-5)


def test_frame_and_patch_counts():
    front = fe.LogMelFrontend()
    assert front.num_frames(399) == 0 and front.num_frames(400) == 1 and front.num_frames(560) == 2
    assert front.num_patches(fe.PATCH_SAMPLES - 1) == 0
    assert front.num_patches(fe.PATCH_SAMPLES) == 1
    assert front.num_patches(fe.PATCH_SAMPLES + fe.PATCH_HOP_SAMPLES) == 2
    assert front.patches(torch.zeros(100)).shape == (0, 96, 64)


# ---------------------------------------------------------------- checkpoints
# Published torchvggish layout, written out independently of extractors.vggish.
TORCHVGGISH_SHAPES = {
    "features.0.weight": (64, 1, 3, 3), "features.0.bias": (64,),
    "features.3.weight": (128, 64, 3, 3), "features.3.bias": (128,),
    "features.6.weight": (256, 128, 3, 3), "features.6.bias": (256,),
    "features.8.weight": (256, 256, 3, 3), "features.8.bias": (256,),
    "features.11.weight": (512, 256, 3, 3), "features.11.bias": (512,),
    "features.13.weight": (512, 512, 3, 3), "features.13.bias": (512,),
    "embeddings.0.weight": (4096, 12288), "embeddings.0.bias": (4096,),
    "embeddings.2.weight": (4096, 4096), "embeddings.2.bias": (4096,),
    "embeddings.4.weight": (128, 4096), "embeddings.4.bias": (128,),
}  # fmt: skip


def _published_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in TORCHVGGISH_SHAPES.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        sd[k] = torch.randn(shape, generator=g) * (1.0 / np.sqrt(fan_in) if len(shape) > 1 else 0.01)
    return sd


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("vggish")
    sd = _published_state_dict()
    torch.save(sd, d / "vggish-10086976.pth")
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((128, 128)))
    pca = {"pca_eigen_vectors": torch.from_numpy(q * 3.0).float(), "pca_means": torch.from_numpy(rng.normal(0, 0.1, 128)).float()}
    torch.save(pca, d / "vggish_pca_params-970ea276.pth")
    torch.save({k: v.numpy().astype(np.float64) for k, v in pca.items()}, d / "pca_numpy.pth")
    return {"dir": d, "sd": sd, "pca": pca}


@pytest.fixture(scope="module")
def model(ckpt):
    return load_vggish(ckpt["dir"] / "vggish-10086976.pth", ckpt["dir"] / "vggish_pca_params-970ea276.pth")


def test_load_strict_keys_and_values(model, ckpt):
    sd = model.state_dict()
    assert set(sd) == set(TORCHVGGISH_SHAPES)
    for k, v in ckpt["sd"].items():
        assert torch.equal(sd[k], v), k
    assert not model.training and model.has_pca


def test_renamed_or_missing_key_fails_clearly(ckpt, tmp_path):
    sd = dict(ckpt["sd"])
    sd["features.1.weight"] = sd.pop("features.0.weight")
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(VGGishCheckpointError) as e:
        load_vggish(tmp_path / "bad.pth")
    msg = str(e.value)
    assert "missing keys (1): features.0.weight" in msg and "unexpected keys (1): features.1.weight" in msg
    sd = dict(ckpt["sd"])
    sd["embeddings.4.weight"] = torch.zeros(64, 4096)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(VGGishCheckpointError, match="embeddings.4.weight"):
        load_vggish(tmp_path / "shape.pth")
    torch.save({"pca_means": torch.zeros(128)}, tmp_path / "pca.pth")
    with pytest.raises(VGGishCheckpointError, match="pca_eigen_vectors"):
        load_vggish(ckpt["dir"] / "vggish-10086976.pth", tmp_path / "pca.pth")


def test_flatten_order_matches_torchvggish(model):
    x = torch.randn(2, 1, 96, 64)
    with torch.inference_mode():
        f = model.features(x)
        ref = model.embeddings(torch.transpose(torch.transpose(f, 1, 3), 1, 2).contiguous().view(2, -1))
        np.testing.assert_allclose(model(x).numpy(), ref.numpy(), atol=1e-6)


def test_embed_shapes_and_determinism(ckpt, model):
    x = _signal(3.0)  # 298 frames -> 3 patches
    e1 = model.embed(x, 16000)
    assert e1.shape == (3, 128) and e1.dtype == np.float32 and np.isfinite(e1).all()
    again = load_vggish(ckpt["dir"] / "vggish-10086976.pth").embed(x, 16000)
    np.testing.assert_array_equal(e1, again)
    # the network sees exactly the reference examples
    ref = model(torch.from_numpy(np_waveform_to_examples(x)).float()).detach().numpy()
    np.testing.assert_allclose(e1, ref, atol=1e-4)


def test_embed_centered_on_patch_centres_equals_embed(model):
    x = _signal(4.2, seed=5)
    full = model.embed(x, 16000)
    centres = patch_center_seconds(np.arange(len(full)))
    np.testing.assert_allclose(centres[:2], [0.4875, 1.4475])
    centred = model.embed_centered(x, 16000, centres)
    np.testing.assert_allclose(centred, full, atol=1e-4)
    # an off-grid centre reads different audio -> a different embedding
    shifted = model.embed_centered(x, 16000, centres[:1] + 0.1)
    assert np.abs(shifted - full[:1]).max() > 1e-3


def test_embed_centered_zero_pads_edges(model):
    x = _signal(2.0, seed=2)
    c = np.array([0.0, 1.0, 2.0, 50.0])
    out = model.embed_centered(x, 16000, c)
    assert out.shape == (4, 128)
    # a centre at t=0 sees 7800 zeros then the first 7800 samples
    manual = np.concatenate([np.zeros(7800), x[:7800]])
    np.testing.assert_allclose(out[0], model.embed(manual, 16000)[0], atol=1e-4)
    # far beyond the end: pure silence, same as the embedding of zeros
    silence = model.embed(np.zeros(fe.PATCH_SAMPLES), 16000)[0]
    np.testing.assert_allclose(out[3], silence, atol=1e-5)
    np.testing.assert_allclose(centered_coverage(len(x), 16000, c), [0.5, 1.0, 0.5, 0.0])


def test_no_audio_and_short_audio(model):
    assert model.embed(np.zeros(0), 16000).shape == (0, 128)
    assert model.embed(_signal(0.5), 16000).shape == (0, 128)  # < 0.975 s: no whole patch
    short = model.embed_centered(_signal(0.5), 16000, [0.25])
    assert short.shape == (1, 128) and np.isfinite(short).all()
    empty = model.embed_centered(np.zeros(0), 16000, [0.3, 0.9])
    silence = model.embed(np.zeros(fe.PATCH_SAMPLES), 16000)[0]
    np.testing.assert_allclose(empty, np.stack([silence, silence]), atol=1e-5)
    assert model.embed_centered(_signal(1.0), 16000, []).shape == (0, 128)
    assert centered_coverage(0, 16000, [0.3]).tolist() == [0.0]


def test_input_conversions_resample_mono_int16():
    t48 = np.arange(48000) / 48000
    t16 = np.arange(16000) / 16000
    tone48 = 0.5 * np.sin(2 * np.pi * 440 * t48)
    wav = to_mono_16k(tone48, 48000)
    assert wav.shape == (16000,) and wav.dtype == torch.float32
    front = fe.LogMelFrontend()
    lm_resampled = front.log_mel(wav)[5:-5]
    lm_native = front.log_mel(torch.from_numpy(0.5 * np.sin(2 * np.pi * 440 * t16)))[5:-5]
    np.testing.assert_allclose(lm_resampled.numpy(), lm_native.numpy(), atol=0.05)
    stereo = np.stack([tone48, np.zeros_like(tone48)])
    np.testing.assert_allclose(to_mono_16k(stereo, 16000).numpy(), tone48 / 2, atol=1e-7)
    # (samples, channels), as soundfile and scipy.io.wavfile return it, is averaged the same way
    np.testing.assert_allclose(to_mono_16k(stereo.T, 16000).numpy(), tone48 / 2, atol=1e-7)
    assert to_mono_16k(np.zeros((2, 0)), 48000).shape == (0,)  # empty channel-first audio stays empty
    np.testing.assert_allclose(to_mono_16k(np.array([16384, -32768], dtype=np.int16), 16000).numpy(), [0.5, -1.0])
    with pytest.raises(ValueError):
        to_mono_16k(np.zeros((2, 2, 2)), 16000)
    with pytest.raises(ValueError):
        to_mono_16k(np.zeros(10), 22050.5)


def test_integer_pcm_is_scaled_as_wav_readers_give_it():
    x = np.array([0.5, -1.0, 0.25, 0.0])
    for dtype, counts in ((np.int16, x * 32768), (np.int32, x * 2**31), (np.uint8, x * 128 + 128)):
        np.testing.assert_allclose(to_mono_16k(counts.astype(dtype), 16000).numpy(), x, atol=1e-7, err_msg=str(dtype))
    for dtype in (np.int64, np.uint16, bool):
        with pytest.raises(TypeError, match="convert it to float"):
            to_mono_16k(np.zeros(4, dtype), 16000)
    # big-endian and reversed arrays (negative strides) convert like any other
    np.testing.assert_allclose(to_mono_16k(x.astype(">f4")[::-1], 16000).numpy(), x[::-1], atol=1e-7)


@pytest.mark.parametrize(("n", "rate"), [(42995, 44100), (42996, 44100), (42997, 44100), (44100, 44100),
                                         (5507, 44056), (44056, 44056)])
def test_resampled_length_is_resampys(n, rate):
    """resampy keeps int(n * 16000 / rate) samples, torchaudio one more when that is not whole: at these
    lengths of 44.1 kHz audio, one more whole patch than the released pipeline gives. (At 44,056 Hz
    n * (16000 / rate), rounded twice, came out one short.)"""
    import resampy

    from extractors.vggish import resampled_length

    x = np.random.default_rng(n).standard_normal(n)
    want = resampy.resample(x, rate, 16000, filter="kaiser_best").shape
    assert to_mono_16k(x, rate).shape == want and (resampled_length(n, rate),) == want


@pytest.mark.parametrize("rate", [48000, 44100, 22050])
def test_resampling_matches_resampy_kaiser_best(rate):
    """vggish_input resamples with resampy's default filter, kaiser_best (a 50-zero-crossing table);
    torchaudio's default filter differed from it by ~0.4 on noise."""
    import resampy  # test extra: a missing reference must fail, not skip
    x = np.random.default_rng(rate).standard_normal(rate)
    ref = resampy.resample(x, rate, 16000, filter="kaiser_best")
    ours = to_mono_16k(x, rate).double().numpy()
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 4e-3 and np.sqrt(np.mean((ours - ref) ** 2)) < 1e-3


def test_postprocessor_matches_released_maths(model, ckpt):
    x = _signal(2.0, seed=7)
    raw = model.embed(x, 16000)
    post = model.embed(x, 16000, postprocess=True)
    ev, mu = ckpt["pca"]["pca_eigen_vectors"].numpy(), ckpt["pca"]["pca_means"].numpy()
    # vggish_postprocess.py casts with astype(np.uint8): truncation (torchvggish's round would be +1 on ~half)
    ref = np.floor((np.clip(ev @ (raw.T - mu[:, None]), -2, 2).T + 2.0) * (255.0 / 4.0))
    np.testing.assert_allclose(post, ref, atol=1.0)  # float32 vs float64 PCA may flip a value at a boundary
    assert np.mean(post != ref) < 0.01
    assert post.min() >= 0 and post.max() <= 255 and np.all(post == np.round(post))
    # PCA file stored as numpy arrays (torch.save of a dict of ndarrays) loads too
    m2 = load_vggish(ckpt["dir"] / "vggish-10086976.pth", ckpt["dir"] / "pca_numpy.pth")
    np.testing.assert_allclose(m2.embed(x, 16000, postprocess=True), post, atol=1.0)
    no_pca = load_vggish(ckpt["dir"] / "vggish-10086976.pth")
    with pytest.raises(RuntimeError, match="pca_path"):
        no_pca.embed(x, 16000, postprocess=True)


def test_final_relu_option(ckpt, model):
    with_relu = load_vggish(ckpt["dir"] / "vggish-10086976.pth", final_relu=True)
    x = _signal(1.5, seed=9)
    raw = model.embed(x, 16000)
    assert (raw < 0).any()  # default: no ReLU on fc2 (current TF release)
    np.testing.assert_allclose(with_relu.embed(x, 16000), np.maximum(raw, 0), atol=1e-6)


def test_random_init_is_seeded():
    a = build_vggish(seed=1).embeddings[4].weight
    b = build_vggish(seed=1).embeddings[4].weight
    assert torch.equal(a, b)



def test_forward_checks_patches_and_takes_numpy():
    """Wrong patch sizes failed deep in the network ('mat1 and mat2 shapes cannot be multiplied')."""
    import re

    net = build_vggish(seed=0)
    patches = np.random.default_rng(0).standard_normal((2, 96, 64)).astype(np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(patches))
        assert torch.equal(net(patches), ref) and torch.equal(net(patches[:, None].astype(np.float64)), ref)
        for bad in (np.zeros((2, 96, 65), np.float32), np.zeros((2, 2, 96, 64), np.float32), np.zeros((96, 64))):
            with pytest.raises(ValueError, match=rf"log-mel patches, got {re.escape(str(bad.shape))}$"):
                net(bad)
        with pytest.raises(TypeError, match="float log-mel patches, got torch.uint8.*embed"):
            net(np.zeros((2, 96, 64), np.uint8))


def test_set_pca_reports_the_shapes_given():
    net = build_vggish(seed=0)
    net.set_pca(np.eye(128), np.zeros((128, 1)))  # a column of means, as the TF release reshapes them
    assert net.pca_means.shape == (128,)
    with pytest.raises(VGGishCheckpointError, match=r"means \(2, 64\); expected"):  # was reshaped to (128,) and used
        net.set_pca(np.eye(128), np.zeros((2, 64)))
    emb = np.ones((3, 128), np.float32)
    assert torch.equal(net.postprocess(emb), net.postprocess(torch.from_numpy(emb)))


def test_network_equals_an_independent_forward_from_the_state_dict(ckpt, model):
    """VGGish written out from the published layout alone (torchvggish's: conv 3x3 + ReLU, max-pool 2x2 after
    blocks 1, 2, 4 and 6; NHWC flatten; fc1 ReLU fc2 ReLU fc3): a ReLU dropped or misplaced in our network
    moved the embeddings by ~0.01 at ~0.02 scale, and every other test compares the model with itself."""
    import torch.nn.functional as F

    sd = ckpt["sd"]
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((3, 1, 96, 64)).astype(np.float32))
    h = x
    for conv, pool in ((0, True), (3, True), (6, False), (8, True), (11, False), (13, True)):
        h = F.relu(F.conv2d(h, sd[f"features.{conv}.weight"], sd[f"features.{conv}.bias"], padding=1))
        if pool:
            h = F.max_pool2d(h, 2, 2)
    h = h.permute(0, 2, 3, 1).reshape(3, -1)
    h = F.relu(F.linear(h, sd["embeddings.0.weight"], sd["embeddings.0.bias"]))
    h = F.relu(F.linear(h, sd["embeddings.2.weight"], sd["embeddings.2.bias"]))
    want = F.linear(h, sd["embeddings.4.weight"], sd["embeddings.4.bias"])
    with torch.inference_mode():
        np.testing.assert_allclose(model(x).numpy(), want.numpy(), atol=1e-6, rtol=1e-5)


def test_embed_centered_is_the_same_in_any_batch_size(model):
    """Centres are processed batch_size at a time (the pipeline: 128); every batch must read its own centres."""
    x = _signal(3.0, seed=4)
    centres = [0.5, 0.9, 1.3, 1.7, 2.1]
    whole = model.embed_centered(x, 16000, centres)
    assert whole.shape == (5, 128)
    np.testing.assert_allclose(model.embed_centered(x, 16000, centres, batch_size=2), whole, atol=1e-6)


def test_gather_segments_pads_with_zeros_past_the_end():
    from extractors.vggish import gather_segments

    got = gather_segments(torch.arange(1, 11, dtype=torch.float32), np.array([8, -2]), 4)
    assert got.tolist() == [[9.0, 10.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0]]


def test_centered_coverage_counts_a_late_start_at_the_source_rate():
    """``first_sample`` is at the source rate like ``num_samples``: 1.5 s of lead at 48 kHz is 72,000 samples."""
    from extractors.vggish import centered_coverage

    cov = centered_coverage(int(2.6 * 48000), 48000, [0.32, 0.96, 1.6, 2.24], first_sample=72000)
    assert (cov > 0.5).tolist() == [False, False, True, True]
    np.testing.assert_allclose(cov, centered_coverage(int(2.6 * 16000), 16000, [0.32, 0.96, 1.6, 2.24],
                                                      first_sample=24000), atol=1e-4)
