"""CLIP-AE network: the two-stream UGCT baseline with CAF, CCP and the self-supervised losses plugged in.

Per stream s in {rgb, flow} (the CBP view is that stream's I3D features), as CLIP-AE §2 arranges them
(model.caf_ccp = "parallel", the default):
    audio-visual = CAF(audio, I3D_s) -> [X_cbp; X_audio]   (caf on)
    visual       = CCP(I3D_s, CLIP) -> [Z_cbp; Z_vlp]      (ccp on; "simultaneously" with CAF)
    UGCT head on [audio-visual; visual]: embedding, CAS, attention, uncertainty
"series" (before 2026-12-04) feeds CAF's output to CCP as its CBP view instead, and the head sees CCP's only.
Switch semantics (docs/model.md): audio without CAF is concatenated (lee2021's "naive fusion"), CLIP
without CCP likewise; with audio and CLIP off it is exactly the RGB/flow baseline.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import ClipAEConfig, LossConfig
from models.layers.caf import CrossAttentionFusion, fuse_views
from models.layers.ccp import CrossViewCollaboration
from models.layers.selfsup import (MemoryBank, audio_visual_decorrelation, cross_view_instance_discrimination,
                                   masked_average_pool,
                                   self_supervised_loss)
from models.ugct import (StreamHead, guide_loss, mil_losses, pseudo_labels, sparsity_loss,
                         uncertainty_collaborative_loss)

RGB, FLOW, CLIP, AUDIO, AUDIO_MASK = "i3d_rgb", "i3d_flow", "clip_vitb16", "vggish", "audio_mask"
STREAMS = (RGB, FLOW)


def required_features(cfg: ClipAEConfig) -> list[str]:
    feats = [RGB, FLOW]
    if cfg.switches.clip:
        feats.append(CLIP)
    if cfg.switches.audio:
        feats += [AUDIO, AUDIO_MASK]
    return feats


@dataclass
class FeatureDims:
    rgb: int = 1024
    flow: int = 1024
    clip: int = 512
    audio: int = 128

    def of(self, name: str) -> int:
        return {RGB: self.rgb, FLOW: self.flow, CLIP: self.clip, AUDIO: self.audio}[name]


class ClipAEStream(nn.Module):
    def __init__(self, cfg: ClipAEConfig, stream: str, dims: FeatureDims, num_classes: int) -> None:
        super().__init__()
        sw, mc = cfg.switches, cfg.model
        self.stream = stream
        self.parallel = mc.caf_ccp == "parallel"
        self.use_audio, self.use_clip = sw.audio, sw.clip
        d_cbp = dims.of(stream)
        self.caf = None
        self.caf_norm = None
        d_av = d_cbp + (dims.audio if sw.audio else 0)         # the CBP view, audio concatenated without CAF
        if sw.caf_active:
            self.caf = CrossAttentionFusion(dims.audio, d_cbp, mc.d_x, mc.caf_stages, mc.caf_w_init_scale, mc.leaky_slope)
            d_av = 2 * mc.d_x
            if mc.caf_out_norm:
                self.caf_norm = nn.LayerNorm(d_av)
        self.ccp = None
        if sw.ccp_active:
            self.ccp = CrossViewCollaboration(d_cbp if self.parallel else d_av, dims.clip, mc.ccp_dim)
            d = 2 * mc.ccp_dim
            if self.parallel:
                # Next to CCP (whose Z_cbp carries I3D through its residual) the head gets CAF's output, or
                # without CAF the plain audio, not the I3D features a second time.
                d += d_av if self.caf is not None else (dims.audio if sw.audio else 0)
        else:
            d = d_av + (dims.clip if sw.clip else 0)
        self.head = StreamHead(d, mc.embed_dim, num_classes, mc.dropout)

    def forward(self, batch: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x_cbp = batch[self.stream]
        aux: dict[str, torch.Tensor] = {}
        if self.caf is not None:
            xa, xv = self.caf(batch[AUDIO], x_cbp, mask)
            aux["caf_audio"], aux["caf_cbp"] = xa, xv
            av = fuse_views(xv, xa)                              # lee2021 eq. 4
            if self.caf_norm is not None:                        # model.caf_out_norm (off by default, docs/model.md)
                av = self.caf_norm(av)
        elif self.use_audio:
            av = torch.cat([x_cbp, batch[AUDIO]], dim=-1)
        else:
            av = x_cbp
        if self.ccp is None:
            x = torch.cat([av, batch[CLIP]], dim=-1) if self.use_clip else av
        else:
            z_cbp, z_vlp = self.ccp(x_cbp if self.parallel else av, batch[CLIP], mask)
            aux["z_cbp"], aux["z_vlp"] = z_cbp, z_vlp
            x = torch.cat([z_cbp, z_vlp], dim=-1)
            if self.parallel and self.caf is not None:
                x = torch.cat([av, x], dim=-1)
            elif self.parallel and self.use_audio:
                x = torch.cat([batch[AUDIO], x], dim=-1)
        out = self.head(x, mask)
        out.update(aux)
        return out


class ClipAENet(nn.Module):
    def __init__(self, cfg: ClipAEConfig, num_classes: int, dims: FeatureDims, num_train_videos: int) -> None:
        super().__init__()
        self.cfg, self.num_classes, self.dims = cfg, num_classes, dims
        self.streams = nn.ModuleDict({s: ClipAEStream(cfg, s, dims, num_classes) for s in STREAMS})
        self.banks = nn.ModuleDict()
        if cfg.switches.selfsup and cfg.switches.ccp_active:
            for s in STREAMS:
                for view in ("cbp", "vlp"):
                    self.banks[f"{s}_{view}"] = MemoryBank(max(num_train_videos, 1), cfg.model.ccp_dim,
                                                           cfg.loss.bank_momentum)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        mask = batch["mask"]
        return {s: self.streams[s](batch, mask) for s in STREAMS}

    # ------------------------------------------------------------------ losses
    def losses(self, outs: dict[str, dict[str, torch.Tensor]], labels: torch.Tensor, mask: torch.Tensor,
               index: torch.Tensor, co_weight: float) -> dict[str, torch.Tensor]:
        """All training losses (weighted per LossConfig); ``total`` is what is optimised."""
        lc: LossConfig = self.cfg.loss
        parts: dict[str, torch.Tensor] = {}
        total = labels.new_zeros(())
        for s, partner in ((RGB, FLOW), (FLOW, RGB)):
            o = outs[s]
            base, fg, bg = mil_losses(o, labels, mask, lc.topk_ratio)
            g, sp = guide_loss(o, mask), sparsity_loss(o, mask)
            y, conf = pseudo_labels(outs[partner]["attention"], mask, lc.co_fg, lc.co_bg)
            co = uncertainty_collaborative_loss(o["attention"], o["log_var"], y, conf)
            stream_total = lc.w_base * base + lc.w_fg * fg + lc.w_bg * bg + lc.w_guide * g + lc.w_sparse * sp + lc.w_co * co_weight * co
            parts[f"{s}/mil"] = (base + fg + bg).detach()
            parts[f"{s}/co"] = co.detach()
            if self.cfg.switches.selfsup:
                decor = insdis = labels.new_zeros(())
                if "caf_audio" in o:
                    decor = audio_visual_decorrelation(o["caf_audio"], o["caf_cbp"], mask)
                if "z_cbp" in o and len(self.banks):
                    z_cbp, z_vlp = masked_average_pool(o["z_cbp"], mask), masked_average_pool(o["z_vlp"], mask)
                    insdis = cross_view_instance_discrimination(z_vlp, z_cbp, self.banks[f"{s}_vlp"],
                                                                self.banks[f"{s}_cbp"], index, lc.tau)
                    o["_pooled"] = (z_cbp, z_vlp)
                l_self = self_supervised_loss(decor, insdis, lc.w_decor, lc.w_insdis)
                stream_total = stream_total + lc.w_self * l_self
                parts[f"{s}/self"] = l_self.detach()
            total = total + stream_total
        parts["total"] = total
        return parts

    @torch.no_grad()
    def update_banks(self, outs: dict[str, dict[str, torch.Tensor]], index: torch.Tensor) -> None:
        for s in STREAMS:
            if "_pooled" in outs[s]:
                z_cbp, z_vlp = outs[s]["_pooled"]
                self.banks[f"{s}_cbp"].update(nn.functional.normalize(z_cbp.float(), dim=1), index)
                self.banks[f"{s}_vlp"].update(nn.functional.normalize(z_vlp.float(), dim=1), index)

    # ------------------------------------------------------------------ inference views
    @staticmethod
    def fused_scores(outs: dict[str, dict[str, torch.Tensor]], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Average of the two streams: video class scores (B, K), snippet CAS probs (B, T, K), attention (B, T)."""
        from models.ugct import attention_pool
        video, cas, att = [], [], []
        for s in STREAMS:
            o = outs[s]
            a = o["attention"].float()
            video.append(torch.softmax(attention_pool(o["cas"], a, mask), dim=1)[:, :-1])
            cas.append(torch.softmax(o["cas"].float(), dim=-1)[..., :-1])
            att.append(a)
        return {"video": sum(video) / 2, "cas": sum(cas) / 2, "attention": sum(att) / 2}
