"""Self-supervised cross-view learning: CLIP-AE §2.3 eq. 7-9."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def decorrelation_loss(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One term of CLIP-AE eq. 7: || X X^T - I ||^2 for X = (d x L) features of one video.

    x: (B, L, d). Each feature dimension (a row of the paper's X, a vector over the L snippets) is
    L2-normalised first so the identity is reachable whatever L and the feature scale are (the paper
    leaves the scale open); the squared Frobenius norm is divided by d^2 (a mean squared correlation) so
    the loss does not grow with width. Zero exactly when the dimensions are orthonormal over time.
    Mean over the batch.
    """
    if mask is not None:
        x = x * mask[:, :, None].to(x.dtype)
    xn = F.normalize(x.float(), dim=1)                        # unit norm over time per dimension
    gram = torch.bmm(xn.transpose(1, 2), xn)                 # (B, d, d) = X X^T in the paper's layout
    eye = torch.eye(gram.shape[-1], device=gram.device)
    return ((gram - eye) ** 2).mean(dim=(1, 2)).mean()


def audio_visual_decorrelation(x_audio: torch.Tensor, x_cbp: torch.Tensor,
                               mask: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP-AE eq. 7: L_de-cor = ||X_a X_a^T - I||^2 + ||X_cbp X_cbp^T - I||^2 on the CAF outputs."""
    return decorrelation_loss(x_audio, mask) + decorrelation_loss(x_cbp, mask)


def instance_discrimination_loss(z: torch.Tensor, bank: torch.Tensor, index: torch.Tensor,
                                 tau: float = 1.0) -> torch.Tensor:
    """One view's term of CLIP-AE eq. 8: -log exp(z+ . m+ / tau) / sum_i exp(z+ . m_i / tau).

    z: (B, d) L2-normalised pooled features of the batch videos; bank: (N, d) memory bank of that view
    (one entry per training video); index: (B,) each video's own entry, the positive. tau = 1.0 in the paper.
    """
    logits = z @ bank.t() / tau
    return F.cross_entropy(logits, index)


class MemoryBank(nn.Module):
    """Per-view memory bank with momentum updates (CLIP-AE §2.3, NPID-style), stored as a buffer."""

    def __init__(self, size: int, dim: int, momentum: float = 0.5) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("bank", F.normalize(torch.randn(size, dim), dim=1))

    @torch.no_grad()
    def update(self, z: torch.Tensor, index: torch.Tensor) -> None:
        new = self.momentum * self.bank[index] + (1.0 - self.momentum) * z.detach().float()
        self.bank[index] = F.normalize(new, dim=1)


def masked_average_pool(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CLIP-AE eq. 8's video-level z: average pooling of (B, T, d) snippet features over the real (``mask``
    True) snippets -> (B, d)."""
    m = mask[:, :, None].to(z.dtype)
    return (z * m).sum(1) / m.sum(1).clamp(min=1)


def cross_view_instance_discrimination(z_vlp: torch.Tensor, z_cbp: torch.Tensor, bank_vlp: MemoryBank,
                                       bank_cbp: MemoryBank, index: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """CLIP-AE eq. 8: L_ins-dis summed over the VLP and CBP views; z_*: (B, d) average-pooled Z_* (normalised here)."""
    zv, zc = F.normalize(z_vlp.float(), dim=1), F.normalize(z_cbp.float(), dim=1)
    return (instance_discrimination_loss(zv, bank_vlp.bank, index, tau)
            + instance_discrimination_loss(zc, bank_cbp.bank, index, tau))


def self_supervised_loss(l_decor: torch.Tensor, l_insdis: torch.Tensor,
                         w_decor: float = 1.0, w_insdis: float = 1.0) -> torch.Tensor:
    """CLIP-AE eq. 9: L_self = L_de-cor + L_ins-dis (the inner weights are 1 in the paper and by default).

    Against the paper's literal sum, our L_de-cor is a mean over the d^2 entries of X X^T - I
    (``decorrelation_loss``), i.e. the printed sum weighted by 1/d^2 (1/16,384 at d_x = 128). The literal sum
    is not usable: its CAF gradient was ~1e4 times all the other losses' together (docs/model.md, eq. 7)."""
    return w_decor * l_decor + w_insdis * l_insdis
