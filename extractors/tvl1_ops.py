"""Image operators for the batched TV-L1 solver (extractors/tvl1.py).

Every operator reproduces the discretisation used by OpenCV's
``cv::optflow::DualTVL1OpticalFlow`` (opencv_contrib, modules/optflow/src/tvl1flow.cpp),
which itself follows Sánchez, Meinhardt-Llopis & Facciolo, "TV-L1 Optical Flow
Estimation", IPOL 2013 (their reference C code). Tensors are batched: images are
(B, H, W) or (B, C, H, W) float32 on any device; nothing loops over pixels.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "opencv_scaled_size",
    "linear_resize_matrix",
    "resize_linear",
    "build_pyramid",
    "centered_gradient",
    "forward_gradient",
    "divergence",
    "warp_bicubic",
    "cubic_weights",
    "median_filter",
    "median_of_shifts",
    "median_network",
]


# --------------------------------------------------------------------------- resizing
def opencv_scaled_size(size: int, scale: float) -> int:
    """Output length of ``cv::resize(src, dst, Size(), scale, scale)``: round(size * scale)."""
    return int(round(size * scale))


@functools.lru_cache(maxsize=64)
def _resize_matrix_cpu(n_in: int, n_out: int, inv_scale: float) -> torch.Tensor:
    # OpenCV INTER_LINEAR (float images): source coordinate (d + 0.5) * inv_scale - 0.5, two taps;
    # coordinates left of the first pixel or right of the last one clamp to that pixel.
    d = torch.arange(n_out, dtype=torch.float64)
    src = (d + 0.5) * inv_scale - 0.5
    left = torch.floor(src)
    frac = src - left
    left = left.long()
    frac = torch.where(left < 0, torch.zeros_like(frac), frac)
    left = left.clamp(min=0)
    at_end = left >= n_in - 1
    frac = torch.where(at_end, torch.zeros_like(frac), frac)
    left = torch.where(at_end, torch.full_like(left, n_in - 1), left)
    right = (left + 1).clamp(max=n_in - 1)
    mat = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    mat.index_put_((rows, left), 1.0 - frac, accumulate=True)
    mat.index_put_((rows, right), frac, accumulate=True)
    return mat.to(torch.float32)


def linear_resize_matrix(n_in: int, n_out: int, inv_scale: float, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) matrix of OpenCV's INTER_LINEAR resampling along one axis.

    ``inv_scale`` is source pixels per destination pixel: ``1/fx`` when OpenCV is given a
    scale factor, ``n_in/n_out`` when it is given a destination size.
    """
    return _resize_matrix_cpu(n_in, n_out, float(inv_scale)).to(device)


def resize_linear(
    x: torch.Tensor, out_hw: tuple[int, int], inv_scale: tuple[float, float] | None = None
) -> torch.Tensor:
    """Separable bilinear resize of (..., H, W) with OpenCV INTER_LINEAR semantics.

    Implemented as two small matmuls (rows, then columns), which is exact, batched and
    fast on both CPU and GPU for the image sizes we use.
    """
    h, w = x.shape[-2:]
    oh, ow = out_hw
    sy, sx = inv_scale if inv_scale is not None else (h / oh, w / ow)
    ry = linear_resize_matrix(h, oh, sy, x.device)
    rx = linear_resize_matrix(w, ow, sx, x.device)
    return ry @ x @ rx.T


def build_pyramid(images: torch.Tensor, nscales: int, scale_step: float, min_size: int = 16) -> list[torch.Tensor]:
    """Image pyramid as OpenCV builds it: repeated INTER_LINEAR resize by ``scale_step``
    (Sánchez et al. 2013, §3 multiscale approach: the coarse-to-fine pyramid of scale factor η).

    OpenCV (contrib) does no Gaussian presmoothing before downscaling (the IPOL code does,
    sigma 0.8); we follow OpenCV. Like OpenCV, it stops before a level narrower or shorter
    than ``min_size`` pixels. ``images``: (B, C, H, W). Returns finest first.
    """
    levels = [images]
    for _ in range(1, nscales):
        h, w = levels[-1].shape[-2:]
        oh, ow = opencv_scaled_size(h, scale_step), opencv_scaled_size(w, scale_step)
        if oh < min_size or ow < min_size:
            break
        levels.append(resize_linear(levels[-1], (oh, ow), (1.0 / scale_step, 1.0 / scale_step)))
    return levels


# --------------------------------------------------------------------------- derivatives
def centered_gradient(img: torch.Tensor) -> torch.Tensor:
    """Central differences of (B, H, W) -> (B, 2, H, W) as (d/dx, d/dy): ∇I1 of the
    linearisation (Sánchez et al. 2013, §2-3; the table in docs/tvl1.md).

    Borders use half the one-sided difference, 0.5*(I[1]-I[0]), exactly as OpenCV's
    ``centeredGradient`` (= central differences on a replicate-padded image).
    """
    pad = F.pad(img.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
    dx = 0.5 * (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2])
    dy = 0.5 * (pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1])
    return torch.stack((dx, dy), dim=1)


def forward_gradient(u: torch.Tensor) -> torch.Tensor:
    """Forward differences of (B, C, H, W) -> (B, C, 2, H, W); zero on the last column/row.

    Sánchez et al. 2013, discrete gradient (forward differences, Neumann boundary).
    """
    dx = torch.cat((u[..., :, 1:] - u[..., :, :-1], torch.zeros_like(u[..., :, :1])), dim=-1)
    dy = torch.cat((u[..., 1:, :] - u[..., :-1, :], torch.zeros_like(u[..., :1, :])), dim=-2)
    return torch.stack((dx, dy), dim=2)


def divergence(p: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence of (B, C, 2, H, W) -> (B, C, H, W).

    Sánchez et al. 2013, discrete divergence (adjoint of -gradient). OpenCV's variant:
    the field is taken as zero left of column 0 / above row 0, and the last column/row use
    the ordinary backward difference (forward_gradient keeps p zero there anyway).
    """
    p1, p2 = p[:, :, 0], p[:, :, 1]
    d1 = torch.cat((p1[..., :, :1], p1[..., :, 1:] - p1[..., :, :-1]), dim=-1)
    d2 = torch.cat((p2[..., :1, :], p2[..., 1:, :] - p2[..., :-1, :]), dim=-2)
    return d1 + d2


# --------------------------------------------------------------------------- warping
def _pixel_grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, device=device, dtype=torch.float32).view(1, w)
    return xs, ys


def cubic_weights(t: torch.Tensor, a: float = -0.75) -> tuple[torch.Tensor, ...]:
    """Keys cubic-convolution weights of the taps at offsets -1, 0, 1, 2 for fraction t.

    OpenCV's ``interpolateCubic`` (a = -0.75); the last weight is 1 minus the others.
    """
    t1 = t + 1.0
    s = 1.0 - t
    w0 = ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a
    w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    w2 = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
    return w0, w1, w2, 1.0 - w0 - w1 - w2


def warp_bicubic(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample (B, C, H, W) at x + flow with bicubic interpolation -> (B, C, H, W): I1(x + u0) and
    ∇I1(x + u0) of the linearisation around u0 (Sánchez et al. 2013, §2).

    Matches ``cv::remap(..., INTER_CUBIC, BORDER_CONSTANT=0)`` with float maps: Keys
    kernel (a = -0.75) on the 4x4 neighbourhood, taps outside the image read as 0. The
    integer/fraction split is done on pixel coordinates directly (not via grid_sample's
    [-1, 1] normalisation), so a zero flow reproduces the image exactly, as in OpenCV --
    otherwise rounding noise divided by tiny gradients shows up as flow in flat regions.
    """
    b, c, h, w = img.shape
    xs, ys = _pixel_grid(h, w, img.device)
    mx = xs + flow[:, 0]
    my = ys + flow[:, 1]
    x0 = torch.floor(mx)
    y0 = torch.floor(my)
    wx = cubic_weights(mx - x0)
    wy = cubic_weights(my - y0)
    # Zero padding of 2 on each side; taps further out are clamped onto the padding,
    # which reads the same 0 the true out-of-image tap would.
    wp = w + 4
    flat = F.pad(img, (2, 2, 2, 2)).reshape(b, c, (h + 4) * wp)
    ix = [(x0 + (k + 1)).clamp(0, w + 3).long() for k in range(4)]  # tap k at x0 - 1 + k
    out = torch.zeros(b, c, h * w, dtype=img.dtype, device=img.device)
    for r in range(4):
        row = (y0 + (r + 1)).clamp(0, h + 3).long() * wp
        acc = torch.zeros_like(out)
        for k in range(4):
            index = (row + ix[k]).reshape(b, 1, h * w).expand(b, c, h * w)
            acc = acc + wx[k].reshape(b, 1, h * w) * torch.gather(flat, 2, index)
        out = out + wy[r].reshape(b, 1, h * w) * acc
    return out.reshape(b, c, h, w)


# --------------------------------------------------------------------------- median filter
def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators of Batcher's odd-even merge sort for n = 2**k wires."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.lru_cache(maxsize=4)
def median_network(n: int) -> tuple[tuple[str, int, int], ...]:
    """Selection network for the median of n inputs (n odd), as (op, i, j) steps.

    Batcher's sorting network on the next power of two, with the padding wires treated
    as +inf and every comparator that cannot influence the middle output removed.
    ``op`` is "ce" (compare-exchange), "min" (only wire i is needed) or "max" (only j).
    For 25 inputs this is 89 compare-exchanges + 24 half comparators.
    """
    size = 1 << math.ceil(math.log2(n))
    inf = set(range(n, size))
    ops: list[tuple[str, int, int]] = []
    for i, j in _batcher_pairs(size):
        if j in inf:  # min(a, +inf) = a: nothing moves
            continue
        if i in inf:  # the finite value moves down to wire i
            ops.append(("mov", i, j))
            inf.discard(i)
            inf.add(j)
            continue
        ops.append(("ce", i, j))
    need = {n // 2}
    kept: list[tuple[str, int, int]] = []
    for op, i, j in reversed(ops):
        if op == "mov":
            if i in need:
                need.discard(i)
                need.add(j)
                kept.append((op, i, j))
            continue
        ni, nj = i in need, j in need
        if not (ni or nj):
            continue
        kept.append(("ce" if ni and nj else ("min" if ni else "max"), i, j))
        need.update((i, j))
    return tuple(reversed(kept))


def median_of_shifts(padded: torch.Tensor, ksize: int, h: int, w: int) -> torch.Tensor:
    """Median over the ksize*ksize shifted (h, w) windows of an already padded tensor.

    Separate from the padding so that torch.compile sees plain slices (contiguous along x)
    and emits one vectorised kernel.
    """
    wires = [padded[..., dy : dy + h, dx : dx + w] for dy in range(ksize) for dx in range(ksize)]
    for op, i, j in median_network(ksize * ksize):
        a, b = wires[i], wires[j]
        if op == "ce":
            wires[i], wires[j] = torch.minimum(a, b), torch.maximum(a, b)
        elif op == "min":
            wires[i] = torch.minimum(a, b)
        elif op == "max":
            wires[j] = torch.maximum(a, b)
        else:  # "mov"
            wires[i] = b
    return wires[(ksize * ksize) // 2].contiguous()


def median_filter(u: torch.Tensor, ksize: int = 5, core=median_of_shifts) -> torch.Tensor:
    """ksize x ksize median of each channel of (B, C, H, W), replicate border: the median filtering of
    the flow between warps (Wedel et al. 2009, "An improved algorithm for TV-L1 optical flow"; OpenCV's
    DualTVL1 applies it before each block of inner iterations).

    Same result as ``cv::medianBlur`` on float images (which uses BORDER_REPLICATE).
    Evaluated as a selection network of elementwise min/max over the shifted images, which
    vectorises on CPU and GPU; ``core`` may be a torch.compile'd ``median_of_shifts``.
    """
    r = ksize // 2
    h, w = u.shape[-2:]
    if core is median_of_shifts and u.device.type == "cpu" and u.shape[0] * u.shape[1] > 1:
        # Eager on the CPU: one plane at a time keeps the 25 shifted windows and the network's
        # intermediates in cache: 2x faster on (8, 2, 224, 224) than the whole batch at once.
        planes = u.reshape(-1, 1, h, w).split(1)
        return torch.cat([core(F.pad(x, (r, r, r, r), mode="replicate"), ksize, h, w) for x in planes]).view(u.shape)
    return core(F.pad(u, (r, r, r, r), mode="replicate"), ksize, h, w)
