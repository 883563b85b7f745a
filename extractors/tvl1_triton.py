"""TV-L1 inner iterations as two fused Triton kernels (``TVL1Config(backend="triton")``).

The same iteration as :func:`extractors.tvl1.masked_iteration` (Sánchez et al. 2013, Algorithm 1
inner loop), written so that each pixel's data is read once per kernel: on an H100 the
torch.compile'd iteration ran as four dynamic-shape kernels at ~450 GB/s and was bound by
per-iteration host overhead (BENCHMARKS.md). Per iteration:

* ``_primal_kernel``: thresholding step (TH), divergence of p, u <- v + theta div p, and each
  pair's stopping error (atomic per-pair sum); needs p at the left and upper neighbours only,
  so u is updated in place;
* ``_dual_kernel``: forward gradient of the new u (right and lower neighbours) and Chambolle's
  dual update, in place.

Pairs no longer active are masked out of every load and store, so they stay frozen exactly as in
the torch path. Layout: contiguous u (B, 2, H, W), p (B, 2, 2, H, W) [component, direction],
grad (B, 2, H, W), rho_c and 1/|grad|^2 (B, 1, H, W). Without a GPU the kernels run in Triton's
interpreter (``TRITON_INTERPRET=1``), which the tests use.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["triton_block", "BLOCK"]

BLOCK = 1024  # pixels per program


@triton.jit
def _pixels(active_ptr, H, W, BLOCK_SIZE: tl.constexpr):
    """This program's pair b and pixel offsets; ``inb`` masks pixels outside the image or of a stopped pair."""
    b = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    hw = H * W
    inb = (offs < hw) & (tl.load(active_ptr + b).to(tl.int32) != 0)
    row = offs // W
    return b, offs, hw, inb, row, offs - row * W


@triton.jit
def _primal_kernel(u_ptr, p_ptr, g_ptr, rho_ptr, inv_ptr, active_ptr, err_ptr, H, W, lt, theta,
                   BLOCK_SIZE: tl.constexpr):
    b, offs, hw, inb, row, col = _pixels(active_ptr, H, W, BLOCK_SIZE)
    ub = u_ptr + b * 2 * hw
    gb = g_ptr + b * 2 * hw
    pb = p_ptr + b * 4 * hw
    u0 = tl.load(ub + offs, mask=inb, other=0.0)
    u1 = tl.load(ub + hw + offs, mask=inb, other=0.0)
    g0 = tl.load(gb + offs, mask=inb, other=0.0)
    g1 = tl.load(gb + hw + offs, mask=inb, other=0.0)
    rho_c = tl.load(rho_ptr + b * hw + offs, mask=inb, other=0.0)
    inv = tl.load(inv_ptr + b * hw + offs, mask=inb, other=0.0)
    # TH: v = u + clamp(-rho / |grad|^2, -lambda theta, lambda theta) * grad
    rho = rho_c + (g0 * u0 + g1 * u1)
    step = tl.minimum(tl.maximum(-rho * inv, -lt), lt)
    v0 = u0 + step * g0
    v1 = u1 + step * g1
    # div p with OpenCV's boundary: the field is zero left of column 0 and above row 0
    left = inb & (col > 0)
    up = inb & (row > 0)
    p00 = tl.load(pb + offs, mask=inb, other=0.0)
    p00l = tl.load(pb + offs - 1, mask=left, other=0.0)
    p01 = tl.load(pb + hw + offs, mask=inb, other=0.0)
    p01u = tl.load(pb + hw + offs - W, mask=up, other=0.0)
    p10 = tl.load(pb + 2 * hw + offs, mask=inb, other=0.0)
    p10l = tl.load(pb + 2 * hw + offs - 1, mask=left, other=0.0)
    p11 = tl.load(pb + 3 * hw + offs, mask=inb, other=0.0)
    p11u = tl.load(pb + 3 * hw + offs - W, mask=up, other=0.0)
    n0 = v0 + theta * ((p00 - p00l) + (p01 - p01u))
    n1 = v1 + theta * ((p10 - p10l) + (p11 - p11u))
    d0 = n0 - u0
    d1 = n1 - u1
    e = tl.where(inb, d0 * d0 + d1 * d1, 0.0)
    tl.atomic_add(err_ptr + b, tl.sum(e, axis=0))
    tl.store(ub + offs, n0, mask=inb)
    tl.store(ub + hw + offs, n1, mask=inb)


@triton.jit
def _dual_kernel(u_ptr, p_ptr, active_ptr, H, W, tt, BLOCK_SIZE: tl.constexpr):
    b, offs, hw, inb, row, col = _pixels(active_ptr, H, W, BLOCK_SIZE)
    right = inb & (col < W - 1)
    down = inb & (row < H - 1)
    ub = u_ptr + b * 2 * hw
    pb = p_ptr + b * 4 * hw
    for c in tl.static_range(2):
        uc = tl.load(ub + c * hw + offs, mask=inb, other=0.0)
        ur = tl.load(ub + c * hw + offs + 1, mask=right, other=0.0)
        ud = tl.load(ub + c * hw + offs + W, mask=down, other=0.0)
        gx = tl.where(right, ur - uc, 0.0)  # forward differences, zero on the last column/row
        gy = tl.where(down, ud - uc, 0.0)
        scale = 1.0 / (1.0 + tt * tl.sqrt(gx * gx + gy * gy))
        px = tl.load(pb + (2 * c) * hw + offs, mask=inb, other=0.0)
        py = tl.load(pb + (2 * c + 1) * hw + offs, mask=inb, other=0.0)
        tl.store(pb + (2 * c) * hw + offs, (px + tt * gx) * scale, mask=inb)
        tl.store(pb + (2 * c + 1) * hw + offs, (py + tt * gy) * scale, mask=inb)


def triton_block(
    u: torch.Tensor,
    p: torch.Tensor,
    i1w_grad: torch.Tensor,
    rho_c: torch.Tensor,
    inv_grad_sq: torch.Tensor,
    active: torch.Tensor,
    steps: int,
    epsilon_sq: float,
    lambda_theta: float,
    theta: float,
    tau_over_theta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``steps`` masked iterations; same contract as :func:`extractors.tvl1.masked_block`.

    u and p are updated in place when contiguous (copies otherwise); returns (u, p, active).
    """
    if p.numel() >= 2**31:
        raise ValueError(f"tvl1 triton backend: batch too large for 32-bit offsets ({tuple(p.shape)}); use smaller batches")
    u, p = u.contiguous(), p.contiguous()
    g, rho, inv = i1w_grad.contiguous(), rho_c.contiguous(), inv_grad_sq.contiguous()
    b, _, h, w = u.shape
    grid = (b, triton.cdiv(h * w, BLOCK))
    err = torch.empty(b, dtype=torch.float32, device=u.device)
    threshold = epsilon_sq * h * w
    for _ in range(steps):
        err.zero_()
        _primal_kernel[grid](u, p, g, rho, inv, active, err, h, w, lambda_theta, theta, BLOCK_SIZE=BLOCK)
        _dual_kernel[grid](u, p, active, h, w, tau_over_theta, BLOCK_SIZE=BLOCK)
        active = active & (err > threshold)
    return u, p, active
