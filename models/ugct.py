"""The UTAL baseline: a two-stream (RGB / flow) UGCT-style weakly-supervised localizer.

What we implement of UGCT (Yang et al., TPAMI 2022; details and reasons in docs/model.md):
each stream has a temporal embedding, a class activation sequence (CAS, K action classes + background)
and a foreground attention; video classification is MIL top-k pooling of the CAS plus attention-
weighted foreground and background pooling (background-class modelling); the streams train collaboratively: each
stream's confident foreground/background snippets (its attention) are pseudo-labels for the other
stream's attention, down-weighted per snippet by a predicted uncertainty.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StreamHead(nn.Module):
    """Embedding (temporal conv) + CAS + attention + uncertainty heads for one stream."""

    def __init__(self, d_in: int, embed_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Conv1d(d_in, embed_dim, 3, padding=1), nn.ReLU(), nn.Dropout(dropout))
        self.cas = nn.Conv1d(embed_dim, num_classes + 1, 1)       # last channel: background
        self.attention = nn.Sequential(nn.Conv1d(embed_dim, embed_dim // 2, 3, padding=1), nn.ReLU(),
                                       nn.Conv1d(embed_dim // 2, 1, 1))
        self.uncertainty = nn.Conv1d(embed_dim, 1, 1)             # log-variance of the pseudo label

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        m = mask[:, :, None].to(x.dtype)
        h = self.embed((x * m).transpose(1, 2))                   # (B, E, T)
        h = h * m.transpose(1, 2)
        return {
            "embedding": h.transpose(1, 2),                       # (B, T, E)
            "cas": self.cas(h).transpose(1, 2),                   # (B, T, K+1) logits
            "attention": torch.sigmoid(self.attention(h)).squeeze(1),   # (B, T)
            "log_var": self.uncertainty(h).squeeze(1),            # (B, T)
        }


def topk_pool(scores: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """MIL top-k pooling: mean of each class's k = max(1, floor(ratio * T_valid)) highest snippet scores.

    scores: (B, T, C); mask: (B, T). Returns (B, C).
    """
    t_valid = mask.sum(1)
    k = torch.clamp((t_valid.float() * ratio).floor().long(), min=1)           # (B,)
    s = scores.masked_fill(~mask[:, :, None], float("-inf"))
    s_sorted = s.sort(dim=1, descending=True).values
    keep = (torch.arange(s.shape[1], device=s.device)[None, :] < k[:, None])  # (B, T)
    s_sorted = torch.where(keep[:, :, None], s_sorted, torch.zeros_like(s_sorted))
    return s_sorted.sum(1) / k[:, None].to(s_sorted.dtype)


def mil_loss(video_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the video softmax against the L1-normalised multi-hot target.

    The form of ju2023 eq. 1 (video-level cross-entropy), with two changes of the background-modelling
    family it is used in here (``mil_losses``): a background class (K+1 logits) and a target normalised to
    sum 1, so a video with several classes is not weighted by its class count."""
    t = target / target.sum(1, keepdim=True).clamp(min=1e-6)
    return -(t * F.log_softmax(video_logits.float(), dim=1)).sum(1).mean()


def attention_pool(cas: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted temporal mean of the CAS logits: (B, T, C), (B, T) -> (B, C)."""
    w = (weights.float() * mask)[:, :, None]
    return (cas.float() * w).sum(1) / w.sum(1).clamp(min=1e-6)


def mil_losses(out: dict[str, torch.Tensor], labels: torch.Tensor, mask: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Background-modelling MIL of the UGCT base localizer (WSAL-BM / BaS-Net family).

    base: CAS top-k                               -> target [y, 1] (untrimmed videos contain background);
    fg:   attention-weighted CAS pooling          -> target [y, 0];
    bg:   (1 - attention)-weighted CAS pooling    -> target [0, 1].
    fg and bg can only both hold if the attention separates action from background snippets.
    """
    b = labels.shape[0]
    ones, zeros = labels.new_ones(b, 1), labels.new_zeros(b, 1)
    att = out["attention"]
    base = mil_loss(topk_pool(out["cas"], mask, ratio), torch.cat([labels, ones], 1))
    fg = mil_loss(attention_pool(out["cas"], att, mask), torch.cat([labels, zeros], 1))
    bg = mil_loss(attention_pool(out["cas"], 1.0 - att, mask), torch.cat([torch.zeros_like(labels), ones], 1))
    return base, fg, bg


def guide_loss(out: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Attention should agree with the CAS foreground probability 1 - p_bg (UM / UGCT baseline)."""
    p_bg = torch.softmax(out["cas"].float(), dim=-1)[..., -1]
    diff = (out["attention"].float() - (1.0 - p_bg)).abs()
    return (diff * mask).sum() / mask.sum().clamp(min=1)


def sparsity_loss(out: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Mean attention: most snippets of an untrimmed video are background."""
    return (out["attention"].float() * mask).sum() / mask.sum().clamp(min=1)


def pseudo_labels(partner_attention: torch.Tensor, mask: torch.Tensor, fg: float, bg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """UGCT online pseudo labels from the partner stream: min-max normalise its attention per video;
    > fg -> 1, < bg -> 0, in between -> ignored. Returns (labels, confident mask)."""
    a = partner_attention.detach().float().masked_fill(~mask, float("nan"))
    lo = torch.nan_to_num(a, nan=float("inf")).amin(1, keepdim=True)
    hi = torch.nan_to_num(a, nan=float("-inf")).amax(1, keepdim=True)
    n = (a - lo) / (hi - lo).clamp(min=1e-6)
    n = torch.nan_to_num(n, nan=0.5)
    labels = (n > fg).float()
    confident = ((n > fg) | (n < bg)) & mask
    return labels, confident


def uncertainty_collaborative_loss(attention: torch.Tensor, log_var: torch.Tensor, labels: torch.Tensor,
                                   confident: torch.Tensor) -> torch.Tensor:
    """UGCT uncertainty-guided pseudo-label loss: exp(-u) * BCE(a, y) + u on confident snippets.

    u = softplus(predicted log-variance) >= 0, so the uncertainty can only down-weight a pseudo label
    (weight exp(-u) <= 1): snippets whose pseudo label the stream cannot fit get a large u and so a small
    weight; the ``+ u`` term stops u from growing without bound. (An unbounded-below u lets the two streams
    amplify their agreement without limit and the attention saturates.)
    """
    bce = F.binary_cross_entropy(attention.float().clamp(1e-6, 1 - 1e-6), labels, reduction="none")
    u = F.softplus(log_var.float()).clamp(max=10.0)
    per = torch.exp(-u) * bce + u
    c = confident.float()
    return (per * c).sum() / c.sum().clamp(min=1)
