"""Batched TV-L1 optical flow in torch (CPU and GPU).

The Zach-Pock-Bischof duality-based TV-L1 method with coarse-to-fine pyramid and
warping, as described by Sánchez, Meinhardt-Llopis & Facciolo, "TV-L1 Optical Flow
Estimation", Image Processing On Line 3 (2013) 137-150, and structured like OpenCV's
``cv::optflow::DualTVL1OpticalFlow`` (same defaults, pyramid, discretisations, median
filtering and stopping rule) so that it can replace it in the I3D flow stream.

All B pairs of a batch advance together. A pair that meets the stopping criterion is
frozen exactly where OpenCV would stop (see ``_solve_warp``), so a pair's result does not
depend on what else is in its batch. Paper references name the step of the algorithm in
Sánchez et al. 2013 (section 2-3 and Algorithm 1 "TV-L1 optical flow") and of Zach et al.
2007; docs/tvl1.md maps them to OpenCV's function names.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from extractors.arrays import as_tensor
from extractors.tvl1_config import BACKENDS, I3D_FLOW_BOUND, STATE_DTYPE_NAMES, TVL1Config
from extractors.tvl1_ops import (
    build_pyramid,
    centered_gradient,
    divergence,
    forward_gradient,
    median_filter,
    median_of_shifts,
    resize_linear,
    warp_bicubic,
)

__all__ = [
    "TVL1Config", "tvl1_flow", "flow_to_i3d_input", "I3D_FLOW_BOUND", "tvl1_iteration", "masked_iteration",
    "masked_block", "BACKENDS", "STATE_DTYPES", "uses_torch_compile", "check_backend_device", "resolve_backend",
]

_FLT_EPSILON = 1.1920929e-07  # std::numeric_limits<float>::epsilon(), OpenCV's "gradient is zero" test
STATE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
assert tuple(STATE_DTYPES) == STATE_DTYPE_NAMES


# --------------------------------------------------------------------------- paper steps
def linearized_residual_constant(
    i0: torch.Tensor, i1w: torch.Tensor, i1w_grad: torch.Tensor, u0: torch.Tensor
) -> torch.Tensor:
    """Constant part of the linearised residual rho(u) = rho_c + grad I1(x+u0) . u.

    Sánchez et al. 2013, §2, linearisation of I1(x+u) around u0 (Taylor expansion):
    rho(u) = I1(x+u0) + grad I1(x+u0).(u - u0) - I0(x); returns rho_c = I1w - grad.u0 - I0.
    Shapes: i0, i1w (B, H, W); i1w_grad, u0 (B, 2, H, W) -> (B, 1, H, W).
    """
    return (i1w - (i1w_grad * u0).sum(dim=1) - i0).unsqueeze(1)


def thresholding_step(
    u: torch.Tensor, i1w_grad: torch.Tensor, rho_c: torch.Tensor, inv_grad_sq: torch.Tensor, lambda_theta: float
) -> torch.Tensor:
    """Pointwise minimiser v of the data term: the thresholding operator TH.

    Sánchez et al. 2013, §2 thresholding scheme (Zach et al. 2007, Prop. 2):
    v = u + lambda*theta*grad I1       if rho(u) < -lambda*theta*|grad I1|^2
    v = u - lambda*theta*grad I1       if rho(u) >  lambda*theta*|grad I1|^2
    v = u - rho(u) grad I1/|grad I1|^2 otherwise.
    The three cases are one clamp of -rho/|grad I1|^2 to [-lambda*theta, lambda*theta].
    ``inv_grad_sq`` is 1/max(|grad I1|^2, FLT_EPSILON) (OpenCV leaves v = u where the
    gradient vanishes; the two differ by < 2e-5 pixel there).
    """
    rho = rho_c + (i1w_grad * u).sum(dim=1, keepdim=True)
    step = (-rho * inv_grad_sq).clamp(-lambda_theta, lambda_theta)
    return u + step * i1w_grad


def primal_step(v: torch.Tensor, p: torch.Tensor, theta: float) -> torch.Tensor:
    """u = v + theta * div p.

    Sánchez et al. 2013, §2 (Zach et al. 2007, Prop. 1): solution of the ROF-type
    subproblem in u for fixed v, given the dual variable p. p: (B, 2, 2, H, W).
    """
    return v + theta * divergence(p)


def dual_step(p: torch.Tensor, u: torch.Tensor, tau_over_theta: float) -> torch.Tensor:
    """Chambolle's fixed-point update of the dual variable.

    Sánchez et al. 2013, §2 (Chambolle 2004 projection, as used by Zach et al. 2007):
    p <- (p + tau/theta grad u) / (1 + tau/theta |grad u|), per flow component.
    """
    g = forward_gradient(u)  # (B, 2, 2, H, W)
    norm = torch.sqrt((g * g).sum(dim=2, keepdim=True))
    return (p + tau_over_theta * g) / (1.0 + tau_over_theta * norm)


def stopping_error(u_new: torch.Tensor, u_old: torch.Tensor) -> torch.Tensor:
    """Sum over pixels of |u^{n+1} - u^n|^2 per pair, (B,).

    Sánchez et al. 2013, §3 stopping criterion: iterate while
    (1/N) sum |u^{n+1} - u^n|^2 > epsilon^2; OpenCV compares this sum with epsilon^2 * N.
    """
    d = u_new - u_old
    return (d * d).sum(dim=(1, 2, 3))


def tvl1_iteration(
    u: torch.Tensor,
    p: torch.Tensor,
    i1w_grad: torch.Tensor,
    rho_c: torch.Tensor,
    inv_grad_sq: torch.Tensor,
    lambda_theta: float,
    theta: float,
    tau_over_theta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One iteration of Sánchez et al. 2013, Algorithm 1 (inner loop): TH, u-, p-updates.

    Returns (u, p, per-pair stopping error). OpenCV's ``estimateV``, ``divergence`` +
    ``estimateU``, ``forwardGradient`` + ``estimateDualVariables`` in that order.
    p and i1w_grad may be stored as float16 (``TVL1Config.state_dtype``): they are read as float32,
    everything is computed in float32, and the new p is rounded to p's dtype.
    """
    p32 = p.float()
    v = thresholding_step(u, i1w_grad.float(), rho_c, inv_grad_sq, lambda_theta)
    u_new = primal_step(v, p32, theta)
    err = stopping_error(u_new, u)
    p_new = dual_step(p32, u_new, tau_over_theta).to(p.dtype)
    return u_new, p_new, err


def masked_iteration(
    u: torch.Tensor,
    p: torch.Tensor,
    i1w_grad: torch.Tensor,
    rho_c: torch.Tensor,
    inv_grad_sq: torch.Tensor,
    active: torch.Tensor,
    epsilon_sq: float,
    lambda_theta: float,
    theta: float,
    tau_over_theta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``tvl1_iteration`` applied only to pairs still ``active`` (B,) bool; returns new active.

    A pair stays active while its stopping error exceeds epsilon^2 * H * W (OpenCV's loop
    test). The threshold is formed here from the (symbolic) shape so that a compiled version
    sees the same constants at every pyramid level and does not recompile.
    """
    u_new, p_new, err = tvl1_iteration(u, p, i1w_grad, rho_c, inv_grad_sq, lambda_theta, theta, tau_over_theta)
    m = active.view(-1, 1, 1, 1)
    u_new = torch.where(m, u_new, u)
    p_new = torch.where(m.unsqueeze(-1), p_new, p)
    return u_new, p_new, active & (err > epsilon_sq * u.shape[-2] * u.shape[-1])


def masked_block(
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
    """``steps`` consecutive ``masked_iteration`` calls.

    Compiled, this is one call per block of iterations instead of one per iteration: on a GPU
    the per-iteration Python, guard and launch overhead (measured ~0.4 ms on an H100 host,
    twice the kernels' own time) otherwise bounds the solver.
    """
    for _ in range(steps):
        u, p, active = masked_iteration(
            u, p, i1w_grad, rho_c, inv_grad_sq, active, epsilon_sq, lambda_theta, theta, tau_over_theta
        )
    return u, p, active


@dataclass(frozen=True)
class _Kernels:
    block: object  # masked_block, its compiled version, or a Triton block
    median: object  # (u, ksize, active or None) -> median-filtered copy; inactive pairs pass through
    masked_always: bool  # compiled / Triton: always use the masked blocks (one call, no branch)
    persistent: bool = False  # block = a whole inner loop per pair, in place (see _solve_warp_persistent)
    # (stack (B,3,H,W), u, i0, grad dtype) -> (i1w_grad, rho_c) fused (Triton); None: warp_bicubic +
    # linearized_residual_constant
    warp: object = None
    # width -> row stride the persistent block wants (Triton flat sweeps: rows padded for aligned loads)
    row_stride: object = None


def _torch_median(core, u: torch.Tensor, ksize: int, active: torch.Tensor | None = None) -> torch.Tensor:
    filtered = median_filter(u, ksize, core=core)
    return filtered if active is None else torch.where(active.view(-1, 1, 1, 1), filtered, u)


_COMPILED: _Kernels | None = None


def _kernels(use_compile: bool, backend: str = "torch") -> _Kernels:
    """The iteration and median kernels. The Triton backends use no torch.compile (no warm-up, thread-safe)."""
    global _COMPILED
    if backend in ("triton", "triton-grid"):  # imports triton only when asked for
        from extractors.tvl1_triton import sweep_row_stride, triton_block, triton_sweep_block
        from extractors.tvl1_triton_median import triton_median_filter
        from extractors.tvl1_triton_warp import triton_warp_linearize

        if backend == "triton":
            return _Kernels(triton_sweep_block, triton_median_filter, True, persistent=True, warp=triton_warp_linearize,
                            row_stride=sweep_row_stride)
        return _Kernels(triton_block, triton_median_filter, True, warp=triton_warp_linearize)
    if not use_compile:
        return _Kernels(masked_block, partial(_torch_median, median_of_shifts), False)
    if _COMPILED is None:
        median = partial(_torch_median, torch.compile(median_of_shifts, dynamic=True))
        _COMPILED = _Kernels(torch.compile(masked_block, dynamic=True), median, True)
    return _COMPILED


def resolve_backend(cfg: TVL1Config, device: torch.device | str) -> str:
    """The backend ``tvl1_flow`` runs for ``cfg`` on ``device``: "auto" is triton on NVIDIA GPUs of
    compute capability >= 8.0 (where triton is installed, as it is with torch's CUDA wheels) and
    torch elsewhere."""
    if cfg.backend != "auto":
        return cfg.backend
    dev = torch.device(device)
    if dev.type != "cuda" or torch.version.hip is not None:  # (the kernels are laid out for NVIDIA warps)
        return "torch"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "torch"
    if torch.cuda.is_available() and torch.cuda.get_device_capability(dev) < (8, 0):
        return "torch"  # Triton 3 targets Ampere and newer
    return "triton"


def check_backend_device(cfg: TVL1Config, device: torch.device | str) -> None:
    """The Triton backends need a CUDA device (or Triton's interpreter, ``TRITON_INTERPRET=1``, as the tests use)."""
    dev = torch.device(device)
    if resolve_backend(cfg, dev) != "torch" and dev.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"TVL1Config.backend={cfg.backend!r} runs on a CUDA device, not {dev.type}; "
                         "use backend='torch' there")


def uses_torch_compile(cfg: TVL1Config, device: torch.device | str) -> bool:
    """Whether ``tvl1_flow`` with ``cfg`` on ``device`` runs torch.compile'd kernels.

    torch.compile is not safe to enter from several threads at once, so callers that run TV-L1 in
    parallel threads (extractors.pipeline with ``video_workers``) check this first.
    """
    if resolve_backend(cfg, device) != "torch":
        return False
    return cfg.compile if cfg.compile is not None else torch.device(device).type == "cuda"


# --------------------------------------------------------------------------- solver
def _solve_warp(
    u: torch.Tensor,
    p: torch.Tensor,
    i1w_grad: torch.Tensor,
    rho_c: torch.Tensor,
    inv_grad_sq: torch.Tensor | None,
    cfg: TVL1Config,
    check_every: int,
    kernels: _Kernels,
) -> None:
    """Inner/outer iterations of one warp, updating u (B,2,H,W) and p (B,2,2,H,W) in place.

    Per pair this is OpenCV's loop: before each of ``outer_iterations`` blocks, median-filter
    u; run up to ``inner_iterations`` iterations; stop the pair (both loops) once its
    stopping error <= epsilon^2 * H * W. Converged pairs are frozen by a mask and, every
    ``check_every`` iterations (a block; compiled, one call) and at the end of the inner loop,
    removed from the working set so no more work is spent on them. The mask makes the result
    independent of check_every.
    """
    if kernels.persistent:
        _solve_warp_persistent(u, p, i1w_grad, rho_c, inv_grad_sq, cfg, kernels)
        return
    h, w = u.shape[-2:]
    threshold = cfg.epsilon * cfg.epsilon * h * w
    lt = cfg.lambda_ * cfg.theta
    tt = cfg.tau / cfg.theta
    idx = torch.arange(u.shape[0], device=u.device)
    ua, pa, ga, ra, ia = u, p, i1w_grad, rho_c, inv_grad_sq
    active = None  # (Ba,) bool; None while every pair in the working set is known active
    for _ in range(cfg.outer_iterations):
        if cfg.median_filtering > 1:
            ua = kernels.median(ua, cfg.median_filtering)
        n = 0
        while n < cfg.inner_iterations:
            steps = min(check_every, cfg.inner_iterations - n)
            if kernels.masked_always:  # compiled: the whole block in one call
                if active is None:
                    active = torch.ones(ua.shape[0], dtype=torch.bool, device=ua.device)
                ua, pa, active = kernels.block(ua, pa, ga, ra, ia, active, steps, cfg.epsilon**2, lt, cfg.theta, tt)
            else:
                for _ in range(steps):
                    if active is None:
                        ua, pa, err = tvl1_iteration(ua, pa, ga, ra, ia, lt, cfg.theta, tt)
                        active = err > threshold
                    else:
                        ua, pa, active = masked_iteration(ua, pa, ga, ra, ia, active, cfg.epsilon**2, lt, cfg.theta, tt)
            n += steps
            # end of a block: drop the converged pairs from the working set
            keep = active.nonzero().squeeze(1)
            if keep.numel() < ua.shape[0]:
                done = (~active).nonzero().squeeze(1)
                u[idx[done]] = ua[done]
                p[idx[done]] = pa[done]
                idx, ua, pa = idx[keep], ua[keep], pa[keep]
                ga, ra, ia = ga[keep], ra[keep], ia[keep]
            active = None
            if idx.numel() == 0:
                return
    # (The Triton block updates in place: with no pair dropped, ua/pa may still be u/p themselves.)
    if ua.data_ptr() != u.data_ptr():
        u[idx] = ua
    if pa.data_ptr() != p.data_ptr():
        p[idx] = pa


def _solve_warp_persistent(
    u: torch.Tensor,
    p: torch.Tensor,
    i1w_grad: torch.Tensor,
    rho_c: torch.Tensor,
    inv_grad_sq: torch.Tensor | None,
    cfg: TVL1Config,
    kernels: _Kernels,
) -> None:
    """``_solve_warp`` for kernels that run a pair's whole inner loop in one launch (backend "triton").

    Same per-pair loop as OpenCV: a pair whose stopping error falls below the threshold leaves
    the inner loop and every later outer block (its median filter is masked out too). Converged
    pairs cost nothing in the kernel, so nothing is gathered; the host syncs once per outer block,
    only to stop early when every pair has converged.
    """
    g, rho, inv = i1w_grad.contiguous(), rho_c.contiguous(), inv_grad_sq
    active = torch.ones(u.shape[0], dtype=torch.bool, device=u.device)
    lt, tt = cfg.lambda_ * cfg.theta, cfg.tau / cfg.theta
    w = u.shape[-1]
    stride = kernels.row_stride(w) if kernels.row_stride is not None else w
    # Rows padded to the stride for the whole warp (copied in and out once: the sweep runs up to 300
    # iterations in between); the median filter works on the unpadded view.
    us, ps = u, p
    if stride != w:
        us, ps = F.pad(u, (0, stride - w)), F.pad(p, (0, stride - w))
        g, rho = F.pad(g, (0, stride - w)), F.pad(rho, (0, stride - w))
    for outer in range(cfg.outer_iterations):
        if cfg.median_filtering > 1:  # not for pairs that have converged (OpenCV's outer loop test)
            view = us[..., :w]
            view.copy_(kernels.median(view if us is u else view.contiguous(), cfg.median_filtering,
                                      None if outer == 0 else active))
        kernels.block(us, ps, g, rho, inv, active, cfg.inner_iterations, cfg.epsilon**2, lt, cfg.theta, tt,
                      **({} if us is u else {"width": w}))
        if outer + 1 < cfg.outer_iterations and not bool(active.any()):
            break
    if us is not u:
        u.copy_(us[..., :w])
        p.copy_(ps[..., :w])


def _solve_scale(
    i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, cfg: TVL1Config, check_every: int, kernels: _Kernels
) -> torch.Tensor:
    """All warps at one pyramid level (OpenCV ``procOneScale``); i0, i1 (B,H,W), u (B,2,H,W)."""
    b, h, w = i0.shape
    state = STATE_DTYPES[cfg.state_dtype]
    i1_grad = centered_gradient(i1)
    p = torch.zeros(b, 2, 2, h, w, dtype=state, device=u.device)
    stack = torch.cat((i1.unsqueeze(1), i1_grad), dim=1)  # warp I1, I1x, I1y together
    for _ in range(cfg.warps):
        if kernels.warp is not None:  # the same two steps in one kernel
            i1w_grad, rho_c = kernels.warp(stack, u, i0, state)
        else:
            warped = warp_bicubic(stack, u)
            # Stored gradient: rounded to the state dtype once; rho_c is formed from the rounded values
            # so that rho(u0) = I1w - I0 holds for the gradient the iterations actually use.
            i1w, i1w_grad = warped[:, 0], warped[:, 1:].to(state)
            rho_c = linearized_residual_constant(i0, i1w, i1w_grad.float(), u)
        inv_grad_sq = None  # the sweep kernel recomputes it
        if not kernels.persistent:
            g32 = i1w_grad.float()
            grad_sq = (g32 * g32).sum(dim=1, keepdim=True)
            inv_grad_sq = 1.0 / grad_sq.clamp(min=_FLT_EPSILON)
        _solve_warp(u, p, i1w_grad, rho_c, inv_grad_sq, cfg, check_every, kernels)
    return u


def _check_inputs(frames0: torch.Tensor, frames1: torch.Tensor, check_finite: bool = True) -> None:
    for name, t in (("frames0", frames0), ("frames1", frames1)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"tvl1_flow: {name} must be a torch.Tensor or numpy array, got {type(t).__name__}")
        if t.ndim != 3:
            raise ValueError(f"tvl1_flow: {name} must be (B, H, W) grayscale, got shape {tuple(t.shape)}")
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"tvl1_flow: {name} must hold real grey levels in [0, 255], got {t.dtype}")
        if check_finite and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            # (NaN/inf reached the warp as an index out of bounds, failing every pair of the batch)
            bad = (~torch.isfinite(t)).flatten(1).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(f"tvl1_flow: {name} holds NaN or inf values (pairs {bad[:10]}"
                             f"{' ...' if len(bad) > 10 else ''})")
    if frames0.shape != frames1.shape:
        raise ValueError(f"tvl1_flow: frames0 {tuple(frames0.shape)} and frames1 {tuple(frames1.shape)} differ in shape")
    if frames0.device != frames1.device:
        raise ValueError(f"tvl1_flow: frames0 on {frames0.device} but frames1 on {frames1.device}")
    b, h, w = frames0.shape
    if b == 0:
        raise ValueError("tvl1_flow: empty batch")
    if h < 3 or w < 3:
        raise ValueError(f"tvl1_flow: images must be at least 3x3, got {h}x{w}")


def _as_frames(x):
    """numpy frames as tensors (like the other extractors' entry points); anything else is left to the checks."""
    return as_tensor(x) if isinstance(x, np.ndarray) else x


def tvl1_flow(frames0: torch.Tensor | np.ndarray, frames1: torch.Tensor | np.ndarray,
              config: TVL1Config | None = None, *,
              check_finite: bool = True) -> torch.Tensor:
    """Dense TV-L1 flow from frames0 to frames1.

    frames0, frames1: (B, H, W) grayscale tensors or numpy arrays, values in [0, 255] (any real
    dtype; computed in float32) on any device. Returns (B, 2, H, W) float32 flow in pixels, channel 0 = x
    (right), 1 = y (down), such that frames1(x + flow(x)) ~ frames0(x) -- the convention of
    OpenCV's ``DualTVL1OpticalFlow.calc(frames0, frames1)``. NaN/inf frames are refused
    (``check_finite=False`` skips that pass, a device sync, for frames known finite).
    """
    frames0, frames1 = _as_frames(frames0), _as_frames(frames1)
    _check_inputs(frames0, frames1, check_finite)
    cfg = config or TVL1Config()
    device = frames0.device
    check_backend_device(cfg, device)
    check_every = cfg.check_every or (10 if device.type == "cuda" else 1)
    kernels = _kernels(uses_torch_compile(cfg, device), resolve_backend(cfg, device))
    # Triton launches on the thread's current device: make it the tensors' one (e.g. cuda:1).
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with torch.no_grad(), on_device:
        i0s = build_pyramid(frames0.to(torch.float32).unsqueeze(1), cfg.nscales, cfg.scale_step)
        i1s = build_pyramid(frames1.to(torch.float32).unsqueeze(1), cfg.nscales, cfg.scale_step)
        b = frames0.shape[0]
        h, w = i0s[-1].shape[-2:]
        u = torch.zeros(b, 2, h, w, dtype=torch.float32, device=device)
        for level in range(len(i0s) - 1, -1, -1):
            u = _solve_scale(i0s[level][:, 0], i1s[level][:, 0], u, cfg, check_every, kernels)
            if level > 0:
                # Zoom the flow to the next finer level and rescale its length (Sánchez et al. 2013, §3
                # multiscale approach; OpenCV: INTER_LINEAR resize to the finer size, then multiply by 1/scale_step).
                u = resize_linear(u, tuple(i0s[level - 1].shape[-2:])) * (1.0 / cfg.scale_step)
        return u


def flow_to_i3d_input(flow, bound: float = I3D_FLOW_BOUND) -> torch.Tensor:
    """Clip flow (pixels) to [-bound, bound] and scale to [-1, 1], the I3D flow-stream input.

    Equivalent to the usual "clip to [-20, 20], map to [0, 255] uint8 JPEG, map back to
    [-1, 1]" pipeline without the 8-bit quantisation and JPEG round trip.
    """
    if bound <= 0:
        raise ValueError(f"flow_to_i3d_input: bound must be > 0, got {bound}")
    x = as_tensor(flow)  # (numpy in, like the other entry points)
    if not x.is_floating_point():
        raise TypeError(f"flow_to_i3d_input: expected float flow in pixels, got {x.dtype}")
    return x.clamp(-bound, bound) / bound
