"""Array inputs of the extractors' public APIs."""
from __future__ import annotations

import numpy as np
import torch


def as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``torch.as_tensor`` that also takes the numpy arrays it refuses: negative strides (``frames[..., ::-1]``,
    the usual BGR -> RGB flip of OpenCV frames) and non-native byte order (``>f4`` from some file readers).
    Anything else is converted as ``torch.as_tensor`` does (no copy where none is needed)."""
    if isinstance(x, np.ndarray):
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        if any(s < 0 for s in x.strides):
            x = np.ascontiguousarray(x)
    return torch.as_tensor(x)
