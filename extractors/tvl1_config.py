"""TV-L1 settings, free of torch so that configs, the CLI and outside readers load fast.

The solver lives in extractors/tvl1.py, which re-exports these names.
"""
from __future__ import annotations

from dataclasses import dataclass

from clipae.fields import check_fields

I3D_FLOW_BOUND = 20.0  # pixels; the I3D flow stream clips flow to [-20, 20] and maps it to [-1, 1]
BACKENDS = ("auto", "torch", "triton", "triton-grid")
#: Storage types of the solver's state (extractors/tvl1.py maps them to torch dtypes).
STATE_DTYPE_NAMES = ("float32", "float16")


@dataclass(frozen=True)
class TVL1Config:
    """Parameters; defaults are those of ``cv2.optflow.DualTVL1OpticalFlow_create()``."""

    tau: float = 0.25  # time step of the dual (Chambolle) iteration
    lambda_: float = 0.15  # weight of the data term
    theta: float = 0.3  # coupling between u and v
    nscales: int = 5  # pyramid levels
    warps: int = 5  # warpings (re-linearisations) per level
    epsilon: float = 0.01  # stopping threshold on the RMS flow change per iteration
    inner_iterations: int = 30
    outer_iterations: int = 10  # median filtering runs before each block of inner iterations
    scale_step: float = 0.8  # zoom factor between pyramid levels
    gamma: float = 0.0  # illumination term of OpenCV's extension; only 0 is supported
    median_filtering: int = 5  # median kernel size; 0 or 1 disables it (OpenCV accepts 3 or 5)
    check_every: int | None = None  # iterations between host syncs that drop converged pairs;
    # None: 1 on CPU (syncs are free), 10 on CUDA. Results do not depend on it.
    compile: bool | None = None  # torch.compile the iteration and median kernels (backend "torch");
    # None: on for CUDA, off for CPU (compiling costs 1-3 min of CPU once per process).
    backend: str = "auto"  # "triton": each pair's inner loop in one Triton program, one launch per
    # block of inner iterations; "triton-grid": two fused Triton kernels per iteration
    # (extractors/tvl1_triton.py; CUDA, or Triton's interpreter on CPU); "torch": plain torch ops.
    # "auto": triton on CUDA (3.6-5.0x the compiled torch path on an H100, no compile warm-up;
    # BENCHMARKS.md), torch elsewhere; see resolve_backend. Results do not depend on it beyond float rounding.
    state_dtype: str = "float32"  # "float16": store the dual variable p (|p| <= 1) and the warped
    # gradient grad I1(x+u0) as float16; u, rho_c and all arithmetic stay float32. The Triton sweep then
    # moves 40 instead of 60 bytes per pixel and iteration. Accuracy kept (bench/study_tvl1_storage.py:
    # EPE 1.004x OpenCV's, same iteration counts); the flow moves 1.2-2.2x as much as OpenCV's and our float32
    # flow differ (BENCHMARKS.md), so it is part of the feature hash. Opt-in: on the H200 it ran 1.08x the
    # float32 end to end (1,152 vs 1,063 frames/s), too little to change the default features for.

    def __post_init__(self) -> None:
        check_fields(self, "tvl1")  # (types first: a YAML "5" for a count, "no" for a switch)
        positive = {"tau": self.tau, "lambda_": self.lambda_, "theta": self.theta, "scale_step": self.scale_step}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"TVL1Config.{name} must be > 0, got {value}")
        if not self.scale_step < 1:
            raise ValueError(f"TVL1Config.scale_step must be < 1, got {self.scale_step}")
        if self.epsilon < 0:
            raise ValueError(f"TVL1Config.epsilon must be >= 0, got {self.epsilon}")
        for name in ("nscales", "warps", "inner_iterations", "outer_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"TVL1Config.{name} must be >= 1, got {getattr(self, name)}")
        if self.gamma != 0.0:
            raise ValueError("TVL1Config.gamma must be 0: the illumination term is not implemented")
        if self.median_filtering not in (0, 1, 3, 5):
            raise ValueError(f"TVL1Config.median_filtering must be 0, 1, 3 or 5, got {self.median_filtering}")
        if self.backend not in BACKENDS:
            raise ValueError(f"TVL1Config.backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        if self.state_dtype not in STATE_DTYPE_NAMES:
            raise ValueError(f"TVL1Config.state_dtype must be one of {', '.join(STATE_DTYPE_NAMES)}; got {self.state_dtype!r}")
        if self.check_every is not None and self.check_every < 1:
            raise ValueError(f"TVL1Config.check_every must be >= 1 or None, got {self.check_every}")
