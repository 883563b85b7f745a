"""Unit tests of every CLIP-AE equation function, the UGCT losses, k-means and post-processing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.kmeans import align_clusters, kmeans
from models.layers.caf import (CrossAttentionFusion, attend, column_softmax, cross_correlation, dense_skip)
from models.layers.ccp import CrossViewCollaboration, concat_views, cross_view_attention
from models.layers.selfsup import (MemoryBank, audio_visual_decorrelation, decorrelation_loss,
                                   instance_discrimination_loss, self_supervised_loss)
from models.proposals import outer_inner_contrast, select_classes, soft_nms, threshold_runs
from models.ugct import pseudo_labels, topk_pool, uncertainty_collaborative_loss

torch.manual_seed(0)


def test_cross_correlation_eq1_shape_and_normalisation():
    a, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    lam = cross_correlation(a, v, torch.eye(8))
    assert lam.shape == (2, 5, 7)
    # with W = I it is the cosine similarity of audio snippet i and visual snippet l
    cos = torch.nn.functional.cosine_similarity(a[0, 3], v[0, 6], dim=0)
    assert torch.isclose(lam[0, 3, 6], cos, atol=1e-5)
    # scaling the inputs does not change it (L2-normalised before eq. 1)
    assert torch.allclose(cross_correlation(10 * a, 0.1 * v, torch.eye(8)), lam, atol=1e-5)


def test_column_softmax_columns_sum_to_one_and_ignore_padding():
    lam = torch.randn(2, 6, 4)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    a = column_softmax(lam, mask)
    assert torch.allclose(a.sum(1), torch.ones(2, 4), atol=1e-5)
    assert a[1, 4:].abs().max() < 1e-6


def test_attend_eq2_reweights_columns():
    x = torch.randn(1, 3, 4)
    a = torch.zeros(1, 3, 2)
    a[0, 1, 0] = 1.0                      # output 0 = input snippet 1
    a[0, :, 1] = 1.0 / 3                  # output 1 = mean of the inputs
    out = attend(x, a)
    assert out.shape == (1, 2, 4)
    assert torch.allclose(out[0, 0], x[0, 1])
    assert torch.allclose(out[0, 1], x[0].mean(0), atol=1e-6)


def test_dense_skip_eq3_is_tanh_of_sum():
    prev = [torch.randn(2, 3, 4) for _ in range(3)]
    att = torch.randn(2, 3, 4)
    out = dense_skip(prev, att)
    assert torch.allclose(out, torch.tanh(prev[0] + prev[1] + prev[2] + att))
    assert out.abs().max() < 1.0


def test_caf_module_two_stages_shapes_and_gradients():
    caf = CrossAttentionFusion(d_audio=6, d_cbp=10, d_x=8, stages=2)
    assert len(caf.w) == 2
    audio, cbp = torch.randn(2, 9, 6), torch.randn(2, 9, 10, requires_grad=True)
    xa, xv = caf(audio, cbp, torch.ones(2, 9, dtype=torch.bool))
    assert xa.shape == xv.shape == (2, 9, 8)
    assert xa.abs().max() <= 1.0 and xv.abs().max() <= 1.0   # tanh outputs
    (xa.sum() + xv.sum()).backward()
    assert cbp.grad is not None and all(w.grad is not None for w in caf.w)


def test_caf_silent_audio_stays_zero_with_bounded_gradients():
    """A video without audio (zero vectors, as prepare() and the store write it) must not blow up eq. 1's
    L2 normalisation: F.normalize has gradient 1e12 at 0 (it gave CAF a ~2e9 gradient norm in training)."""
    torch.manual_seed(0)
    caf = CrossAttentionFusion(d_audio=6, d_cbp=10, d_x=8, stages=2)
    audio = torch.randn(2, 9, 6)
    audio[1] = 0.0                                   # second video: silent
    audio[0, 6:] = 0.0                               # first video: its last snippets have no audio
    cbp = torch.randn(2, 9, 10, requires_grad=True)
    xa, xv = caf(audio, cbp, torch.ones(2, 9, dtype=torch.bool))
    assert torch.all(xa[1] == 0)                     # no audio in, no audio features out
    (xa.pow(2).sum() + xv.pow(2).sum()).backward()
    grads = [p.grad for p in caf.parameters()] + [cbp.grad]
    assert all(torch.isfinite(g).all() for g in grads)
    assert max(float(g.abs().max()) for g in grads) < 1e3


def test_caf_padding_does_not_change_real_snippets():
    caf = CrossAttentionFusion(4, 4, 8, 2).eval()
    a, v = torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    xa, xv = caf(a, v, torch.ones(1, 5, dtype=torch.bool))
    pa, pv = torch.cat([a, torch.randn(1, 3, 4)], 1), torch.cat([v, torch.randn(1, 3, 4)], 1)
    ya, yv = caf(pa, pv, torch.tensor([[True] * 5 + [False] * 3]))
    assert torch.allclose(ya[:, :5], xa, atol=1e-5) and torch.allclose(yv[:, :5], xv, atol=1e-5)


def test_concat_views_eq4():
    m = concat_views(torch.ones(2, 3, 4), torch.zeros(2, 3, 5))
    assert m.shape == (2, 3, 9) and m[..., :4].eq(1).all() and m[..., 4:].eq(0).all()


def test_cross_view_attention_eq5_rows_are_convex_combinations():
    q, k = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    v = torch.eye(6).expand(2, 6, 6)     # V = I exposes the attention matrix itself
    att = cross_view_attention(q, k, v)
    assert torch.allclose(att.sum(-1), torch.ones(2, 6), atol=1e-5)
    ref = torch.softmax(q @ k.transpose(1, 2) / np.sqrt(8), -1)
    assert torch.allclose(att, ref, atol=1e-5)
    masked = cross_view_attention(q, k, v, torch.tensor([[True] * 4 + [False] * 2] * 2))
    assert masked[..., 4:].abs().max() < 1e-6


def test_ccp_module_uses_both_views():
    ccp = CrossViewCollaboration(d_cbp=5, d_vlp=7, d=8)
    cbp, vlp = torch.randn(1, 4, 5), torch.randn(1, 4, 7, requires_grad=True)
    z_cbp, z_vlp = ccp(cbp, vlp, torch.ones(1, 4, dtype=torch.bool))
    assert z_cbp.shape == z_vlp.shape == (1, 4, 8)
    z_cbp.sum().backward()                # Z_CBP depends on VLP through Q, K (M = [X_CBP; X_VLP])
    assert vlp.grad.abs().sum() > 0


def test_decorrelation_eq7_zero_for_orthonormal_positive_otherwise():
    q, _ = torch.linalg.qr(torch.randn(16, 6))          # (L=16, d=6) with orthonormal columns
    assert decorrelation_loss(q[None]) < 1e-10
    assert decorrelation_loss(3.0 * q[None]) < 1e-10    # scale-free
    x = torch.randn(16, 1).repeat(1, 6)                 # all dimensions identical: maximally correlated
    assert decorrelation_loss(x[None]) > 0.5
    assert torch.isclose(audio_visual_decorrelation(q[None], x[None]), decorrelation_loss(x[None]))


def test_instance_discrimination_eq8_prefers_own_bank_entry():
    bank = MemoryBank(5, 4, momentum=0.5)
    z = torch.nn.functional.normalize(torch.randn(5, 4), dim=1)
    bank.bank.copy_(z)
    idx = torch.arange(5)
    good = instance_discrimination_loss(z, bank.bank, idx, tau=1.0)
    bad = instance_discrimination_loss(z, bank.bank, idx.roll(1), tau=1.0)
    assert good < bad
    # tau = 1 bounds the logits to [-1, 1]: the loss is within log(N) +- 2
    assert abs(float(good) - np.log(5)) <= 2.0
    ref = -torch.log_softmax(z @ bank.bank.t(), 1)[idx, idx].mean()
    assert torch.isclose(good, ref, atol=1e-6)


def test_memory_bank_momentum_update_stays_normalised():
    bank = MemoryBank(3, 4, momentum=0.5)
    before = bank.bank.clone()
    z = torch.nn.functional.normalize(torch.randn(1, 4), dim=1)
    bank.update(z, torch.tensor([1]))
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(bank.bank[0], before[0]) and not torch.equal(bank.bank[1], before[1])
    expected = torch.nn.functional.normalize(0.5 * before[1] + 0.5 * z[0], dim=0)
    assert torch.allclose(bank.bank[1], expected, atol=1e-6)


def test_self_supervised_loss_eq9_is_sum():
    assert float(self_supervised_loss(torch.tensor(1.5), torch.tensor(2.0))) == pytest.approx(3.5)


def test_topk_pool_respects_mask_and_k():
    s = torch.tensor([[[1.0], [5.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, True, False]])
    assert float(topk_pool(s, mask, ratio=0.67)) == pytest.approx(4.0)    # k = floor(3 * 0.67) = 2: (5 + 3) / 2
    assert float(topk_pool(s, mask, ratio=0.1)) == pytest.approx(5.0)     # k = 1


def test_pseudo_labels_and_uncertainty_weighting():
    att = torch.tensor([[0.1, 0.5, 0.9, 0.2]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    y, conf = pseudo_labels(att, mask, fg=0.7, bg=0.3)
    assert y.tolist() == [[0, 0, 1, 0]] and conf.tolist() == [[True, False, True, True]]
    grads = []
    for u in (torch.full((1, 4), -30.0), torch.tensor([[-30.0, -30.0, 3.0, -30.0]])):   # softplus: ~0 and ~3.05
        a = torch.tensor([[0.9, 0.5, 0.1, 0.5]], requires_grad=True)     # disagrees on snippet 2
        uncertainty_collaborative_loss(a, u, y, conf).backward()
        grads.append(a.grad[0].clone())
    # a large predicted uncertainty down-weights that snippet's pseudo label by exp(-u); others unchanged
    assert grads[1][2] / grads[0][2] == pytest.approx(np.exp(-np.log1p(np.exp(3.0))), rel=1e-4)
    assert grads[1][0] == pytest.approx(float(grads[0][0])) and grads[0][1] == 0


def test_kmeans_recovers_separated_clusters_and_alignment():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 5)) * 10
    x = np.concatenate([c + rng.normal(size=(30, 5)) for c in centers])
    truth = np.repeat(np.arange(4), 30)
    res = kmeans(x, 4, seed=1)
    assert len(np.unique(res.labels)) == 4
    aligned = align_clusters(res.labels, truth, 4)
    assert (aligned == truth).mean() == 1.0
    assert np.array_equal(kmeans(x, 4, seed=1).labels, res.labels)       # seeded


def test_kmeans_runs_lloyd_to_convergence():
    """Found at scale review: the convergence test held on the first pass (inf - inertia <= tol * inf), so
    every run (UTAL's clustering of each round included) stopped after ONE Lloyd iteration. A converged
    result is a fixed point: its centres are its clusters' means and every point is nearest to its own."""
    from models.kmeans import _sq_dists, centers_of

    x = np.random.default_rng(3).uniform(size=(600, 2))  # no clear clusters: one iteration is far from done
    for init in (None, np.random.default_rng(4).integers(0, 8, 600)):
        res = kmeans(x, 8, seed=0, restarts=2, init_labels=init)
        assert np.allclose(res.centers, centers_of(x, res.labels, 8), atol=1e-6)
        assert np.array_equal(_sq_dists(x, res.centers).argmin(1), res.labels)


def test_kmeans_warm_start_refines_the_previous_partition():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 5)) * 10
    x = np.concatenate([c + rng.normal(size=(30, 5)) for c in centers])
    truth = np.repeat(np.arange(4), 30)
    noisy = truth.copy()
    flip = rng.choice(len(x), 25, replace=False)
    noisy[flip] = rng.integers(0, 4, 25)
    res = kmeans(x, 4, init_labels=noisy)
    assert np.array_equal(res.labels, truth)       # misassigned points move, cluster ids are kept


def test_attention_weighted_video_features_focus_on_the_action():
    from models.data import VideoFeatures
    from models.kmeans import video_level_features
    t, proto, scene = 20, np.eye(6)[0], np.eye(6)[1]
    feats = np.tile(3 * scene, (t, 1))
    feats[5:9] += 10 * proto                       # a short action on a long scene
    v = VideoFeatures("v", {"x": feats}, 1.0)
    w = np.zeros(t)
    w[5:9] = 1.0
    uniform = video_level_features([v], ["x"])[0]
    pooled = video_level_features([v], ["x"], [w])[0]
    assert pooled @ proto > 0.9 > uniform @ proto


def test_proposal_helpers():
    seq = np.array([0, 0.9, 0.8, 0.1, 0.7, 0.7, 0])
    assert threshold_runs(seq, 0.5) == [(1, 2), (4, 5)]
    assert outer_inner_contrast(seq, 1, 2, 0.5) > 0.5
    assert select_classes(np.array([0.05, 0.6, 0.3]), 0.2, 3) == [1, 2]
    assert select_classes(np.array([0.05, 0.06, 0.03]), 0.2, 3) == [1]
    segs, sc = soft_nms(np.array([[0, 10], [0, 9.5], [20, 30]]), np.array([0.9, 0.8, 0.5]), 0.3, 10)
    assert sc[0] == pytest.approx(0.9) and segs[1].tolist() == [20, 30]
    assert sc[1] == pytest.approx(0.5)       # the distinct segment keeps its score
    assert sc[2] < 0.1                       # the near-duplicate decays


def test_detection_times_centre_overlapping_snippets():
    """On a grid of 16-frame windows every 4 frames at 30 fps, snippet i is centred at (4i + 8) / 30 s (the
    store's time coordinate); a run of snippets s..e owns [s, e + 1) strides around those centres. Segments
    started at s * stride / fps, 0.2 s early; a non-overlapping grid is unchanged."""
    from models.config import InferenceConfig
    from models.proposals import video_detections

    t = 300
    att = np.zeros(t, np.float32)
    att[100:150] = 1.0
    cas = np.stack([att, 1 - att], 1)
    cfg = InferenceConfig(thresholds=[0.5], max_proposals=1)
    seg = lambda *extra: video_detections(np.array([0.9, 0.1]), cas, att, 60.0, 4 / 30, cfg, str, *extra)[0]["segment"]  # noqa: E731
    assert seg() == pytest.approx([100 * 4 / 30, 150 * 4 / 30], abs=1e-3)  # (no offset given: the old placement)
    offset = (16 - 4) / (2 * 30)
    assert seg(offset) == pytest.approx([(100 * 4 + 8) / 30 - 2 / 30, (149 * 4 + 8) / 30 + 2 / 30], abs=1e-3)


def test_predict_passes_the_grids_centring_offset(tmp_path, monkeypatch):
    """predict gives video_detections (snippet_frames - stride) / 2 / fps: 0.16 s on 16-frame snippets every
    8 frames at 25 fps, 0 on the usual non-overlapping grid."""
    from models import predict as predict_mod
    from models import train as train_mod
    from models.data import InMemoryStore
    from storage.grid import SnippetGrid
    from tests._model_fixtures import tiny_config, tiny_problem

    ds, _, store = tiny_problem()
    res = train_mod.train(tiny_config(mode="weak", weak_epochs=1), store, ds, tmp_path)
    test = store.videos(ds.videos(ds.test_subset)[:2])
    seen = []
    real = predict_mod.video_detections
    monkeypatch.setattr(predict_mod, "video_detections", lambda *a: seen.append(a[-1]) or real(*a))
    for grid, offset in ((SnippetGrid(25.0, 16, 8), 0.16), (SnippetGrid(25.0, 16, 16), 0.0)):
        seen.clear()
        predict_mod.predict(res.checkpoint, InMemoryStore(test, grid), ds, videos=test, device="cpu")
        assert seen == [pytest.approx(offset)] * 2


def test_detections_past_the_end_are_clipped_or_dropped():
    """Features a little longer than the video (within the importer's tolerance) put the last runs' starts past
    the duration: a segment ending before it started made `evaluate` reject the whole file."""
    from models.config import InferenceConfig
    from models.proposals import video_detections

    att = np.zeros(255, np.float32)
    att[-1] = 1.0
    att[240:244] = 1.0
    cas = np.stack([att, 1 - att], 1)
    dets = video_detections(np.array([0.9, 0.1]), cas, att, 33.83, 4 / 30, InferenceConfig(thresholds=[0.5]), str,
                            0.2)
    assert dets and all(0.0 <= d["segment"][0] < d["segment"][1] <= 33.83 for d in dets)
