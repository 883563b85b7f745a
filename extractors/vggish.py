"""VGGish (Hershey et al., "CNN Architectures for Large-Scale Audio Classification",
ICASSP 2017) as released for AudioSet, loading the torchvggish conversion as it is.

Checkpoint keys (harritaylor/torchvggish ``vggish-10086976.pth``): ``features.{0,3,6,8,11,13}``
(3x3 convs 64, 128, 256, 256, 512, 512, 2x2 max-pools in between) and
``embeddings.{0,2,4}`` (12288->4096->4096->128). PCA file
(``vggish_pca_params-970ea276.pth``): ``pca_eigen_vectors`` (128, 128), ``pca_means`` (128,).

Embeddings are the raw 128-d fc2 outputs by default; ``postprocess=True`` applies the
released PCA/whitening + 8-bit quantisation (values 0..255, as float32).

Final ReLU: torchvggish (and TF vggish_slim before 2020) apply a ReLU after fc2; the
current TF release defines fc2 with ``activation_fn=None``. The weights are the same;
``final_relu`` selects which behaviour (default False = current TF release; True
reproduces torchvggish outputs). See docs/weights.md.
"""

from __future__ import annotations

import importlib
import numbers
import os
from typing import Sequence

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn

from extractors.arrays import as_tensor
from extractors.checkpoint_keys import state_dict_mismatch
from extractors.weights import torch_load_reason
from extractors.vggish_frontend import (
    NUM_MEL_BINS,
    PATCH_FRAMES,
    PATCH_HOP_SAMPLES,
    PATCH_SAMPLES,
    SAMPLE_RATE,
    LogMelFrontend,
)

EMBEDDING_DIM = 128
QUANTIZE_MIN_VAL = -2.0
QUANTIZE_MAX_VAL = 2.0
PCA_EIGEN_VECTORS_NAME = "pca_eigen_vectors"
PCA_MEANS_NAME = "pca_means"
_CONV_CHANNELS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")


class VGGishCheckpointError(ValueError):
    """The file is not a torchvggish checkpoint / PCA parameter file."""


def patch_center_seconds(k: int | np.ndarray) -> float | np.ndarray:
    """Centre time of the k-th patch of :meth:`VGGish.embed` (start 0.96 k s + 0.4875 s).

    A patch reads 15600 samples (95 hops + one 400-sample window) from 15360 k, so its
    centre is at sample 15360 k + 7800. Passing these centres to :meth:`VGGish.embed_centered`
    reproduces :meth:`VGGish.embed` exactly.
    """
    return (np.asarray(k) * PATCH_HOP_SAMPLES + PATCH_SAMPLES // 2) / SAMPLE_RATE


def _check_patches(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, 96, 64) float log-mel patches (a (N, 96, 64) stack gets its channel axis)."""
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] != 1) or tuple(x.shape[-2:]) != (PATCH_FRAMES, NUM_MEL_BINS):
        raise ValueError(f"expected (N, 1, {PATCH_FRAMES}, {NUM_MEL_BINS}) or (N, {PATCH_FRAMES}, {NUM_MEL_BINS}) "
                         f"log-mel patches, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected float log-mel patches, got {x.dtype}: embed() / embed_centered() take the waveform")
    return x.unsqueeze(1) if x.ndim == 3 else x


def _make_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = 1
    for v in _CONV_CHANNELS:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = int(v)
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """VGGish network + log-mel front end + optional PCA postprocessor."""

    def __init__(self, final_relu: bool = False) -> None:
        super().__init__()
        self.features = _make_features()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_DIM),
            nn.ReLU(inplace=True) if final_relu else nn.Identity(),
        )
        self.final_relu = final_relu
        self.frontend = LogMelFrontend()  # buffers only, non-persistent: not in state_dict
        self.register_buffer("pca_eigen_vectors", None, persistent=False)
        self.register_buffer("pca_means", None, persistent=False)

    # ------------------------------------------------------------ network
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 1, 96, 64) or (N, 96, 64) log-mel patches -> (N, 128) raw embeddings."""
        x = _check_patches(as_tensor(patches))
        w = self.embeddings[0].weight
        x = self.features(x.to(device=w.device, dtype=w.dtype))  # (N, 512, 6, 4)
        # TF flattens NHWC: (N, 6, 4, 512) order, which fc1's weight layout expects.
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return self.embeddings(x)

    @property
    def has_pca(self) -> bool:
        return self.pca_eigen_vectors is not None

    def set_pca(self, eigen_vectors: torch.Tensor, means: torch.Tensor) -> None:
        """Install the released PCA parameters (eigen vectors (128, 128), means (128,))."""
        ev = as_tensor(eigen_vectors).to(torch.float32)
        mu = as_tensor(means).to(torch.float32)
        # means may be stored as a column (128, 1), as the TF release reshapes them; report the shapes given
        if ev.shape != (EMBEDDING_DIM, EMBEDDING_DIM) or mu.squeeze().shape != (EMBEDDING_DIM,):
            raise VGGishCheckpointError(f"bad PCA shapes: eigen vectors {tuple(ev.shape)}, means {tuple(mu.shape)}; "
                                        f"expected ({EMBEDDING_DIM}, {EMBEDDING_DIM}) and ({EMBEDDING_DIM},)")
        mu = mu.reshape(-1)
        dev = self.embeddings[0].weight.device
        self.pca_eigen_vectors = ev.to(dev)
        self.pca_means = mu.to(dev)

    def postprocess(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Released postprocessor (vggish_postprocess.py): PCA/whitening, clip to [-2, 2], map to [0, 255]
        and cast to 8 bits (float32 values 0..255).

        The cast truncates, as the TF release's ``astype(np.uint8)`` that produced the published AudioSet
        embeddings does; torchvggish rounds instead (+1 on about half the values).
        """
        if not self.has_pca:
            raise RuntimeError("postprocess needs the PCA parameters: pass pca_path to load_vggish")
        pca = (as_tensor(embeddings).to(self.pca_means) - self.pca_means) @ self.pca_eigen_vectors.T
        clipped = pca.clamp(QUANTIZE_MIN_VAL, QUANTIZE_MAX_VAL)
        return torch.floor((clipped - QUANTIZE_MIN_VAL) * (255.0 / (QUANTIZE_MAX_VAL - QUANTIZE_MIN_VAL)))

    def _run(self, patches: torch.Tensor, postprocess: bool, batch_size: int) -> np.ndarray:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if postprocess and not self.has_pca:
            raise RuntimeError("postprocess=True needs the PCA parameters: pass pca_path to load_vggish")
        outs = []
        for i in range(0, patches.shape[0], batch_size):
            emb = self(patches[i : i + batch_size])
            outs.append(self.postprocess(emb) if postprocess else emb)
        if not outs:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return torch.cat(outs).float().cpu().numpy()

    # ------------------------------------------------------------ waveform API
    def _prepare(self, waveform: np.ndarray | torch.Tensor, sample_rate: float) -> torch.Tensor:
        dev = self.embeddings[0].weight.device
        return to_mono_16k(waveform, sample_rate, device=dev)

    def embed(
        self,
        waveform: np.ndarray | torch.Tensor,
        sample_rate: float,
        postprocess: bool = False,
        batch_size: int = 128,
    ) -> np.ndarray:
        """Mono waveform -> (N, 128) float32, one row per consecutive 0.96 s patch.

        As the released vggish_input + model: N = number of whole 96-frame patches
        (0 for audio shorter than 0.975 s; the tail that does not fill a patch is dropped).
        """
        with torch.inference_mode():
            wav = self._prepare(waveform, sample_rate)
            return self._run(self.frontend.patches(wav), postprocess, batch_size)

    def embed_centered(
        self,
        waveform: np.ndarray | torch.Tensor,
        sample_rate: float,
        centers_seconds: Sequence[float] | np.ndarray,
        postprocess: bool = False,
        batch_size: int = 128,
    ) -> np.ndarray:
        """(len(centers), 128) float32: one embedding per centre time.

        Each row is the patch of the 0.96 s of audio centred on that time (the 15600
        samples [c*16000 - 7800, c*16000 + 7800), zero outside the audio, no
        interpolation). This aligns audio to the feature store's snippet grid.
        """
        centers = np.asarray(centers_seconds, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(centers)):
            raise ValueError("centers_seconds must be finite")
        with torch.inference_mode():
            wav = self._prepare(waveform, sample_rate)
            starts = centered_patch_starts(centers)
            outs = []
            for i in range(0, len(starts), batch_size):
                segs = gather_segments(wav, starts[i : i + batch_size], PATCH_SAMPLES)
                outs.append(self._run(self.frontend.segments_to_patches(segs), postprocess, batch_size))
            if not outs:
                return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
            return np.concatenate(outs)


def centered_patch_starts(centers_seconds: np.ndarray) -> np.ndarray:
    """First 16 kHz sample of the patch centred on each time: round(c * 16000) - 7800."""
    return np.floor(np.asarray(centers_seconds, dtype=np.float64) * SAMPLE_RATE + 0.5).astype(np.int64) - (
        PATCH_SAMPLES // 2
    )


def gather_segments(wav: torch.Tensor, starts: np.ndarray, length: int) -> torch.Tensor:
    """(len(starts), length) windows of a 1-D waveform, zero where they leave [0, S)."""
    idx = torch.as_tensor(starts, device=wav.device)[:, None] + torch.arange(length, device=wav.device)
    if wav.shape[0] == 0:
        return torch.zeros(idx.shape, dtype=torch.float32, device=wav.device)
    valid = (idx >= 0) & (idx < wav.shape[0])
    return torch.where(valid, wav[idx.clamp(0, wav.shape[0] - 1)], 0.0)


def centered_coverage(num_samples: int, sample_rate: float, centers_seconds: Sequence[float] | np.ndarray,
                      first_sample: int = 0) -> np.ndarray:
    """Fraction (0..1) of each centred patch window that lies inside the audio.

    Lets callers build the store's ``audio_mask`` (e.g. coverage > 0.5) with the same
    geometry as :meth:`VGGish.embed_centered`. ``num_samples`` is at ``sample_rate``; the audio
    track occupies samples ``first_sample`` .. ``num_samples`` (before it: padding for a late start).
    """
    n16 = resampled_length(num_samples, sample_rate)
    first16 = resampled_length(first_sample, sample_rate) if first_sample > 0 else 0
    starts = centered_patch_starts(np.asarray(centers_seconds, dtype=np.float64).reshape(-1))
    inside = np.clip(np.minimum(starts + PATCH_SAMPLES, n16) - np.maximum(starts, first16), 0, None)
    return (inside / PATCH_SAMPLES).astype(np.float32)


def _int_rate(sample_rate: float) -> int:
    sr = float(sample_rate)
    if sr <= 0 or not sr.is_integer():
        raise ValueError(f"sample_rate must be a positive integer number of Hz, got {sample_rate}")
    if not 1000 <= sr <= 768_000:  # (16 meant as kHz became 2,000 s of audio per 2 s, and gigabytes)
        raise ValueError(f"sample_rate {sample_rate} Hz is implausible: give it in Hz (16000, not 16), "
                         "between 1,000 and 768,000")
    return int(sr)


def resampled_length(num_samples: int, sample_rate: float) -> int:
    """Length after resampling to 16 kHz as :func:`to_mono_16k` resamples: resampy's
    ``int(S * 16000 / rate)``, the exact floor (``S * (16000 / rate)`` rounds twice: one short at 44,056 Hz)."""
    sr = _int_rate(sample_rate)
    return int(num_samples) * SAMPLE_RATE // sr


#: resampy's "kaiser_best" filter in torchaudio's terms. resampy ships it as a table (50 zero crossings at
#: 8192 points each, rolloff 0.9173): a Kaiser-windowed sinc with beta 12.9846 (fitted to the table to 4e-8).
#: resampy counts zero crossings before rolloff, torchaudio after: width 50 * rolloff. Equal to
#: resampy.resample(..., filter="kaiser_best") to ~2e-3 on unit-variance noise (torchaudio's default: 0.44).
_KAISER_BEST_ROLLOFF = 0.9173473712608761
KAISER_BEST = {"resampling_method": "sinc_interp_kaiser", "lowpass_filter_width": 50 * _KAISER_BEST_ROLLOFF,
               "rolloff": _KAISER_BEST_ROLLOFF, "beta": 12.984583735502994}


MAX_CHANNELS = 64  # more columns than this is never (samples, channels) audio


def to_mono_16k(
    waveform: np.ndarray | torch.Tensor, sample_rate: float, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """(S,) or (channels, S) audio -> (S',) float32 mono at 16 kHz on ``device``.

    Multi-channel input is averaged, like vggish_input. It is channel-first (as torchaudio.load
    returns); a (S, channels) array (soundfile, scipy.io.wavfile) is recognised by having more rows
    than columns. Integer PCM is scaled to [-1, 1) as scipy.io.wavfile's types are: int16 / 32768 (as
    vggish_input.wavfile_to_examples), int32 / 2**31, uint8 (x - 128) / 128; other integer types are
    refused. Resampling uses torchaudio's windowed sinc with resampy's ``kaiser_best`` filter
    (what the released code uses; torchaudio's default filter was 0.44 off resampy on unit-variance
    noise from 48 kHz, this one 2e-3), so non-16 kHz input is close to but not bit-identical with the
    TF pipeline (documented in docs/weights.md); the resampled length is resampy's,
    ``int(S * 16000 / rate)`` (torchaudio rounds up: one more sample, sometimes one more patch).
    """
    wav = as_tensor(waveform)
    if not wav.is_floating_point():
        scale = _PCM_SCALE.get(wav.dtype)
        if scale is None:
            raise TypeError(f"integer audio of type {wav.dtype} is not PCM this knows how to scale (int16, int32, "
                            "uint8); convert it to float in [-1, 1]")
        offset = 128.0 if wav.dtype == torch.uint8 else 0.0
        wav = (wav.to(torch.float64) - offset) / scale  # (float64: int32 counts exceed float32's mantissa)
    wav = wav.to(device=device, dtype=torch.float32)
    if wav.ndim == 2:
        if wav.shape[0] > wav.shape[1] and 0 < wav.shape[1] <= MAX_CHANNELS:  # (samples, channels)
            wav = wav.T
        wav = wav.mean(dim=0)
    elif wav.ndim != 1:
        raise ValueError(f"expected (S,) or (channels, S) audio, got {tuple(wav.shape)}")
    sr = _int_rate(sample_rate)
    if sr != SAMPLE_RATE and wav.shape[0] > 0:
        wav = AF.resample(wav, sr, SAMPLE_RATE, **KAISER_BEST)[: resampled_length(wav.shape[0], sr)]
    return wav.contiguous()


# Integer PCM sample types and their full scale (scipy.io.wavfile's: 16- and 32-bit signed, 8-bit unsigned).
_PCM_SCALE = {torch.int16: 32768.0, torch.int32: 2.0**31, torch.uint8: 128.0}


# ------------------------------------------------------------------ loading
def _allow_numpy_load(path: str | os.PathLike) -> object:
    """torch.load(weights_only=True) that also accepts pickled numpy arrays (nothing else)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as first:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            raise first from None
        if not names or not all(n.startswith("numpy.") for n in names):
            raise first
        objs: list = [getattr(importlib.import_module(n.rpartition(".")[0]), n.rpartition(".")[2]) for n in names]
        # dtype classes are only discovered while unpickling: allow the plain numeric ones.
        objs += [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.uint8)]
        with torch.serialization.safe_globals(objs):
            return torch.load(path, map_location="cpu", weights_only=True)


def _load_dict(path: str | os.PathLike, what: str) -> dict:
    try:
        obj = _allow_numpy_load(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no such file ({what}); torchvggish's vggish-10086976.pth and vggish_pca_params-970ea276.pth "
            "are published at https://github.com/harritaylor/torchvggish/releases/tag/v0.1 (docs/weights.md)") from None
    except Exception as e:
        raise VGGishCheckpointError(f"{path} is not a loadable {what} ({torch_load_reason(e)})") from e
    if not isinstance(obj, dict):
        raise VGGishCheckpointError(f"{path} is not a {what} (got {type(obj).__name__})")
    return obj


def build_vggish(final_relu: bool = False, seed: int | None = None, device: str | torch.device = "cpu") -> VGGish:
    """Randomly initialised VGGish in eval mode (``seed`` makes the init reproducible)."""
    if seed is None:
        model = VGGish(final_relu)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = VGGish(final_relu)
    return model.to(device).eval()


def load_vggish(
    checkpoint_path: str | os.PathLike,
    pca_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    final_relu: bool = False,
) -> VGGish:
    """Load the torchvggish checkpoint (strict keys and shapes) and optional PCA file."""
    sd = _load_dict(checkpoint_path, "torchvggish state_dict")
    model = VGGish(final_relu)
    expected = model.state_dict()
    msg = state_dict_mismatch(expected, sd, f"{checkpoint_path} is not a torchvggish VGGish checkpoint:")
    if msg:
        raise VGGishCheckpointError(msg)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()}, strict=True)
    if pca_path is not None:
        params = _load_dict(pca_path, "VGGish PCA parameter file")
        absent = [k for k in (PCA_EIGEN_VECTORS_NAME, PCA_MEANS_NAME) if k not in params]
        if absent:
            raise VGGishCheckpointError(
                f"{pca_path} is not a VGGish PCA file: missing {absent} (has {sorted(map(str, params))})"
            )
        model.set_pca(params[PCA_EIGEN_VECTORS_NAME], params[PCA_MEANS_NAME])
    return model.to(device).eval()


__all__ = [
    "EMBEDDING_DIM",
    "NUM_MEL_BINS",
    "PATCH_FRAMES",
    "VGGish",
    "VGGishCheckpointError",
    "build_vggish",
    "centered_coverage",
    "load_vggish",
    "patch_center_seconds",
    "to_mono_16k",
]
