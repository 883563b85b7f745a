"""Typed configuration of the CLIP-AE model, its training and its inference, loaded from YAML.

ActionFormer style: one YAML file (configs/models/clipae.yaml) maps onto these dataclasses; CLI
switches only override fields. Unknown YAML keys are errors so typos never silently fall back to defaults.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from clipae import CONFIG_DIR
from clipae.fields import check_value

DEFAULT_CONFIG = CONFIG_DIR / "models" / "clipae.yaml"


@dataclass
class SwitchConfig:
    """Which CLIP-AE components are on. All off (and no audio/CLIP) is the two-stream UGCT baseline."""

    audio: bool = True     # load vggish (+ audio_mask); without CAF it is concatenated (to the I3D input, or
                           # beside CCP's output when CCP is on and CAF/CCP run side by side)
    clip: bool = True      # load clip_vitb16; without CCP it is concatenated to the (fused) CBP view
    caf: bool = True       # CLIP-AE eq. 1-3: audio fused into the CBP view (needs audio)
    ccp: bool = True       # CLIP-AE eq. 4-6: CBP/VLP cross-view collaboration (needs clip)
    selfsup: bool = True   # CLIP-AE eq. 7-9: L_self on the CAF / CCP outputs

    @property
    def caf_active(self) -> bool:
        return self.caf and self.audio

    @property
    def ccp_active(self) -> bool:
        return self.ccp and self.clip

    def describe(self) -> str:
        on = [n for n in ("audio", "clip", "caf", "ccp", "selfsup") if getattr(self, n)]
        return "+".join(on) if on else "baseline"


CAF_CCP = ("parallel", "series")


@dataclass
class ModelConfig:
    """Sizes of the network. d_x: CAF width (lee2021 uses 1024; 128 keeps CPU training fast)."""

    d_x: int = 128              # CAF modality-FC output width
    caf_stages: int = 2         # lee2021 t_e = 2
    caf_w_init_scale: float = 5.0   # W starts as scale*I: cosine similarities need a temperature to be non-uniform
    caf_out_norm: bool = False  # LayerNorm on the fused CAF view: fixes its common mode, not the mAP (docs/model.md)
    # How CAF and CCP are arranged (docs/model.md): "parallel" (CLIP-AE §2: CAF fuses audio into I3D while CCP
    # takes I3D and CLIP, "simultaneously"; the head sees both outputs) or "series" (CCP's CBP input is CAF's
    # fused view: what this project trained before 2026-12-04, kept to reproduce those runs).
    caf_ccp: str = "parallel"
    ccp_dim: int = 128          # d of Q/K/V in CCP (eq. 5-6)
    embed_dim: int = 128        # per-stream temporal embedding width (UGCT backbone)
    dropout: float = 0.5
    leaky_slope: float = 0.2


@dataclass
class LossConfig:
    """Loss weights (see docs/model.md for the reasoning behind each)."""

    topk_ratio: float = 0.125   # MIL top-k: k = max(1, T // 8) (STPN/BaS-Net/UGCT convention)
    w_base: float = 1.0         # MIL loss of the top-k pooled CAS (background class always positive)
    w_fg: float = 1.0           # MIL loss of the attention-pooled CAS (background class negative)
    w_bg: float = 1.0           # MIL loss of the (1 - attention)-pooled CAS (only the background class)
    w_guide: float = 1.0        # |attention - (1 - p_bg)| consistency
    w_sparse: float = 1e-3      # mean attention (background is most of a video)
    w_co: float = 1.0           # UGCT cross-stream pseudo-label loss, uncertainty weighted
    co_warmup_epochs: int = 3   # pseudo labels from an untrained stream are noise: ramp the weight in
    co_fg: float = 0.7          # min-max normalised partner attention above: pseudo foreground
    co_bg: float = 0.3          # ... below: pseudo background; in between: ignored (uncertain)
    w_self: float = 0.1         # weight of L_self (eq. 9) relative to the UGCT losses
    w_decor: float = 1.0        # inside L_self
    w_insdis: float = 1.0       # inside L_self
    tau: float = 1.0            # CLIP-AE: temperature of eq. 8 set to 1.0
    bank_momentum: float = 0.5  # memory bank m <- normalize(mu*m + (1-mu)*z) (NPID convention)


@dataclass
class TrainConfig:
    mode: str = "utal"          # "utal" (clusters as labels) or "weak" (real video labels)
    rounds: int = 3             # UTAL: cluster -> train -> re-cluster ... (rounds of training)
    epochs_per_round: int = 10
    weak_epochs: int = 20
    batch_size: int = 16
    max_len: int = 192          # training window in snippets (random consecutive crop; ju2023: 1000 THUMOS, 400 ANet; docs/model.md)
    lr: float = 1e-3
    weight_decay: float = 5e-4
    kmeans_restarts: int = 8
    kmeans_iters: int = 100
    # UTAL video-level clustering input (each pooled over time and L2-normalised, then concatenated).
    # Our choice (the CLIP-AE paper does not say what it clusters): the I3D streams and CLIP;
    # "clip_vitb16" is dropped automatically under --no-clip.
    cluster_features: list[str] = field(default_factory=lambda: ["i3d_rgb", "i3d_flow", "clip_vitb16"])
    # False: cluster on cluster_features whatever the switches, so ablation rows share their round-0 clusters
    # and differ only in their modules (`clipae ablate --same-cluster-input`; the features are read even when
    # the model does not use them). True (default): a switched-off input is not clustered on either.
    cluster_features_follow_switches: bool = True
    seed: int = 0
    device: str = "auto"        # "auto" -> cuda when available else cpu
    amp: bool = True            # used on CUDA only
    num_threads: int = 1        # torch CPU threads; 1: on the shared 2-core box 2 OpenMP threads were 3-6x slower (BENCHMARKS.md)
    progress: bool = True


@dataclass
class InferenceConfig:
    class_threshold: float = 0.1        # video-level (softmax) class score needed to localize a class
    max_classes: int = 3                # at most this many classes per video (the top one always kept)
    thresholds: list[float] = field(default_factory=lambda: [round(0.1 + 0.05 * i, 2) for i in range(17)])
    attention_weight: float = 0.5       # q_c = w*attention + (1-w)*normalised CAS_c
    oic_inflation: float = 0.25         # outer band = 25% of the proposal length each side (AutoLoc)
    video_score_weight: float = 0.2     # proposal score = OIC + w * video class score
    nms_sigma: float = 0.3              # Gaussian soft-NMS
    max_proposals: int = 100            # per video, after NMS
    min_score: float = 1e-3


@dataclass
class ClipAEConfig:
    switches: SwitchConfig = field(default_factory=SwitchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipAEConfig":
        return _build(cls, d or {}, "config")

    @classmethod
    def from_saved(cls, d: dict[str, Any]) -> "ClipAEConfig":
        """The config a checkpoint was trained with. Checkpoints from before ``model.caf_ccp`` existed were
        trained with CAF and CCP in series, so a saved config without the key means "series"."""
        d = dict(d or {})
        model = dict(d.get("model") or {})
        model.setdefault("caf_ccp", "series")
        return cls.from_dict({**d, "model": model})

    def replace(self, **sections: dict[str, Any]) -> "ClipAEConfig":
        """Copy with some fields of some sections overridden: ``cfg.replace(train={"rounds": 1})``."""
        d = self.to_dict()
        for sec, vals in sections.items():
            if sec not in d:
                raise KeyError(f"unknown config section {sec!r}")
            d[sec].update(vals)
        return ClipAEConfig.from_dict(d)


def _build(cls: type, d: dict[str, Any], where: str):
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, value in d.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = check_value(value, hints[name], f"{where}.{name}", coerce=True)
    obj = cls(**kwargs)
    _check(obj, where)
    return obj


def _check(obj: Any, where: str) -> None:
    def need(ok: bool, names: str, what: str) -> None:
        if not ok:
            raise ValueError(f"{where}: {names} must be {what}, got " + ", ".join(
                f"{n.strip()}={getattr(obj, n.strip())!r}" for n in names.split(",")))

    if isinstance(obj, TrainConfig):
        if obj.mode not in ("utal", "weak"):
            raise ValueError(f"{where}.mode: must be 'utal' or 'weak', got {obj.mode!r}")
        if obj.rounds < 1 or obj.epochs_per_round < 1 or obj.batch_size < 1 or obj.max_len < 8:
            raise ValueError(f"{where}: rounds, epochs_per_round, batch_size must be >= 1 and max_len >= 8")
        need(obj.weak_epochs >= 1, "weak_epochs", ">= 1")
        need(obj.kmeans_restarts >= 1 and obj.kmeans_iters >= 1, "kmeans_restarts, kmeans_iters", ">= 1")
        need(obj.lr > 0 and obj.weight_decay >= 0, "lr, weight_decay", "> 0 and >= 0")
        need(obj.seed >= 0, "seed", ">= 0")
        need(bool(obj.cluster_features), "cluster_features", "a non-empty list")
        need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", obj.device) is not None, "device", "auto, cpu, cuda or cuda:N")
    if isinstance(obj, ModelConfig):
        if obj.caf_stages < 1:
            raise ValueError(f"{where}.caf_stages must be >= 1")
        if obj.caf_ccp not in CAF_CCP:
            raise ValueError(f"{where}.caf_ccp must be one of {CAF_CCP}, got {obj.caf_ccp!r}")
        need(min(obj.d_x, obj.ccp_dim, obj.embed_dim) >= 1, "d_x, ccp_dim, embed_dim", ">= 1")
        need(0 <= obj.dropout < 1, "dropout", "in [0, 1)")
        need(obj.leaky_slope >= 0, "leaky_slope", ">= 0")
    if isinstance(obj, LossConfig):
        need(obj.tau > 0, "tau", "> 0 (the temperature divides the similarities)")
        need(0 < obj.topk_ratio <= 1, "topk_ratio", "in (0, 1]")
        weights = ("w_base", "w_fg", "w_bg", "w_guide", "w_sparse", "w_co", "w_self", "w_decor", "w_insdis")
        need(all(getattr(obj, w) >= 0 for w in weights), ", ".join(weights), ">= 0")
        need(0 <= obj.co_bg <= obj.co_fg <= 1, "co_bg, co_fg", "0 <= co_bg <= co_fg <= 1")
        need(obj.co_warmup_epochs >= 0 and 0 <= obj.bank_momentum <= 1, "co_warmup_epochs, bank_momentum",
             ">= 0 and in [0, 1]")
    if isinstance(obj, InferenceConfig):
        need(bool(obj.thresholds) and all(0 < t < 1 for t in obj.thresholds), "thresholds",
             "a non-empty list of numbers in (0, 1)")
        need(obj.nms_sigma > 0, "nms_sigma", "> 0")
        need(obj.max_proposals >= 1 and obj.max_classes >= 1, "max_proposals, max_classes", ">= 1")
        need(0 <= obj.attention_weight <= 1 and 0 <= obj.class_threshold <= 1, "attention_weight, class_threshold",
             "in [0, 1]")
        need(obj.oic_inflation >= 0, "oic_inflation", ">= 0")


def load_config(path: str | Path | None = None) -> ClipAEConfig:
    """Read a YAML config (default configs/models/clipae.yaml); missing keys take the dataclass defaults."""
    p = Path(path) if path else DEFAULT_CONFIG
    if not p.exists():
        raise FileNotFoundError(f"model config {p} not found")
    with open(p) as fh:
        data = yaml.safe_load(fh) or {}
    return ClipAEConfig.from_dict(data)
