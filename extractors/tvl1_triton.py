"""TV-L1 inner iterations as fused Triton kernels (``TVL1Config(backend="triton" | "triton-grid")``).

The same iterations as :func:`extractors.tvl1.masked_iteration` (Sánchez et al. 2013, Algorithm 1
inner loop). On an H100 the torch.compile'd iteration ran as four dynamic-shape kernels at ~450 GB/s
and was bound by per-iteration host overhead (BENCHMARKS.md); two layouts remove that:

* ``backend="triton"`` -- :func:`triton_sweep_block`, one launch for a whole inner loop. One program
  per pair iterates on its own until its stopping test holds or the inner iterations run out (so a
  converged pair costs nothing and the host never syncs inside the loop). Each iteration is ONE sweep
  over the image in bands of rows: the primal update of band k, then the dual update of the rows one
  above it (whose lower neighbours are now final); see ``_sweep_kernel`` for why this order is exact.
  Memory traffic per pixel and iteration: u, grad I1w, rho_c and p read once, u and p written once
  (15 floats, 60 bytes; 1/|grad|^2 is recomputed; 40 bytes with ``TVL1Config(state_dtype="float16")``,
  which stores p and grad I1w as float16 and computes in float32).
* ``backend="triton-grid"`` -- :func:`triton_block`, two kernels per iteration over a (pair, tile)
  grid: primal (TH, divergence, u update, per-pair stopping error by atomic sum; p read at the
  left/upper neighbours only, so u updates in place) then dual (forward gradient of the new u,
  Chambolle update of p in place). More parallel for a few pairs, ~22 floats per pixel and
  iteration and 2 launches per iteration.

Pairs no longer active are masked out (grid) or skipped (sweep), so they stay frozen exactly as in
the torch path. Layout: contiguous u (B, 2, H, W), p (B, 2, 2, H, W) [component, direction],
grad (B, 2, H, W), rho_c and 1/|grad|^2 (B, 1, H, W). Without a GPU the kernels run in Triton's
interpreter (``TRITON_INTERPRET=1``), which the tests use; tests also compile them for sm_90.
"""
from __future__ import annotations

import threading

import torch
import triton
import triton.language as tl

from extractors.tvl1 import _FLT_EPSILON

__all__ = ["triton_block", "triton_sweep_block", "sweep_layout", "flat_sweep_layout", "sweep_row_stride", "BLOCK",
           "LAUNCH_LOCK"]

# Held around every launch of these kernels (microseconds: launches are asynchronous). Threads may
# call TV-L1 concurrently (extractors.pipeline with video_workers); a kernel's first launch compiles
# it, and Triton's interpreter (the tests' CPU stand-in) runs kernels inside the launch and is not
# thread-safe at all, so launches are serialized while the GPU still runs the kernels concurrently.
LAUNCH_LOCK = threading.Lock()

BLOCK = 1024  # pixels per program
FLT_EPSILON: tl.constexpr = tl.constexpr(_FLT_EPSILON)  # extractors.tvl1's "gradient is zero" floor


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
def _p_loads(pb, hw, offs, W, m, left, up):
    """p at ``offs`` with its left and upper neighbours, the divergence's inputs (float32; p may be stored
    as float16). OpenCV's boundary: the field is zero left of column 0 and above row 0 (``left``/``up``
    mask those neighbours)."""
    p00 = tl.load(pb + offs, mask=m, other=0.0).to(tl.float32)
    p00l = tl.load(pb + offs - 1, mask=left, other=0.0).to(tl.float32)
    p01 = tl.load(pb + hw + offs, mask=m, other=0.0).to(tl.float32)
    p01u = tl.load(pb + hw + offs - W, mask=up, other=0.0).to(tl.float32)
    p10 = tl.load(pb + 2 * hw + offs, mask=m, other=0.0).to(tl.float32)
    p10l = tl.load(pb + 2 * hw + offs - 1, mask=left, other=0.0).to(tl.float32)
    p11 = tl.load(pb + 3 * hw + offs, mask=m, other=0.0).to(tl.float32)
    p11u = tl.load(pb + 3 * hw + offs - W, mask=up, other=0.0).to(tl.float32)
    return p00, p00l, p01, p01u, p10, p10l, p11, p11u


@triton.jit
def _div_from(p00, p00l, p01, p01u, p10, p10l, p11, p11u):
    """theta-free divergence of p (both flow components) from :func:`_p_loads`' values (backward differences)."""
    return (p00 - p00l) + (p01 - p01u), (p10 - p10l) + (p11 - p11u)


@triton.jit
def _div_p(pb, hw, offs, W, m, left, up):
    """theta-free divergence of p at ``offs`` (both flow components), OpenCV's boundary."""
    p00, p00l, p01, p01u, p10, p10l, p11, p11u = _p_loads(pb, hw, offs, W, m, left, up)
    return _div_from(p00, p00l, p01, p01u, p10, p10l, p11, p11u)


@triton.jit
def _dual_loads(ub, pb, hw, offs, W, m, right, down, c: tl.constexpr):
    """Flow component c's dual-update inputs at ``offs``: u there, right of and below it, and p (float32)."""
    uc = tl.load(ub + c * hw + offs, mask=m, other=0.0)
    ur = tl.load(ub + c * hw + offs + 1, mask=right, other=0.0)
    ud = tl.load(ub + c * hw + offs + W, mask=down, other=0.0)
    px = tl.load(pb + (2 * c) * hw + offs, mask=m, other=0.0).to(tl.float32)
    py = tl.load(pb + (2 * c + 1) * hw + offs, mask=m, other=0.0).to(tl.float32)
    return uc, ur, ud, px, py


@triton.jit
def _dual_store(pb, hw, offs, m, right, down, tt, uc, ur, ud, px, py, c: tl.constexpr):
    """Chambolle update of component c's p from the forward gradient of u (zero on the last column/row,
    ``right``/``down`` false there), stored in place; the new p is rounded to p's dtype on store."""
    gx = tl.where(right, ur - uc, 0.0)
    gy = tl.where(down, ud - uc, 0.0)
    scale = 1.0 / (1.0 + tt * tl.sqrt(gx * gx + gy * gy))
    tl.store(pb + (2 * c) * hw + offs, (px + tt * gx) * scale, mask=m)
    tl.store(pb + (2 * c + 1) * hw + offs, (py + tt * gy) * scale, mask=m)


@triton.jit
def _dual_update(ub, pb, hw, offs, W, m, right, down, tt):
    """Chambolle update of p at ``offs`` (both components), in place: :func:`_dual_loads` then :func:`_dual_store`."""
    for c in tl.static_range(2):
        uc, ur, ud, px, py = _dual_loads(ub, pb, hw, offs, W, m, right, down, c)
        _dual_store(pb, hw, offs, m, right, down, tt, uc, ur, ud, px, py, c)


@triton.jit
def _pair_planes(u_ptr, p_ptr, g_ptr, rho_ptr, b, hw):
    """Pair b's u (2 planes), p (4), grad (2) and rho_c (1) in the contiguous batch layout."""
    return u_ptr + b * 2 * hw, p_ptr + b * 4 * hw, g_ptr + b * 2 * hw, rho_ptr + b * hw


@triton.jit
def _primal_loads(ub, gb, rb, hw, offs, m):
    """The thresholding step's inputs at ``offs``: u (2 planes), the warped gradient (2; may be float16) and rho_c."""
    u0 = tl.load(ub + offs, mask=m, other=0.0)
    u1 = tl.load(ub + hw + offs, mask=m, other=0.0)
    g0 = tl.load(gb + offs, mask=m, other=0.0).to(tl.float32)
    g1 = tl.load(gb + hw + offs, mask=m, other=0.0).to(tl.float32)
    rc = tl.load(rb + offs, mask=m, other=0.0)
    return u0, u1, g0, g1, rc


@triton.jit
def _primal_from(u0, u1, g0, g1, rc, div0, div1, m, lt, theta):
    """TH, then u <- v + theta div p: the new u and the pixels' stopping-error terms.
    (1/|grad|^2 is recomputed as thresholding_step's inv_grad_sq.)"""
    rho = rc + (g0 * u0 + g1 * u1)
    inv = 1.0 / tl.maximum(g0 * g0 + g1 * g1, FLT_EPSILON)
    step = tl.minimum(tl.maximum(-rho * inv, -lt), lt)
    n0 = (u0 + step * g0) + theta * div0
    n1 = (u1 + step * g1) + theta * div1
    d0 = n0 - u0
    d1 = n1 - u1
    return n0, n1, tl.where(m, d0 * d0 + d1 * d1, 0.0)


@triton.jit
def _sweep_primal(ub, pb, gb, rb, hw, offs, W, m, left, up, em, lt, theta):
    """TH and u <- v + theta div p at ``offs``, in place; returns the stopping-error terms of the pixels in
    ``em`` (the image's; ``m`` may include padding columns)."""
    u0, u1, g0, g1, rc = _primal_loads(ub, gb, rb, hw, offs, m)
    div0, div1 = _div_p(pb, hw, offs, W, m, left, up)
    n0, n1, e = _primal_from(u0, u1, g0, g1, rc, div0, div1, em, lt, theta)
    tl.store(ub + offs, n0, mask=m)
    tl.store(ub + hw + offs, n1, mask=m)
    return e


@triton.jit
def _primal_kernel(u_ptr, p_ptr, g_ptr, rho_ptr, inv_ptr, active_ptr, err_ptr, H, W, lt, theta,
                   BLOCK_SIZE: tl.constexpr):
    b, offs, hw, inb, row, col = _pixels(active_ptr, H, W, BLOCK_SIZE)
    ub = u_ptr + b * 2 * hw
    gb = g_ptr + b * 2 * hw
    pb = p_ptr + b * 4 * hw
    u0 = tl.load(ub + offs, mask=inb, other=0.0)
    u1 = tl.load(ub + hw + offs, mask=inb, other=0.0)
    g0 = tl.load(gb + offs, mask=inb, other=0.0).to(tl.float32)  # (g and p may be stored as float16)
    g1 = tl.load(gb + hw + offs, mask=inb, other=0.0).to(tl.float32)
    rho_c = tl.load(rho_ptr + b * hw + offs, mask=inb, other=0.0)
    inv = tl.load(inv_ptr + b * hw + offs, mask=inb, other=0.0)
    # TH: v = u + clamp(-rho / |grad|^2, -lambda theta, lambda theta) * grad
    rho = rho_c + (g0 * u0 + g1 * u1)
    step = tl.minimum(tl.maximum(-rho * inv, -lt), lt)
    v0 = u0 + step * g0
    v1 = u1 + step * g1
    div0, div1 = _div_p(pb, hw, offs, W, inb, inb & (col > 0), inb & (row > 0))
    n0 = v0 + theta * div0
    n1 = v1 + theta * div1
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
    _dual_update(u_ptr + b * 2 * hw, p_ptr + b * 4 * hw, hw, offs, W, inb, right, down, tt)


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
    threshold = float(epsilon_sq * h * w)
    lambda_theta, theta, tau_over_theta = float(lambda_theta), float(theta), float(tau_over_theta)
    for _ in range(steps):
        err.zero_()
        with LAUNCH_LOCK:
            _primal_kernel[grid](u, p, g, rho, inv, active, err, h, w, lambda_theta, theta, BLOCK_SIZE=BLOCK)
            _dual_kernel[grid](u, p, active, h, w, tau_over_theta, BLOCK_SIZE=BLOCK)
        active = active & (err > threshold)
    return u, p, active


# --------------------------------------------------------------------------- one sweep per iteration
@triton.jit
def _sweep_kernel(u_ptr, p_ptr, g_ptr, rho_ptr, active_ptr, H, W, steps, threshold, lt, theta, tt,
                  ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
    """Up to ``steps`` masked iterations of one pair (program b), in place; clears active[b] on convergence.

    Iteration n maps (u^n, p^n) to u^{n+1} = TH/primal(u^n, p^n), p^{n+1} = dual(p^n, u^{n+1}). The
    primal update of row r reads p^n at rows r and r-1; the dual update of row d reads u^{n+1} at rows
    d and d+1. Band k (rows kR..kR+R-1) therefore does primal(band k), barrier, dual(rows kR-1..kR+R-2):
    those rows' lower neighbours are final, and the rows whose p they overwrite were the last ones the
    primal needed (band k+1's primal reads p from row kR+R-1 on). One extra band finishes the last
    dual rows. Reads and writes of different threads meet only across the barrier.
    1/|grad I1w|^2 is recomputed from grad instead of read (one plane less of memory traffic).
    """
    b = tl.program_id(0)
    if tl.load(active_ptr + b).to(tl.int32) != 0:
        hw = H * W
        ub, pb, gb, rb = _pair_planes(u_ptr, p_ptr, g_ptr, rho_ptr, b, hw)
        r = tl.arange(0, ROWS)[:, None]
        col = tl.arange(0, BLOCK_W)[None, :]
        in_w = col < W
        bands = (H + ROWS - 1) // ROWS + 1
        err = threshold
        n = 0
        go = n < steps
        while go:
            acc = tl.zeros([ROWS, BLOCK_W], dtype=tl.float32)
            k = 0
            while k < bands:  # (a while, not range(): Triton's interpreter cannot index with a runtime bound)
                # ---- primal on rows k*ROWS + r: TH, u <- v + theta div p, stopping error
                row = k * ROWS + r
                m = (row < H) & in_w
                offs = row * W + col
                acc += _sweep_primal(ub, pb, gb, rb, hw, offs, W, m, m & (col > 0), m & (row > 0), m, lt, theta)
                tl.debug_barrier()
                # ---- dual on rows k*ROWS - 1 + r: forward gradient of u^{n+1}, Chambolle update of p
                drow = row - 1
                dm = (drow >= 0) & (drow < H) & in_w
                doffs = offs - W
                _dual_update(ub, pb, hw, doffs, W, dm, dm & (col < W - 1), dm & (drow < H - 1), tt)
                k += 1
            tl.debug_barrier()  # the next iteration's first bands read rows the last bands wrote
            err = tl.sum(tl.sum(acc, axis=1), axis=0)
            n += 1
            go = (err > threshold) & (n < steps)
        if n > 0:  # like masked_block: active only while the error exceeds the threshold (NaN stops too)
            tl.store(active_ptr + b, err > threshold)


@triton.jit
def _flat_band(k, lane, BAND: tl.constexpr, hw, S, W, PADDED: tl.constexpr):
    """Band k of a flat sweep: pixel offsets, columns, the mask of the plane (padding columns included:
    they are computed, never read, see _sweep_flat_kernel) and that of the image's pixels (stopping error)."""
    offs = k * BAND + lane
    col = offs % S
    m = offs < hw
    return offs, col, m, (m & (col < W)) if PADDED else m


@triton.jit
def _sweep_flat_kernel(u_ptr, p_ptr, g_ptr, rho_ptr, active_ptr, H, W, steps, threshold, lt, theta, tt, S,
                       BAND: tl.constexpr, PADDED: tl.constexpr):
    """``_sweep_kernel`` with bands of BAND consecutive pixels of the flattened image instead of whole rows.

    Every lane holds a pixel (whole-row bands leave the lanes past the width idle, padded to a power of
    2: 11-44% of them at the pyramid's widths 224/179/143/114/91), and bands start aligned. The
    dependencies are the same with "row" read as "W pixels": the primal at pixel i reads p^n at i-1 and
    i-W; the dual at j reads u^{n+1} at j, j+1, j+W. Band k does primal(pixels kB..kB+B-1), barrier,
    dual(pixels kB-W..kB+B-1-W): their u neighbours are final, and the p they overwrite is read by no
    later primal (band k+1 reads p from (k+1)B-W on). The pixel's column (for the left/right borders)
    is ``offs % S``: carrying it from band to band instead took more registers (63 vs 48 at 224 px,
    from ptxas) and more instructions. Rows are S >= W pixels apart (S = W, or W padded to a multiple of
    16, ``SWEEP_ROW_ALIGN``: then the offsets one row up or down are as aligned as the pixel's own and
    no layout conversion is needed at any width). The padding columns are updated like pixels but are
    never read by one: a pixel reads its left/right neighbour only inside the image (``col > 0``,
    ``col < W - 1``) and otherwise its own column, so the padding's values (whatever they are: the
    caller's zeros, then whatever the updates make of them) never reach the image, and the stopping error
    counts image pixels only. Masking the padding out instead would make the loads' masks vary within
    groups of 4 lanes, so the compiler could not vectorise them.
    PADDED is False when S == W: the kernel then uses W alone (the compiler cannot know that S == W, and
    the extra offsets took more registers).
    """
    b = tl.program_id(0)
    if tl.load(active_ptr + b).to(tl.int32) != 0:
        if not PADDED:
            S = W
        hw = H * S  # the plane stride
        ub, pb, gb, rb = _pair_planes(u_ptr, p_ptr, g_ptr, rho_ptr, b, hw)
        lane = tl.arange(0, BAND)
        bands = (hw + S + BAND - 1) // BAND  # the dual runs one row (S) behind the primal
        err = threshold
        n = 0
        go = n < steps
        while go:
            acc = tl.zeros([BAND], dtype=tl.float32)
            k = 0
            while k < bands:
                # ---- primal on pixels k*BAND + lane
                offs, col, m, em = _flat_band(k, lane, BAND, hw, S, W, PADDED)
                acc += _sweep_primal(ub, pb, gb, rb, hw, offs, S, m, m & (col > 0), m & (offs >= S), em, lt, theta)
                tl.debug_barrier()
                # ---- dual on the pixels one row (S) behind: same columns
                doffs = offs - S
                dm = (doffs >= 0) & (doffs < hw)
                _dual_update(ub, pb, hw, doffs, S, dm, dm & (col < W - 1), dm & (doffs < hw - S), tt)
                k += 1
            tl.debug_barrier()
            err = tl.sum(acc, axis=0)
            n += 1
            go = (err > threshold) & (n < steps)
        if n > 0:
            tl.store(active_ptr + b, err > threshold)


@triton.jit
def _sweep_fused_kernel(u_ptr, p_ptr, g_ptr, rho_ptr, active_ptr, H, W, steps, threshold, lt, theta, tt, S,
                         BAND: tl.constexpr, PADDED: tl.constexpr):
    """``_sweep_flat_kernel`` with one memory round trip per band step instead of two.

    In the flat sweep a band step is primal(band k), barrier, dual(the pixels one row behind): the dual
    reads the u the primal just wrote, so its loads wait for the primal's loads, arithmetic, stores and
    the barrier. Here the dual runs L = (BAND + S rounded up to a multiple of S, the row stride) pixels
    behind the primal:
    step k does primal(kB..kB+B-1) and dual(kB-L..kB+B-1-L), then one barrier. The dual's reads of u
    (at j, j+1, j+S <= kB-1) were all written by earlier steps' primals (before a barrier), and none are
    written in this step; the p it overwrites (<= kB-1-S) lies below what this step's and every later
    primal reads (p from kB-S on), and earlier primals read it before a barrier. So nothing in a step
    depends on anything else in it, and all its loads (13 values per pixel for the primal, 10 for the
    dual) are issued before any arithmetic waits on one. L is a multiple of S, so the dual's pixels share
    the primal's columns. Per pixel the arithmetic is the flat sweep's, in the same order: same flow.
    The cost: more values live at once (registers), and ceil(L/B) more band steps per iteration.
    """
    b = tl.program_id(0)
    if tl.load(active_ptr + b).to(tl.int32) != 0:
        if not PADDED:
            S = W
        hw = H * S  # the plane stride (rows S >= W pixels apart, as in _sweep_flat_kernel)
        ub, pb, gb, rb = _pair_planes(u_ptr, p_ptr, g_ptr, rho_ptr, b, hw)
        lane = tl.arange(0, BAND)
        lag = (BAND + S + S - 1) // S * S
        bands = (hw + lag + BAND - 1) // BAND
        err = threshold
        n = 0
        go = n < steps
        while go:
            acc = tl.zeros([BAND], dtype=tl.float32)
            k = 0
            while k < bands:
                offs, col, m, em = _flat_band(k, lane, BAND, hw, S, W, PADDED)
                doffs = offs - lag
                dm = (doffs >= 0) & (doffs < hw)
                right = dm & (col < W - 1)
                down = dm & (doffs < hw - S)
                # every load of the step first
                u0, u1, g0, g1, rc = _primal_loads(ub, gb, rb, hw, offs, m)
                p00, p00l, p01, p01u, p10, p10l, p11, p11u = _p_loads(pb, hw, offs, S, m, m & (col > 0), m & (offs >= S))
                a0, a1, a2, a3, a4 = _dual_loads(ub, pb, hw, doffs, S, dm, right, down, 0)
                b0, b1, b2, b3, b4 = _dual_loads(ub, pb, hw, doffs, S, dm, right, down, 1)
                # then the arithmetic and the stores
                div0, div1 = _div_from(p00, p00l, p01, p01u, p10, p10l, p11, p11u)
                n0, n1, e = _primal_from(u0, u1, g0, g1, rc, div0, div1, em, lt, theta)
                acc += e
                tl.store(ub + offs, n0, mask=m)
                tl.store(ub + hw + offs, n1, mask=m)
                _dual_store(pb, hw, doffs, dm, right, down, tt, a0, a1, a2, a3, a4, 0)
                _dual_store(pb, hw, doffs, dm, right, down, tt, b0, b1, b2, b3, b4, 1)
                tl.debug_barrier()  # the next step's dual reads the u this step's primal wrote
                k += 1
            err = tl.sum(acc, axis=0)
            n += 1
            go = (err > threshold) & (n < steps)
        if n > 0:
            tl.store(active_ptr + b, err > threshold)


MAX_SWEEP_WIDTH = 8192  # a band holds whole rows: wider images would need too many registers
SWEEP_BAND_PIXELS = 512  # pixels per band (a power of 2), 2 per thread (at 4 pixels per thread: 128 registers).
# Register cap passed to ptxas (None: its own choice). Occupancy is set by registers: as a launch compiles
# it for sm_90 (Triton 3.6; tests/test_tvl1.py pins the figures), the float32 rows sweep takes 40 registers
# at 224 px (6 programs of 8 warps per SM) but 56 at the pyramid's widths not divisible by 16 (4
# programs); capped at 48 those take 48 without spilling (5 programs) while 224 px rises to 48. Whether
# that is faster is for the GPU benchmark to say (bench/gpu_session.sh step tvl1-variants).
SWEEP_MAXNREG: int | None = None
# Band shape: "flat" (bands of 512 consecutive pixels: every lane busy at every pyramid width) or "rows"
# (bands of whole rows padded to a power of 2, the layout measured on the H100 in the fourth session).
# Same flow up to the order of the stopping error's sum. Flat is the default since the tenth session: on
# the H200, in one process, 1.10x the rows layout's pairs/s on bikes.mp4 pairs and 1.09x on synthetic ones
# (bench/results/gpu-2026-12-04/tvl1_variants.json), and the fastest exact variant end to end.
# "fused" (opt-in, eleventh session, 2026-12-07; not timed on a GPU yet): flat bands with the dual a band behind, so that a
# band step's loads all go out at once (_sweep_fused_kernel); same flow as "flat".
SWEEP_LAYOUT = "flat"
SWEEP_LAYOUTS = ("flat", "rows", "fused")
# Row stride of the flat and fused sweeps: W rounded up to a multiple of this (1: rows W apart, unpadded).
# At 16, a launch tells the compiler the stride is divisible by 16, so the offsets one row up or down are as
# aligned as the pixel's own, and the layout conversions (and their barriers) at widths not divisible by 16
# disappear. ptxas for sm_90 at 179 px: see docs/tvl1.md ("Aligned rows") and bench/tvl1_sweep_registers.py.
# The lanes on the padding (7% at 179 px, 11% at 114) compute values no pixel reads (so that the masks
# stay constant over aligned groups of lanes and the loads vectorise). Opt-in until timed on a GPU
# (bench/gpu_session.sh, step tvl1-variants); the flow is the same (tests/test_tvl1.py).
SWEEP_ROW_ALIGN = 1
# Pixels per thread in a band, both layouts (1 or 2; num_warps = band / (32 * this)). At 2, where W % 16 != 0 (four of the
# pyramid's five widths) the compiled flat sweep stores u and p through a 1-pixel-per-thread layout:
# 5 shared-memory conversions, 10 bar.sync per band step instead of 1 (read from its PTX for sm_90). At 1
# it compiles with no conversion, 4 bar.sync in all and 40 registers (16 warps a program). On the H200
# (flat layout): 1 pixel per thread ran bikes pairs 1.08x faster but synthetic pairs 0.91x and end to end
# 0.94x (1,002 vs 1,063 frames/s), so 2 stays the default.
SWEEP_PIXELS_PER_THREAD = 2


def sweep_row_stride(width: int) -> int:
    """Row stride (elements) the Triton sweep wants for images ``width`` pixels wide (``SWEEP_ROW_ALIGN``;
    the rows layout pads inside its own bands and always takes ``width``)."""
    if not isinstance(SWEEP_ROW_ALIGN, int) or SWEEP_ROW_ALIGN < 1:
        raise ValueError(f"tvl1_triton.SWEEP_ROW_ALIGN must be a positive int, got {SWEEP_ROW_ALIGN!r}")
    if SWEEP_LAYOUT == "rows":
        return width
    return -(-width // SWEEP_ROW_ALIGN) * SWEEP_ROW_ALIGN


def _band(band_pixels: int | None) -> int:
    band = band_pixels or SWEEP_BAND_PIXELS
    if band < 32 or band & (band - 1):
        raise ValueError(f"tvl1 triton backend: band_pixels must be a power of 2 >= 32, got {band}")
    return band


def sweep_layout(width: int, band_pixels: int | None = None) -> tuple[int, int, int]:
    """(ROWS, BLOCK_W, num_warps) of the "rows" layout for images ``width`` pixels wide: bands of whole
    rows, ~2 pixels per thread."""
    if width > MAX_SWEEP_WIDTH:
        raise ValueError(f"tvl1 triton backend: images wider than {MAX_SWEEP_WIDTH} px are not supported "
                         f"(got {width}); use backend='torch' or 'triton-grid'")
    band = _band(band_pixels)
    block_w = triton.next_power_of_2(width)
    rows = max(1, band // block_w)
    return rows, block_w, _num_warps(rows * block_w)


def flat_sweep_layout(band_pixels: int | None = None) -> tuple[int, int]:
    """(BAND, num_warps) of the "flat" layout (any width): ``SWEEP_PIXELS_PER_THREAD`` pixels per thread."""
    band = _band(band_pixels)
    return band, _num_warps(band)


def _num_warps(band: int) -> int:
    if SWEEP_PIXELS_PER_THREAD not in (1, 2):
        raise ValueError(f"tvl1_triton.SWEEP_PIXELS_PER_THREAD must be 1 or 2, got {SWEEP_PIXELS_PER_THREAD!r}")
    return min(32, max(1, band // (32 * SWEEP_PIXELS_PER_THREAD)))


def triton_sweep_block(
    u: torch.Tensor,
    p: torch.Tensor,
    i1w_grad: torch.Tensor,
    rho_c: torch.Tensor,
    inv_grad_sq: torch.Tensor | None,
    active: torch.Tensor,
    steps: int,
    epsilon_sq: float,
    lambda_theta: float,
    theta: float,
    tau_over_theta: float,
    width: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to ``steps`` iterations per pair in one launch; same contract as :func:`extractors.tvl1.masked_block`.

    All tensors must be contiguous: u, p and ``active`` (bool) are updated in place and returned.
    ``inv_grad_sq`` is not read: the kernel recomputes it from ``i1w_grad``. ``width``: the image width
    when the tensors' rows are padded (their last dimension is then the row stride, :func:`sweep_row_stride`;
    the padding's values never reach the image's pixels, and the kernel overwrites them); flat and fused
    layouts only.
    """
    for name, t in (("u", u), ("p", p), ("i1w_grad", i1w_grad), ("rho_c", rho_c), ("active", active)):
        if not t.is_contiguous():
            raise ValueError(f"triton_sweep_block: {name} must be contiguous")
    if p.numel() >= 2**31:
        raise ValueError(f"tvl1 triton backend: batch too large for 32-bit offsets ({tuple(p.shape)}); use smaller batches")
    b, _, h, stride = u.shape
    w = stride if width is None else width
    if not 0 < w <= stride:
        raise ValueError(f"triton_sweep_block: width {width} for rows of {stride}")
    if SWEEP_LAYOUT not in SWEEP_LAYOUTS:
        raise ValueError(f"tvl1_triton.SWEEP_LAYOUT must be one of {SWEEP_LAYOUTS}, got {SWEEP_LAYOUT!r}")
    # Scalars as Python floats: an int threshold (epsilon=0) would type the kernel's loop-carried error as
    # int32 and fail to compile.
    args = (u, p, i1w_grad, rho_c, active, h, w, steps, float(epsilon_sq * h * w), float(lambda_theta), float(theta),
            float(tau_over_theta))
    if SWEEP_LAYOUT in ("flat", "fused"):
        band, warps = flat_sweep_layout()
        kernel = _sweep_flat_kernel if SWEEP_LAYOUT == "flat" else _sweep_fused_kernel
        constexprs = {"BAND": band, "PADDED": stride != w}
        args += (stride,)
    elif stride != w:
        raise ValueError("triton_sweep_block: padded rows need the flat or fused layout")
    else:
        rows, block_w, warps = sweep_layout(w)
        kernel, constexprs = _sweep_kernel, {"ROWS": rows, "BLOCK_W": block_w}
    # num_stages=1: no software pipelining, so no load is hoisted above a barrier.
    options = {"num_warps": warps, "num_stages": 1}
    if SWEEP_MAXNREG:
        options["maxnreg"] = SWEEP_MAXNREG
    with LAUNCH_LOCK:
        kernel[(b,)](*args, **constexprs, **options)
    return u, p, active
