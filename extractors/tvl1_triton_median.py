"""k x k median filter of TV-L1's flow as Triton kernels (k = 3, 5), for the Triton backends.

The same selection network as :func:`extractors.tvl1_ops.median_of_shifts` (Batcher's odd-even
merge sort pruned to the middle output; OpenCV's ``medianBlur`` with replicate border), unrolled
into straight-line min/max code, so the Triton backends need no torch.compile: no compile warm-up
and safe to call from several threads at once. Pairs that are no longer active are copied through
(OpenCV stops median-filtering a pair once it has converged).

The kernels between the GENERATED markers are written by ``_generate()`` from
``tvl1_ops.median_network``; ``python -m extractors.tvl1_triton_median`` rewrites them, and a test
checks that they are in sync.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from extractors.tvl1_triton import LAUNCH_LOCK

__all__ = ["triton_median_filter"]

BLOCK = 1024  # pixels per program

# ---- GENERATED (python -m extractors.tvl1_triton_median) ----
@triton.jit
def _median3_kernel(u_ptr, out_ptr, active_ptr, C, H, W, BLOCK_SIZE: tl.constexpr):
    plane = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    inb = offs < H * W
    base = u_ptr + plane * H * W
    if tl.load(active_ptr + plane // C).to(tl.int32) != 0:
        row = offs // W
        col = offs - row * W
        ym1 = tl.minimum(tl.maximum(row + (-1), 0), H - 1) * W
        xm1 = tl.minimum(tl.maximum(col + (-1), 0), W - 1)
        yp0 = tl.minimum(tl.maximum(row + (0), 0), H - 1) * W
        xp0 = tl.minimum(tl.maximum(col + (0), 0), W - 1)
        yp1 = tl.minimum(tl.maximum(row + (1), 0), H - 1) * W
        xp1 = tl.minimum(tl.maximum(col + (1), 0), W - 1)
        w0 = tl.load(base + ym1 + xm1, mask=inb, other=0.0)
        w1 = tl.load(base + ym1 + xp0, mask=inb, other=0.0)
        w2 = tl.load(base + ym1 + xp1, mask=inb, other=0.0)
        w3 = tl.load(base + yp0 + xm1, mask=inb, other=0.0)
        w4 = tl.load(base + yp0 + xp0, mask=inb, other=0.0)
        w5 = tl.load(base + yp0 + xp1, mask=inb, other=0.0)
        w6 = tl.load(base + yp1 + xm1, mask=inb, other=0.0)
        w7 = tl.load(base + yp1 + xp0, mask=inb, other=0.0)
        w8 = tl.load(base + yp1 + xp1, mask=inb, other=0.0)
        w0, w1 = tl.minimum(w0, w1), tl.maximum(w0, w1)
        w2, w3 = tl.minimum(w2, w3), tl.maximum(w2, w3)
        w4, w5 = tl.minimum(w4, w5), tl.maximum(w4, w5)
        w6, w7 = tl.minimum(w6, w7), tl.maximum(w6, w7)
        w0, w2 = tl.minimum(w0, w2), tl.maximum(w0, w2)
        w1, w3 = tl.minimum(w1, w3), tl.maximum(w1, w3)
        w4, w6 = tl.minimum(w4, w6), tl.maximum(w4, w6)
        w5, w7 = tl.minimum(w5, w7), tl.maximum(w5, w7)
        w1, w2 = tl.minimum(w1, w2), tl.maximum(w1, w2)
        w5, w6 = tl.minimum(w5, w6), tl.maximum(w5, w6)
        w0, w4 = tl.minimum(w0, w4), tl.maximum(w0, w4)
        w1, w5 = tl.minimum(w1, w5), tl.maximum(w1, w5)
        w2, w6 = tl.minimum(w2, w6), tl.maximum(w2, w6)
        w3 = tl.minimum(w3, w7)
        w2, w4 = tl.minimum(w2, w4), tl.maximum(w2, w4)
        w3, w5 = tl.minimum(w3, w5), tl.maximum(w3, w5)
        w2 = tl.maximum(w1, w2)
        w3, w4 = tl.minimum(w3, w4), tl.maximum(w3, w4)
        w5 = tl.minimum(w5, w6)
        w8 = tl.maximum(w0, w8)
        w4 = tl.minimum(w4, w8)
        w4 = tl.maximum(w2, w4)
        w3 = tl.minimum(w3, w5)
        w4 = tl.maximum(w3, w4)
        res = w4
    else:
        res = tl.load(base + offs, mask=inb, other=0.0)
    tl.store(out_ptr + plane * H * W + offs, res, mask=inb)


@triton.jit
def _median5_kernel(u_ptr, out_ptr, active_ptr, C, H, W, BLOCK_SIZE: tl.constexpr):
    plane = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    inb = offs < H * W
    base = u_ptr + plane * H * W
    if tl.load(active_ptr + plane // C).to(tl.int32) != 0:
        row = offs // W
        col = offs - row * W
        ym2 = tl.minimum(tl.maximum(row + (-2), 0), H - 1) * W
        xm2 = tl.minimum(tl.maximum(col + (-2), 0), W - 1)
        ym1 = tl.minimum(tl.maximum(row + (-1), 0), H - 1) * W
        xm1 = tl.minimum(tl.maximum(col + (-1), 0), W - 1)
        yp0 = tl.minimum(tl.maximum(row + (0), 0), H - 1) * W
        xp0 = tl.minimum(tl.maximum(col + (0), 0), W - 1)
        yp1 = tl.minimum(tl.maximum(row + (1), 0), H - 1) * W
        xp1 = tl.minimum(tl.maximum(col + (1), 0), W - 1)
        yp2 = tl.minimum(tl.maximum(row + (2), 0), H - 1) * W
        xp2 = tl.minimum(tl.maximum(col + (2), 0), W - 1)
        w0 = tl.load(base + ym2 + xm2, mask=inb, other=0.0)
        w1 = tl.load(base + ym2 + xm1, mask=inb, other=0.0)
        w2 = tl.load(base + ym2 + xp0, mask=inb, other=0.0)
        w3 = tl.load(base + ym2 + xp1, mask=inb, other=0.0)
        w4 = tl.load(base + ym2 + xp2, mask=inb, other=0.0)
        w5 = tl.load(base + ym1 + xm2, mask=inb, other=0.0)
        w6 = tl.load(base + ym1 + xm1, mask=inb, other=0.0)
        w7 = tl.load(base + ym1 + xp0, mask=inb, other=0.0)
        w8 = tl.load(base + ym1 + xp1, mask=inb, other=0.0)
        w9 = tl.load(base + ym1 + xp2, mask=inb, other=0.0)
        w10 = tl.load(base + yp0 + xm2, mask=inb, other=0.0)
        w11 = tl.load(base + yp0 + xm1, mask=inb, other=0.0)
        w12 = tl.load(base + yp0 + xp0, mask=inb, other=0.0)
        w13 = tl.load(base + yp0 + xp1, mask=inb, other=0.0)
        w14 = tl.load(base + yp0 + xp2, mask=inb, other=0.0)
        w15 = tl.load(base + yp1 + xm2, mask=inb, other=0.0)
        w16 = tl.load(base + yp1 + xm1, mask=inb, other=0.0)
        w17 = tl.load(base + yp1 + xp0, mask=inb, other=0.0)
        w18 = tl.load(base + yp1 + xp1, mask=inb, other=0.0)
        w19 = tl.load(base + yp1 + xp2, mask=inb, other=0.0)
        w20 = tl.load(base + yp2 + xm2, mask=inb, other=0.0)
        w21 = tl.load(base + yp2 + xm1, mask=inb, other=0.0)
        w22 = tl.load(base + yp2 + xp0, mask=inb, other=0.0)
        w23 = tl.load(base + yp2 + xp1, mask=inb, other=0.0)
        w24 = tl.load(base + yp2 + xp2, mask=inb, other=0.0)
        w0, w1 = tl.minimum(w0, w1), tl.maximum(w0, w1)
        w2, w3 = tl.minimum(w2, w3), tl.maximum(w2, w3)
        w4, w5 = tl.minimum(w4, w5), tl.maximum(w4, w5)
        w6, w7 = tl.minimum(w6, w7), tl.maximum(w6, w7)
        w8, w9 = tl.minimum(w8, w9), tl.maximum(w8, w9)
        w10, w11 = tl.minimum(w10, w11), tl.maximum(w10, w11)
        w12, w13 = tl.minimum(w12, w13), tl.maximum(w12, w13)
        w14, w15 = tl.minimum(w14, w15), tl.maximum(w14, w15)
        w16, w17 = tl.minimum(w16, w17), tl.maximum(w16, w17)
        w18, w19 = tl.minimum(w18, w19), tl.maximum(w18, w19)
        w20, w21 = tl.minimum(w20, w21), tl.maximum(w20, w21)
        w22, w23 = tl.minimum(w22, w23), tl.maximum(w22, w23)
        w0, w2 = tl.minimum(w0, w2), tl.maximum(w0, w2)
        w1, w3 = tl.minimum(w1, w3), tl.maximum(w1, w3)
        w4, w6 = tl.minimum(w4, w6), tl.maximum(w4, w6)
        w5, w7 = tl.minimum(w5, w7), tl.maximum(w5, w7)
        w8, w10 = tl.minimum(w8, w10), tl.maximum(w8, w10)
        w9, w11 = tl.minimum(w9, w11), tl.maximum(w9, w11)
        w12, w14 = tl.minimum(w12, w14), tl.maximum(w12, w14)
        w13, w15 = tl.minimum(w13, w15), tl.maximum(w13, w15)
        w16, w18 = tl.minimum(w16, w18), tl.maximum(w16, w18)
        w17, w19 = tl.minimum(w17, w19), tl.maximum(w17, w19)
        w20, w22 = tl.minimum(w20, w22), tl.maximum(w20, w22)
        w21, w23 = tl.minimum(w21, w23), tl.maximum(w21, w23)
        w1, w2 = tl.minimum(w1, w2), tl.maximum(w1, w2)
        w5, w6 = tl.minimum(w5, w6), tl.maximum(w5, w6)
        w9, w10 = tl.minimum(w9, w10), tl.maximum(w9, w10)
        w13, w14 = tl.minimum(w13, w14), tl.maximum(w13, w14)
        w17, w18 = tl.minimum(w17, w18), tl.maximum(w17, w18)
        w21, w22 = tl.minimum(w21, w22), tl.maximum(w21, w22)
        w0, w4 = tl.minimum(w0, w4), tl.maximum(w0, w4)
        w1, w5 = tl.minimum(w1, w5), tl.maximum(w1, w5)
        w2, w6 = tl.minimum(w2, w6), tl.maximum(w2, w6)
        w3, w7 = tl.minimum(w3, w7), tl.maximum(w3, w7)
        w8, w12 = tl.minimum(w8, w12), tl.maximum(w8, w12)
        w9, w13 = tl.minimum(w9, w13), tl.maximum(w9, w13)
        w10, w14 = tl.minimum(w10, w14), tl.maximum(w10, w14)
        w11, w15 = tl.minimum(w11, w15), tl.maximum(w11, w15)
        w16, w20 = tl.minimum(w16, w20), tl.maximum(w16, w20)
        w17, w21 = tl.minimum(w17, w21), tl.maximum(w17, w21)
        w18, w22 = tl.minimum(w18, w22), tl.maximum(w18, w22)
        w19, w23 = tl.minimum(w19, w23), tl.maximum(w19, w23)
        w2, w4 = tl.minimum(w2, w4), tl.maximum(w2, w4)
        w3, w5 = tl.minimum(w3, w5), tl.maximum(w3, w5)
        w10, w12 = tl.minimum(w10, w12), tl.maximum(w10, w12)
        w11, w13 = tl.minimum(w11, w13), tl.maximum(w11, w13)
        w18, w20 = tl.minimum(w18, w20), tl.maximum(w18, w20)
        w19, w21 = tl.minimum(w19, w21), tl.maximum(w19, w21)
        w1, w2 = tl.minimum(w1, w2), tl.maximum(w1, w2)
        w3, w4 = tl.minimum(w3, w4), tl.maximum(w3, w4)
        w5, w6 = tl.minimum(w5, w6), tl.maximum(w5, w6)
        w9, w10 = tl.minimum(w9, w10), tl.maximum(w9, w10)
        w11, w12 = tl.minimum(w11, w12), tl.maximum(w11, w12)
        w13, w14 = tl.minimum(w13, w14), tl.maximum(w13, w14)
        w17, w18 = tl.minimum(w17, w18), tl.maximum(w17, w18)
        w19, w20 = tl.minimum(w19, w20), tl.maximum(w19, w20)
        w21, w22 = tl.minimum(w21, w22), tl.maximum(w21, w22)
        w0, w8 = tl.minimum(w0, w8), tl.maximum(w0, w8)
        w1, w9 = tl.minimum(w1, w9), tl.maximum(w1, w9)
        w2, w10 = tl.minimum(w2, w10), tl.maximum(w2, w10)
        w3, w11 = tl.minimum(w3, w11), tl.maximum(w3, w11)
        w4, w12 = tl.minimum(w4, w12), tl.maximum(w4, w12)
        w5, w13 = tl.minimum(w5, w13), tl.maximum(w5, w13)
        w6, w14 = tl.minimum(w6, w14), tl.maximum(w6, w14)
        w7 = tl.minimum(w7, w15)
        w16, w24 = tl.minimum(w16, w24), tl.maximum(w16, w24)
        w4, w8 = tl.minimum(w4, w8), tl.maximum(w4, w8)
        w5, w9 = tl.minimum(w5, w9), tl.maximum(w5, w9)
        w6, w10 = tl.minimum(w6, w10), tl.maximum(w6, w10)
        w7, w11 = tl.minimum(w7, w11), tl.maximum(w7, w11)
        w20, w24 = tl.minimum(w20, w24), tl.maximum(w20, w24)
        w2, w4 = tl.minimum(w2, w4), tl.maximum(w2, w4)
        w3, w5 = tl.minimum(w3, w5), tl.maximum(w3, w5)
        w6, w8 = tl.minimum(w6, w8), tl.maximum(w6, w8)
        w7, w9 = tl.minimum(w7, w9), tl.maximum(w7, w9)
        w10, w12 = tl.minimum(w10, w12), tl.maximum(w10, w12)
        w11, w13 = tl.minimum(w11, w13), tl.maximum(w11, w13)
        w18, w20 = tl.minimum(w18, w20), tl.maximum(w18, w20)
        w19, w21 = tl.minimum(w19, w21), tl.maximum(w19, w21)
        w22, w24 = tl.minimum(w22, w24), tl.maximum(w22, w24)
        w1, w2 = tl.minimum(w1, w2), tl.maximum(w1, w2)
        w3, w4 = tl.minimum(w3, w4), tl.maximum(w3, w4)
        w5, w6 = tl.minimum(w5, w6), tl.maximum(w5, w6)
        w7, w8 = tl.minimum(w7, w8), tl.maximum(w7, w8)
        w9, w10 = tl.minimum(w9, w10), tl.maximum(w9, w10)
        w11, w12 = tl.minimum(w11, w12), tl.maximum(w11, w12)
        w13 = tl.minimum(w13, w14)
        w17, w18 = tl.minimum(w17, w18), tl.maximum(w17, w18)
        w19, w20 = tl.minimum(w19, w20), tl.maximum(w19, w20)
        w21, w22 = tl.minimum(w21, w22), tl.maximum(w21, w22)
        w23, w24 = tl.minimum(w23, w24), tl.maximum(w23, w24)
        w16 = tl.maximum(w0, w16)
        w17 = tl.maximum(w1, w17)
        w18 = tl.maximum(w2, w18)
        w19 = tl.maximum(w3, w19)
        w20 = tl.maximum(w4, w20)
        w21 = tl.maximum(w5, w21)
        w6 = tl.minimum(w6, w22)
        w7 = tl.minimum(w7, w23)
        w8 = tl.minimum(w8, w24)
        w16 = tl.maximum(w8, w16)
        w17 = tl.maximum(w9, w17)
        w10 = tl.minimum(w10, w18)
        w11 = tl.minimum(w11, w19)
        w12 = tl.minimum(w12, w20)
        w13 = tl.minimum(w13, w21)
        w10 = tl.maximum(w6, w10)
        w11 = tl.maximum(w7, w11)
        w12 = tl.minimum(w12, w16)
        w13 = tl.minimum(w13, w17)
        w12 = tl.maximum(w10, w12)
        w11 = tl.minimum(w11, w13)
        w12 = tl.maximum(w11, w12)
        res = w12
    else:
        res = tl.load(base + offs, mask=inb, other=0.0)
    tl.store(out_ptr + plane * H * W + offs, res, mask=inb)
# ---- END GENERATED ----

_KERNELS = {3: "_median3_kernel", 5: "_median5_kernel"}


def triton_median_filter(u: torch.Tensor, ksize: int, active: torch.Tensor | None = None) -> torch.Tensor:
    """k x k median (replicate border) of each channel of u (B, C, H, W) float32; pairs with ``active`` False pass through.

    Same contract as :func:`extractors.tvl1_ops.median_filter` (a new tensor).
    """
    if ksize not in _KERNELS:
        raise ValueError(f"triton_median_filter: ksize must be 3 or 5, got {ksize}")
    if u.dtype != torch.float32 or u.ndim != 4:
        raise ValueError(f"triton_median_filter: u must be (B, C, H, W) float32, got {tuple(u.shape)} {u.dtype}")
    u = u.contiguous()
    b, c, h, w = u.shape
    if active is None:
        active = torch.ones(b, dtype=torch.bool, device=u.device)
    out = torch.empty_like(u)
    grid = (b * c, triton.cdiv(h * w, BLOCK))
    with LAUNCH_LOCK:
        globals()[_KERNELS[ksize]][grid](u, out, active, c, h, w, BLOCK_SIZE=BLOCK)
    return out


def _generate() -> str:
    """Source of the two kernels, unrolled from ``median_network``."""
    from extractors.tvl1_ops import median_network

    parts = []
    for k in sorted(_KERNELS):
        r = k // 2
        lines = [
            "@triton.jit",
            f"def {_KERNELS[k]}(u_ptr, out_ptr, active_ptr, C, H, W, BLOCK_SIZE: tl.constexpr):",
            "    plane = tl.program_id(0)",
            "    offs = tl.program_id(1) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)",
            "    inb = offs < H * W",
            "    base = u_ptr + plane * H * W",
            "    if tl.load(active_ptr + plane // C).to(tl.int32) != 0:",
            "        row = offs // W",
            "        col = offs - row * W",
        ]
        for d in range(-r, r + 1):
            s = f"{d:+d}".replace("+", "p").replace("-", "m")
            lines.append(f"        y{s} = tl.minimum(tl.maximum(row + ({d}), 0), H - 1) * W")
            lines.append(f"        x{s} = tl.minimum(tl.maximum(col + ({d}), 0), W - 1)")
        wire = 0
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                sy = f"{dy:+d}".replace("+", "p").replace("-", "m")
                sx = f"{dx:+d}".replace("+", "p").replace("-", "m")
                lines.append(f"        w{wire} = tl.load(base + y{sy} + x{sx}, mask=inb, other=0.0)")
                wire += 1
        for op, i, j in median_network(k * k):
            if op == "ce":
                lines.append(f"        w{i}, w{j} = tl.minimum(w{i}, w{j}), tl.maximum(w{i}, w{j})")
            elif op == "min":
                lines.append(f"        w{i} = tl.minimum(w{i}, w{j})")
            elif op == "max":
                lines.append(f"        w{j} = tl.maximum(w{i}, w{j})")
            else:  # "mov"
                lines.append(f"        w{i} = w{j}")
        lines += [
            f"        res = w{(k * k) // 2}",
            "    else:",
            "        res = tl.load(base + offs, mask=inb, other=0.0)",
            "    tl.store(out_ptr + plane * H * W + offs, res, mask=inb)",
        ]
        parts.append("\n".join(lines))
    return "\n\n\n".join(parts) + "\n"


_BEGIN = "# ---- GENERATED (python -m extractors.tvl1_triton_median) ----\n"
_END = "# ---- END GENERATED ----\n"


def _span(text: str) -> tuple[int, int]:
    return text.index(_BEGIN) + len(_BEGIN), text.index(_END)


def _current() -> str:
    from pathlib import Path

    text = Path(__file__).read_text()
    start, end = _span(text)
    return text[start:end]


if __name__ == "__main__":
    from pathlib import Path

    path = Path(__file__)
    text = path.read_text()
    start, end = _span(text)
    path.write_text(text[:start] + _generate() + text[end:])
    print(f"wrote {path}")
