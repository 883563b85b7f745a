"""The per-warp linearisation of TV-L1 as one Triton kernel (used by the Triton backends).

Each warp (Sánchez et al. 2013, Algorithm 1, "compute I1(x+u0), grad I1(x+u0)") samples I1 and its
gradient at x + u0 with OpenCV's bicubic remap and forms the constant part of the linearised residual.
In torch that is ~100 small elementwise/gather kernels per warp (16 taps x 3 planes); on the H100 they
took ~35% of the Triton backend's GPU time (bench/profile_tvl1.py). Here one pass reads u0 and I0,
samples the three planes with shared weights and indices, and writes grad I1w and rho_c: ~7 floats of
traffic per pixel. Same arithmetic, same order as :func:`extractors.tvl1_ops.warp_bicubic` and
:func:`extractors.tvl1.linearized_residual_constant` (up to fused multiply-adds).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from extractors.tvl1_triton import LAUNCH_LOCK

__all__ = ["triton_warp_linearize", "BLOCK"]

BLOCK = 512  # pixels per program


@triton.jit
def _keys_weights(t):
    """Keys cubic weights (a = -0.75) of the taps at -1, 0, 1, 2 for fraction t, as tvl1_ops.cubic_weights."""
    a = -0.75
    t1 = t + 1.0
    s = 1.0 - t
    w0 = ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a
    w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    w2 = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
    return w0, w1, w2, 1.0 - w0 - w1 - w2


@triton.jit
def _tap(base, hw, o, ok, wx, a0, a1, a2):
    return (a0 + wx * tl.load(base + o, mask=ok, other=0.0),
            a1 + wx * tl.load(base + hw + o, mask=ok, other=0.0),
            a2 + wx * tl.load(base + 2 * hw + o, mask=ok, other=0.0))


@triton.jit
def _tap_row(base, hw, yy, xl, H, W, m, wx0, wx1, wx2, wx3):
    """Weighted sum of the 4 column taps xl .. xl+3 of row yy in the 3 planes; taps off the image read 0."""
    rok = m & (yy >= 0) & (yy < H)
    o = yy * W
    x = xl
    ok = rok & (x >= 0) & (x < W)
    a0 = wx0 * tl.load(base + o + x, mask=ok, other=0.0)
    a1 = wx0 * tl.load(base + hw + o + x, mask=ok, other=0.0)
    a2 = wx0 * tl.load(base + 2 * hw + o + x, mask=ok, other=0.0)
    x = xl + 1
    a0, a1, a2 = _tap(base, hw, o + x, rok & (x >= 0) & (x < W), wx1, a0, a1, a2)
    x = xl + 2
    a0, a1, a2 = _tap(base, hw, o + x, rok & (x >= 0) & (x < W), wx2, a0, a1, a2)
    x = xl + 3
    a0, a1, a2 = _tap(base, hw, o + x, rok & (x >= 0) & (x < W), wx3, a0, a1, a2)
    return a0, a1, a2


@triton.jit
def _warp_kernel(img_ptr, u_ptr, i0_ptr, g_ptr, rho_ptr, H, W, BLOCK_SIZE: tl.constexpr):
    """Program (b, tile): bicubic samples of I1, I1x, I1y (img, (B, 3, H, W)) at x + u -> g, rho_c.

    Taps outside the image read 0 (BORDER_CONSTANT), as warp_bicubic's zero padding gives. When g is
    a float16 tensor (TVL1Config.state_dtype) the gradient is rounded first and rho_c formed from the
    rounded values, as extractors.tvl1._solve_scale does.
    """
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    hw = H * W
    m = offs < hw
    row = offs // W
    col = offs - row * W
    u0 = tl.load(u_ptr + b * 2 * hw + offs, mask=m, other=0.0)
    u1 = tl.load(u_ptr + b * 2 * hw + hw + offs, mask=m, other=0.0)
    mx = col.to(tl.float32) + u0
    my = row.to(tl.float32) + u1
    x0 = tl.floor(mx)
    y0 = tl.floor(my)
    wx0, wx1, wx2, wx3 = _keys_weights(mx - x0)
    wy0, wy1, wy2, wy3 = _keys_weights(my - y0)
    # Leftmost tap column / top tap row, clamped (before the int conversion) where all 4 taps are off
    # the image anyway: [-4, W] keeps every tap that can land on the image where it is.
    xl = tl.minimum(tl.maximum(x0 - 1.0, -4.0), W + 0.0).to(tl.int32)
    yt = tl.minimum(tl.maximum(y0 - 1.0, -4.0), H + 0.0).to(tl.int32)
    base = img_ptr + b * 3 * hw
    # Rows of taps y0-1 .. y0+2, each the sum of its 4 column taps (warp_bicubic's order of sums).
    a0, a1, a2 = _tap_row(base, hw, yt, xl, H, W, m, wx0, wx1, wx2, wx3)
    v0, v1, v2 = wy0 * a0, wy0 * a1, wy0 * a2  # (0 + w*a in warp_bicubic: the same float)
    a0, a1, a2 = _tap_row(base, hw, yt + 1, xl, H, W, m, wx0, wx1, wx2, wx3)
    v0, v1, v2 = v0 + wy1 * a0, v1 + wy1 * a1, v2 + wy1 * a2
    a0, a1, a2 = _tap_row(base, hw, yt + 2, xl, H, W, m, wx0, wx1, wx2, wx3)
    v0, v1, v2 = v0 + wy2 * a0, v1 + wy2 * a1, v2 + wy2 * a2
    a0, a1, a2 = _tap_row(base, hw, yt + 3, xl, H, W, m, wx0, wx1, wx2, wx3)
    v0, v1, v2 = v0 + wy3 * a0, v1 + wy3 * a1, v2 + wy3 * a2
    i0 = tl.load(i0_ptr + b * hw + offs, mask=m, other=0.0)
    v1 = v1.to(g_ptr.dtype.element_ty).to(tl.float32)  # (a no-op for a float32 g)
    v2 = v2.to(g_ptr.dtype.element_ty).to(tl.float32)
    tl.store(g_ptr + b * 2 * hw + offs, v1, mask=m)
    tl.store(g_ptr + b * 2 * hw + hw + offs, v2, mask=m)
    tl.store(rho_ptr + b * hw + offs, (v0 - (v1 * u0 + v2 * u1)) - i0, mask=m)


def triton_warp_linearize(stack: torch.Tensor, u: torch.Tensor, i0: torch.Tensor,
                          grad_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad I1(x+u), rho_c) for stack = (I1, I1x, I1y) (B, 3, H, W), u (B, 2, H, W), i0 (B, H, W).

    Returns i1w_grad (B, 2, H, W) in ``grad_dtype`` and rho_c (B, 1, H, W) float32, contiguous: what
    ``warp_bicubic`` followed by ``linearized_residual_constant`` give (extractors.tvl1._solve_scale).
    """
    b, c, h, w = stack.shape
    if c != 3 or u.shape != (b, 2, h, w) or i0.shape != (b, h, w):
        raise ValueError(f"triton_warp_linearize: shapes {tuple(stack.shape)}, {tuple(u.shape)}, {tuple(i0.shape)}")
    if stack.numel() >= 2**31:
        raise ValueError(f"tvl1 triton backend: batch too large for 32-bit offsets ({tuple(stack.shape)})")
    stack, u, i0 = stack.contiguous(), u.contiguous(), i0.contiguous()
    g = torch.empty((b, 2, h, w), dtype=grad_dtype, device=u.device)
    rho = torch.empty((b, 1, h, w), dtype=torch.float32, device=u.device)
    with LAUNCH_LOCK:
        _warp_kernel[(b, triton.cdiv(h * w, BLOCK))](stack, u, i0, g, rho, h, w, BLOCK_SIZE=BLOCK)
    return g, rho
