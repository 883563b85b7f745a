"""Registers, spills and barriers of every TV-L1 sweep kernel variant, compiled for the H100/H200 (sm_90)
on any machine: Triton's real compiler and its bundled ptxas, with the facts a launch gives the compiler
(16-byte aligned pointers, W and H marked divisible by 16 when they are). No GPU needed.

    python bench/tvl1_sweep_registers.py [--widths 224,179,143,114,91] [--json OUT]

Registers set how many programs fit on an SM (64K registers: an 8-warp program at <= 40 -> 6, 48 -> 5,
56-64 -> 4, 72-80 -> 3; a 16-warp one at 40 -> 3, 48-64 -> 2); tests/test_tvl1.py pins some of these.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {  # name -> (layout, pixels per thread, register cap, row alignment (tvl1_triton.SWEEP_ROW_ALIGN))
    "rows": ("rows", 2, None, 1), "rows_r48": ("rows", 2, 48, 1), "flat": ("flat", 2, None, 1),
    "flat1": ("flat", 1, None, 1), "flat_a16": ("flat", 2, None, 16), "fused": ("fused", 2, None, 1),
    "fused1": ("fused", 1, None, 1), "fused_a16": ("fused", 2, None, 16), "fused1_a16": ("fused", 1, None, 16),
    # the capped variants bench/gpu_session.sh times (tvl1-variants)
    "fused_a16_r48": ("fused", 2, 48, 16), "fused1_a16_r40": ("fused", 1, 40, 16),
}


def compile_sweep(layout: str, ppt: int, cap: int | None, width: int, state: str, height: int | None = None,
                  align: int = 1) -> dict:
    """Compile one sweep variant for sm_90 as a launch at ``width`` x ``height`` (default square) with rows
    padded to a multiple of ``align`` would; ptxas's figures."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    from extractors import tvl1_triton as T

    st = "*fp32" if state == "float32" else "*fp16"
    sig = {"u_ptr": "*fp32", "p_ptr": st, "g_ptr": st, "rho_ptr": "*fp32", "active_ptr": "*i1", "H": "i32",
           "W": "i32", "steps": "i32", "threshold": "fp32", "lt": "fp32", "theta": "fp32", "tt": "fp32"}
    ints = {"H": height or width, "W": width, "steps": 30, "S": -(-width // align) * align}
    with mock.patch.object(T, "SWEEP_PIXELS_PER_THREAD", ppt):
        if layout == "rows":
            rows, block_w, warps = T.sweep_layout(width)
            fn, const = T._sweep_kernel, {"ROWS": rows, "BLOCK_W": block_w}
        else:
            band, warps = T.flat_sweep_layout()
            fn = T._sweep_flat_kernel if layout == "flat" else T._sweep_fused_kernel
            const = {"BAND": band, "PADDED": ints["S"] != width}
            sig["S"] = "i32"
    sig.update({k: "constexpr" for k in const})
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(sig)
             if sig[n].startswith("*") or (n in ints and ints[n] % 16 == 0)}
    options = {"num_warps": warps, "num_stages": 1, **({"maxnreg": cap} if cap else {})}
    compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32), options=options)
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([get_ptxas(90).path, "-v", "--gpu-name", "sm_90a", str(src), "-o", str(Path(d) / "o")],
                           capture_output=True, text=True, timeout=300, check=True)
    regs = max(int(n) for n in re.findall(r"Used (\d+) registers", r.stderr))
    spill = max(int(n) for n in re.findall(r"(\d+) bytes spill stores", r.stderr))
    per_sm = min(65536 // (max(regs, 1) * 32 * warps) if regs else 0, 64 // warps, 32)
    return {"registers": regs, "spill_bytes": spill, "num_warps": warps, "programs_per_sm": per_sm,
            "warps_per_sm": per_sm * warps, "bar_sync_in_ptx": ptx.count("bar.sync"),
            "global_loads_in_ptx": len(re.findall(r"ld\.global", ptx))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="224,179,143,114,91", help="pyramid widths (square images)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--states", default="float32,float16")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = []
    for name in args.variants.split(","):
        layout, ppt, cap, align = VARIANTS[name]
        for state in args.states.split(","):
            for w in (int(x) for x in args.widths.split(",")):
                row = {"variant": name, "state": state, "width": w, **compile_sweep(layout, ppt, cap, w, state, align=align)}
                out.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
