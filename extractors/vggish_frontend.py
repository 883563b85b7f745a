"""VGGish log-mel front end in torch, reproducing the released AudioSet code
(tensorflow/models research/audioset/vggish: vggish_input.py + mel_features.py).

Parameters (vggish_params.py): 16 kHz mono; 25 ms (400-sample) periodic Hann window,
10 ms (160-sample) hop, FFT length 512 (next power of two), *magnitude* spectrum;
64 HTK-mel bands 125-7500 Hz with triangles linear in mel and the DC bin zeroed;
log(mel + 0.01); examples are 96-frame x 64-band patches, hop 96 frames (0.96 s).

Why not torchaudio transforms (checked against torchaudio 2.11, see docs/weights.md):
* ``Spectrogram(n_fft=512, win_length=400, center=False)`` centres the 400-sample window
  inside each 512-sample FFT frame, so frame i reads samples [160 i + 56, 160 i + 456)
  instead of [160 i, 160 i + 400), and it yields fewer frames. The maths below frames
  the signal like mel_features.frame and zero-pads each windowed frame to 512 (rfft n=512).
* ``melscale_fbanks(mel_scale="htk")`` draws the triangles linearly in *Hz* between
  mel-spaced edges and keeps the DC bin; mel_features draws them linearly in *mel* and
  zeroes DC. The matrix is therefore built here as mel_features does.
All ops are torch, so the front end runs on whatever device the waveform is on.
"""

from __future__ import annotations

import math

import torch

from extractors.arrays import as_tensor

SAMPLE_RATE = 16000
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_WINDOW_SECONDS = 0.96
EXAMPLE_HOP_SECONDS = 0.96

WINDOW_SAMPLES = int(round(SAMPLE_RATE * STFT_WINDOW_SECONDS))  # 400
HOP_SAMPLES = int(round(SAMPLE_RATE * STFT_HOP_SECONDS))  # 160
FFT_LENGTH = 2 ** int(math.ceil(math.log(WINDOW_SAMPLES) / math.log(2.0)))  # 512
PATCH_FRAMES = int(round(EXAMPLE_WINDOW_SECONDS / STFT_HOP_SECONDS))  # 96
PATCH_HOP_FRAMES = int(round(EXAMPLE_HOP_SECONDS / STFT_HOP_SECONDS))  # 96
# Audio samples read by one 96-frame patch: 95 hops + one window = 15600 (0.975 s).
PATCH_SAMPLES = (PATCH_FRAMES - 1) * HOP_SAMPLES + WINDOW_SAMPLES
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * HOP_SAMPLES  # 15360

_MEL_BREAK_HZ = 700.0
_MEL_HIGH_Q = 1127.0


def hertz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale, mel = 1127 ln(1 + f / 700) (mel_features.hertz_to_mel)."""
    return _MEL_HIGH_Q * torch.log1p(hz / _MEL_BREAK_HZ)


def periodic_hann(window_length: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Periodic Hann window 0.5 - 0.5 cos(2 pi n / N) (mel_features.periodic_hann)."""
    return torch.hann_window(window_length, periodic=True, dtype=dtype)


def mel_matrix(
    num_mel_bins: int = NUM_MEL_BINS,
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_edge_hz: float = MEL_MIN_HZ,
    upper_edge_hz: float = MEL_MAX_HZ,
) -> torch.Tensor:
    """(num_spectrogram_bins, num_mel_bins) float64 matrix M with mel = |STFT| @ M.

    As mel_features.spectrogram_to_mel_matrix: band edges equally spaced in mel,
    triangle slopes linear in mel, peak 1, no area normalisation, DC row zeroed (HTK).
    """
    nyquist = sample_rate / 2.0
    if not 0.0 <= lower_edge_hz < upper_edge_hz <= nyquist:
        raise ValueError(f"need 0 <= lower ({lower_edge_hz}) < upper ({upper_edge_hz}) <= nyquist ({nyquist})")
    bins_mel = hertz_to_mel(torch.linspace(0.0, nyquist, num_spectrogram_bins, dtype=torch.float64))
    edges = torch.linspace(
        float(hertz_to_mel(torch.tensor(lower_edge_hz, dtype=torch.float64))),
        float(hertz_to_mel(torch.tensor(upper_edge_hz, dtype=torch.float64))),
        num_mel_bins + 2,
        dtype=torch.float64,
    )
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0, :] = 0.0
    return weights


class LogMelFrontend(torch.nn.Module):
    """16 kHz waveform -> VGGish log-mel frames / patches (buffers follow ``.to(device)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", periodic_hann(WINDOW_SAMPLES).float(), persistent=False)
        self.register_buffer("mel_weights", mel_matrix().float(), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames of mel_features.frame: 1 + (n - 400) // 160, 0 when shorter than a window."""
        return 0 if num_samples < WINDOW_SAMPLES else 1 + (num_samples - WINDOW_SAMPLES) // HOP_SAMPLES

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """(..., S) float waveform at 16 kHz -> (..., F, 64) log-mel, F = num_frames(S).

        vggish_input.waveform_to_examples up to framing: frame, periodic-Hann window,
        |rfft_512|, @ mel matrix, log(mel + 0.01).
        """
        waveform = as_tensor(waveform)
        n = waveform.shape[-1]
        frames_n = self.num_frames(n)
        lead = waveform.shape[:-1]
        if frames_n == 0:
            return waveform.new_zeros(*lead, 0, NUM_MEL_BINS)
        frames = waveform.float().unfold(-1, WINDOW_SAMPLES, HOP_SAMPLES)  # view, no copy
        spectrum = torch.fft.rfft(frames * self.window, n=FFT_LENGTH).abs()
        return torch.log(spectrum @ self.mel_weights + LOG_OFFSET)

    def num_patches(self, num_samples: int) -> int:
        """Non-overlapping 96-frame patches of vggish_input (0 if fewer than 96 frames)."""
        f = self.num_frames(num_samples)
        return 0 if f < PATCH_FRAMES else 1 + (f - PATCH_FRAMES) // PATCH_HOP_FRAMES

    def patches(self, waveform: torch.Tensor, max_frames_per_chunk: int = 96 * 256) -> torch.Tensor:
        """(S,) 16 kHz mono -> (N, 96, 64) examples, exactly vggish_input.waveform_to_examples.

        Long audio is processed in chunks of whole patches (bounded memory); patches
        never straddle chunks, so the result is identical to one-shot computation.
        """
        waveform = as_tensor(waveform)
        if waveform.ndim != 1:
            raise ValueError(f"expected a mono (S,) waveform, got {tuple(waveform.shape)}")
        n_patches = self.num_patches(waveform.shape[0])
        if n_patches == 0:
            return waveform.new_zeros(0, PATCH_FRAMES, NUM_MEL_BINS, dtype=torch.float32)
        per_chunk = max(1, max_frames_per_chunk // PATCH_HOP_FRAMES)
        out = []
        for first in range(0, n_patches, per_chunk):
            count = min(per_chunk, n_patches - first)
            start = first * PATCH_HOP_SAMPLES
            stop = start + (count - 1) * PATCH_HOP_SAMPLES + PATCH_SAMPLES
            mel = self.log_mel(waveform[start:stop])
            out.append(mel[: count * PATCH_FRAMES].reshape(count, PATCH_FRAMES, NUM_MEL_BINS))
        return torch.cat(out)

    def segments_to_patches(self, segments: torch.Tensor) -> torch.Tensor:
        """(N, 15600) audio segments -> (N, 96, 64): one patch per segment."""
        if segments.ndim != 2 or segments.shape[1] != PATCH_SAMPLES:
            raise ValueError(f"expected (N, {PATCH_SAMPLES}) segments, got {tuple(segments.shape)}")
        return self.log_mel(segments)
