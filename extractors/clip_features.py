"""CLIP ViT-B/16 snippet features (the VLP view of CLIP-AE) via open_clip, from a local file.

Weights: the OpenAI checkpoint as published (``ViT-B-16.pt``, a TorchScript archive) or
any open_clip/OpenAI-layout state dict (``.pt``/``.bin``/``.safetensors``). Nothing is
downloaded. ``open_clip.create_model(..., pretrained=<path>)`` reads files with
``torch.load(weights_only=True)``, which refuses TorchScript archives, so the state dict
is read here (TorchScript via ``torch.jit.load``, no pickle) and loaded strictly into the
image tower of an open_clip model built from its own config. OpenAI trained with
QuickGELU, which open_clip's plain ``ViT-B-16`` config does not use, so ``quick_gelu``
defaults to True (what open_clip's ``openai`` tag does). A state dict cannot tell which
activation it was trained with: non-OpenAI ViT-B-16 weights (LAION, DataComp; trained with
GELU) load strictly but need ``ClipConfig(quick_gelu=False)``. (The pipeline only accepts
OpenAI's file, by its hash.)

Snippet feature (our choice; CLIP-AE only says "CLIP based on ViT-B"): the image
embeddings of ``frames_per_snippet`` frames at the centres of equal sub-blocks of the
16-frame snippet (frames 2, 6, 10, 14 for k=4) are L2-normalised, averaged and
re-normalised (:func:`pool_snippet_embeddings`). Preprocessing equals open_clip's eval
transform for ViT-B-16 (short side 224 bicubic, antialiased like PIL; centre crop 224;
OpenAI mean/std), done on uint8 tensors in batch instead of per PIL image.
"""
from __future__ import annotations

import numbers
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from extractors.arrays import as_tensor
from extractors.clip_config import (  # noqa: F401 -- (re-exported: public names of this module)
    CLIP_EXTRACTOR_VERSION,
    CLIP_FEATURE_DIM,
    ClipConfig,
    clip_sample_positions,
)
from extractors.preprocess import resize_center_crop
from extractors.weights import torch_load_reason

# Non-tensor ints that OpenAI's TorchScript archive carries next to the weights.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


class ClipWeightsError(ValueError):
    """The CLIP weights file is missing, unreadable or does not fit the model config."""


def pool_snippet_embeddings(embeddings: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(T, k, D) frame embeddings -> (T, D): mean of the L2-normalised embeddings, re-normalised.

    Normalising first makes every frame count equally (CLIP compares directions, not norms);
    the result is unit-length like a single CLIP image embedding.
    """
    embeddings = as_tensor(embeddings)
    if embeddings.ndim != 3:
        raise ValueError(f"pool_snippet_embeddings: expected (T, k, D) frame embeddings, got {tuple(embeddings.shape)}")
    e = F.normalize(embeddings.float(), dim=-1)
    return F.normalize(e.mean(dim=1), dim=-1)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def read_clip_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A CLIP state dict from a TorchScript archive (OpenAI release) or a plain checkpoint."""
    path = Path(path)
    if not path.is_file():
        from extractors.probe import not_a_file_reason

        raise ClipWeightsError(f"CLIP weights file {path}: {not_a_file_reason(path)}")
    try:
        if _is_torchscript(path):
            with warnings.catch_warnings():  # OpenAI publishes only TorchScript; no alternative to jit.load
                warnings.simplefilter("ignore", DeprecationWarning)
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, pickle refused by weights_only, ...
        raise ClipWeightsError(f"{path} is not a readable CLIP checkpoint ({torch_load_reason(e)})") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd:
        raise ClipWeightsError(f"{path} does not contain a state dict (got {type(sd).__name__})")
    sd = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}
    for k in _OPENAI_EXTRA_KEYS:
        sd.pop(k, None)
    return sd


def _create_visual(config: ClipConfig) -> tuple[torch.nn.Module, dict]:
    """Randomly initialised image tower of an open_clip model config and its eval preprocess settings.

    Only the image tower is built (``open_clip.model._build_vision_tower``, what ``CLIP``
    itself calls): the text tower would double start-up time and memory for nothing. If a
    future open_clip drops that helper, the full model is built and its text tower dropped.
    """
    import open_clip
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg

    cfg = open_clip.get_model_config(config.model_name)
    if cfg is None:
        raise ClipWeightsError(f"unknown open_clip model config {config.model_name!r} (see open_clip.list_models())")
    quick_gelu = bool(config.quick_gelu or cfg.get("quick_gelu", False))
    pre = asdict(PreprocessCfg())
    pre.update({k: v for k, v in cfg.get("preprocess_cfg", {}).items() if k in pre})
    pre["size"] = cfg["vision_cfg"].get("image_size", pre["size"])
    try:
        from open_clip.model import _build_vision_tower
    except ImportError:
        _build_vision_tower = None
    if _build_vision_tower is not None and "timm_model_name" not in cfg["vision_cfg"]:
        visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu, None)
    else:
        visual = open_clip.create_model(config.model_name, pretrained=None, force_quick_gelu=quick_gelu).visual
    return visual, pre


def build_clip_visual(config: ClipConfig, weights_path: str | os.PathLike | None) -> tuple[torch.nn.Module, dict]:
    """open_clip image tower (eval, fp32, CPU) with weights loaded strictly, and its preprocess config.

    ``weights_path=None`` gives a seeded random init (callers must have the user's opt-in).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        visual, pre = _create_visual(config)
    if weights_path is not None:
        sd = read_clip_state_dict(weights_path)
        vis = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
        if not vis:
            raise ClipWeightsError(f"{weights_path} has no 'visual.*' keys: not a CLIP checkpoint")
        expected = visual.state_dict()
        missing = sorted(set(expected) - set(vis))
        unexpected = sorted(set(vis) - set(expected))
        bad = sorted(f"{k}: file {tuple(vis[k].shape)} vs model {tuple(v.shape)}"
                     for k, v in expected.items() if k in vis and vis[k].shape != v.shape)
        if missing or unexpected or bad:
            parts = [f"{weights_path} does not fit open_clip {config.model_name!r}:"]
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", bad)):
                if keys:
                    parts.append(f"  {what} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
            raise ClipWeightsError("\n".join(parts))
        visual.load_state_dict({k: v.float() for k, v in vis.items()}, strict=True)
    return visual.float().eval(), pre


class ClipExtractor:
    """CLIP image embeddings pooled per snippet.

    ``weights``: a :class:`extractors.weights.ResolvedWeights`, a file path, or None (random
    init, only with ``allow_random=True``).
    """

    def __init__(
        self,
        weights=None,
        device: str | torch.device = "cpu",
        config: ClipConfig | None = None,
        allow_random: bool = False,
    ) -> None:
        self.config = config or ClipConfig()
        path = getattr(weights, "path", weights)
        self.random_init = path is None
        if self.random_init and not (allow_random or getattr(weights, "random_init", False)):
            raise ClipWeightsError(
                "no CLIP weights given; pass the weights file (see extractors/weights.py, key 'clip_vitb16') "
                "or opt in to random weights explicitly (allow_random=True / --allow-random-weights)"
            )
        self.device = torch.device(device)
        self.visual, pre = build_clip_visual(self.config, path)
        self.weights_sha256 = getattr(weights, "sha256", None)
        if path is not None and self.weights_sha256 is None:
            from extractors.weights import sha256_file

            self.weights_sha256 = sha256_file(path)
        self.visual.to(self.device)
        size = pre.get("size", getattr(self.visual, "image_size", 224))
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.interpolation = pre.get("interpolation", "bicubic")
        mean = torch.tensor(pre.get("mean", (0.48145466, 0.4578275, 0.40821073)), dtype=torch.float32)
        std = torch.tensor(pre.get("std", (0.26862954, 0.26130258, 0.27577711)), dtype=torch.float32)
        # Folding /255 into the affine map saves one full pass over the batch.
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(self.device)
        self.embed_dim = int(getattr(self.visual, "output_dim", CLIP_FEATURE_DIM))
        self.autocast_dtype: torch.dtype | None = None  # set by the pipeline after its cosine check

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB (N, H, W, 3) -> uint8 (N, 3, S, S): open_clip's eval resize + centre crop."""
        x = as_tensor(frames)
        if x.dtype != torch.uint8:
            raise TypeError(f"expected uint8 (N, H, W, 3) RGB frames, got {x.dtype} {tuple(x.shape)}")
        if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < 1:
            raise ValueError(f"expected uint8 (N, H, W, 3) RGB frames, got {x.dtype} {tuple(x.shape)}")
        return resize_center_crop(x.permute(0, 3, 1, 2), self.image_size, self.image_size, self.interpolation)

    def embed_crops(self, crops: np.ndarray | torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """uint8 (N, 3, S, S) crops -> float32 (N, D) image embeddings (not normalised), on CPU."""
        x = as_tensor(crops)
        self._check_crops(x, "(N, 3, S, S)", tuple(x.shape))
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        outs = []
        with torch.no_grad():  # (not inference_mode: callers may use the embeddings in autograd or in place)
            for i in range(0, x.shape[0], batch_size):
                b = x[i : i + batch_size].to(self.device, non_blocking=True).float()
                b = b * self._scale + self._shift
                if self.autocast_dtype is not None and self.device.type == "cuda":
                    with torch.autocast("cuda", dtype=self.autocast_dtype):
                        e = self.visual(b)
                else:
                    e = self.visual(b)
                outs.append(e.float().cpu())
        return torch.cat(outs) if outs else torch.zeros((0, self.embed_dim))

    def _check_crops(self, x: torch.Tensor, layout: str, shape: tuple) -> None:
        """uint8 (N, 3, S, S) with S the model's input size: float crops would be scaled by 1/255 as if
        0..255, and other sizes or layouts fail deep inside the ViT."""
        if x.dtype != torch.uint8:
            raise TypeError(f"expected uint8 {layout} crops (0..255, from preprocess()), got {x.dtype}")
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"expected uint8 {layout} crops with S={self.image_size} (from preprocess()), "
                             f"got {shape}")

    def snippet_features_from_crops(self, crops: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 (T, k, 3, S, S) crops of the sampled frames -> float32 (T, D) pooled features."""
        x = as_tensor(crops)
        if x.ndim != 5:
            raise ValueError(f"expected (T, k, 3, S, S) crops, got {tuple(x.shape)}")
        self._check_crops(x.flatten(0, 1), "(T, k, 3, S, S)", tuple(x.shape))  # (report the caller's shape)
        t, k = x.shape[:2]
        if t == 0 or k == 0:
            return np.zeros((t, self.embed_dim), np.float32)
        emb = self.embed_crops(x.reshape(t * k, *x.shape[2:]))
        return pool_snippet_embeddings(emb.reshape(t, k, -1)).numpy()

    def snippet_features(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 RGB snippets (T, F, H, W, 3) -> float32 (T, D): sample, preprocess, embed, pool."""
        x = as_tensor(frames)
        if x.dtype != torch.uint8:
            raise TypeError(f"expected uint8 (T, F, H, W, 3) RGB snippets, got {x.dtype} {tuple(x.shape)}")
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 (T, F, H, W, 3) RGB snippets, got {x.dtype} {tuple(x.shape)}")
        if x.shape[0] == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        pos = clip_sample_positions(x.shape[1], self.config.frames_per_snippet)
        sel = x[:, pos]  # (T, k, H, W, 3)
        t, k = sel.shape[:2]
        crops = self.preprocess(sel.reshape(t * k, *sel.shape[2:]))
        return self.snippet_features_from_crops(crops.reshape(t, k, *crops.shape[1:]))
