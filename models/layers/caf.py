"""Audio-visual Cross-Attention Fusion (CAF): CLIP-AE §2.1 eq. 1-3, which is lee2021 §3.1 eq. 1-3.

Layout: the papers write features as columns (d_x x L); here tensors are (B, L, d_x) and every
function states how its indices map onto the paper's. ``mask`` is (B, L) bool, True on real snippets
(batches are padded to the longest window).
"""
from __future__ import annotations

import torch
from torch import nn

NEG_INF = -1e4  # large negative instead of -inf: keeps fp16 softmax finite and all-masked rows defined


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Snippet-wise L2 normalisation for eq. 1 that maps a zero vector (a silent audio snippet) to zero
    with zero gradient. ``F.normalize`` divides by max(||x||, 1e-12) there, so its gradient at a zero
    vector is 1e12: one batch holding a silent video gave CAF a gradient norm of ~2e9 (docs/model.md)."""
    n = x.norm(dim=-1, keepdim=True)
    return torch.where(n > eps, x / n.clamp(min=eps), torch.zeros_like(x))


def cross_correlation(x_audio: torch.Tensor, x_cbp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """CLIP-AE eq. 1 / lee2021 eq. 1: Lambda = X_audio^T W X_CBP on L2-normalised snippet features.

    x_audio, x_cbp: (B, L, d); w: (d, d). Returns Lambda (B, L_audio, L_cbp): entry [i, l] relates
    audio snippet i to visual snippet l, so column l is visual snippet l against all audio snippets.
    A zero snippet (silent audio, padding) has a zero row / column: no correlation with anything.
    """
    a = l2_normalize(x_audio)
    v = l2_normalize(x_cbp)
    return torch.bmm(a @ w, v.transpose(1, 2))   # (a W) v^T: never materialise a (B, L, L, d) tensor


def column_softmax(lam: torch.Tensor, row_mask: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP-AE §2.1 / lee2021: soft-max over each column of Lambda (dim 1), so every column sums to 1.

    ``row_mask`` (B, L_rows) excludes padded rows from every column's distribution.
    """
    if row_mask is not None:
        lam = lam.masked_fill(~row_mask[:, :, None], NEG_INF)
    return torch.softmax(lam, dim=1)


def attend(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """CLIP-AE eq. 2 / lee2021 eq. 2: X~ = X A (columns re-weighted by the column-softmax weights).

    x: (B, L_rows, d), a: (B, L_rows, L_cols) with columns summing to 1. Returns (B, L_cols, d): output
    snippet l is sum_i A[i, l] x_i, i.e. this modality's snippets gathered for snippet l of the other one.
    """
    return torch.bmm(a.transpose(1, 2), x)


def dense_skip(previous: list[torch.Tensor], attended: torch.Tensor) -> torch.Tensor:
    """CLIP-AE eq. 3 / lee2021 eq. 3: X^(t) = tanh(sum_{i=0}^{t-1} X^(i) + X~^(t)), X^(0) = X."""
    return torch.tanh(torch.stack(previous, 0).sum(0) + attended)


def fuse_views(x_cbp: torch.Tensor, x_audio: torch.Tensor) -> torch.Tensor:
    """lee2021 eq. 4: the fused audio-visual feature, concatenated along the feature axis -> (B, L, 2 d_x).

    The paper writes [X_att,u; X_att,v] (audio first); we put the visual (CBP) view first, [X_cbp; X_audio].
    The next layer is a learned convolution, so the order changes nothing the model can learn."""
    return torch.cat([x_cbp, x_audio], dim=-1)


class CrossAttentionFusion(nn.Module):
    """Multi-stage dense cross attention between audio and the CBP (I3D) view.

    Modality-specific FC + LeakyReLU to d_x (lee2021 §4.2), then ``stages`` rounds of eq. 1-3 with one
    learnable W per stage. Returns the attended audio and CBP features (B, L, d_x) each; the caller
    concatenates them (lee2021 eq. 4) into the fused audio-visual CBP view.
    """

    def __init__(self, d_audio: int, d_cbp: int, d_x: int, stages: int = 2,
                 w_init_scale: float = 5.0, leaky_slope: float = 0.2) -> None:
        super().__init__()
        self.f_audio = nn.Sequential(nn.Linear(d_audio, d_x), nn.LeakyReLU(leaky_slope))
        self.f_cbp = nn.Sequential(nn.Linear(d_cbp, d_x), nn.LeakyReLU(leaky_slope))
        # W = scale * I (+ small noise): cosine similarities in [-1, 1] need a scale to give a non-flat softmax.
        self.w = nn.ParameterList(
            nn.Parameter(w_init_scale * torch.eye(d_x) + 0.01 * torch.randn(d_x, d_x)) for _ in range(stages)
        )
        for lin in (self.f_audio[0], self.f_cbp[0]):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, audio: torch.Tensor, cbp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # A snippet without audio arrives as a zero vector (models.data.prepare zeroes it where audio_mask is
        # False; silent videos are stored as zeros). It has no audio to fuse: its FC output is zeroed (the FC's
        # bias would otherwise turn "no audio" into a learned constant that the attention then attends to) and
        # it is excluded from the audio side of the attention. A wholly silent video's audio features thus
        # stay exactly zero through every stage; in a partly silent one, a silent position l receives, like
        # every position, the audible snippets' audio gathered for visual snippet l (eq. 2).
        has_audio = (audio.abs().amax(-1) > 0) & mask                      # (B, L)
        xa = [self.f_audio(audio) * has_audio[:, :, None].to(audio.dtype)]
        xv = [self.f_cbp(cbp)]
        for w in self.w:
            lam = cross_correlation(xa[-1], xv[-1], w)          # (B, La, Lv)
            a_audio = column_softmax(lam, has_audio)             # columns over (audible) audio snippets
            a_cbp = column_softmax(lam.transpose(1, 2), mask)    # columns over CBP snippets
            xa_t = dense_skip(xa, attend(xa[-1], a_audio))      # audio gathered for each visual snippet
            xv_t = dense_skip(xv, attend(xv[-1], a_cbp))
            xa.append(xa_t)
            xv.append(xv_t)
        return xa[-1], xv[-1]
