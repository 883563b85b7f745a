"""Diagnostics for the CAF -> CCP interaction (issue 4): what the views carry, before and after training.

For each variant (an ablation row, optionally with config overrides) and seed: train UTAL on the synthetic
THUMOS features, evaluate mAP, and measure on the test videos

* attention AUC (snippet-level, against ground-truth action snippets) per stream and fused;
* linear-probe AUC of "is this snippet inside an action" (ridge regression fitted on training-video
  snippets, scored on test-video snippets) for each intermediate view of the RGB stream: the CBP view
  that enters CCP (raw I3D, or the CAF output), Z_CBP, Z_VLP and the head's embedding;
* scale statistics of those views (RMS per dimension, fraction of tanh-saturated CAF units);
* the gradient norm reaching each module on one training batch.

    .venv/bin/python bench/diag_views.py --variants ccp caf+ccp --seeds 0 --rounds 2 --epochs 4 --json out.json
Variant syntax: ROW[:section.key=value,section.key=value] e.g. "caf+ccp:model.caf_w_init_scale=1.0".
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def auc(score: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata
    pos, neg = y.sum(), (1 - y).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def snippet_labels(ds, v) -> np.ndarray:
    from models.synthetic import segment_snippets
    t = v.num_snippets
    y = np.zeros(t, dtype=np.int64)
    for s in ds.annotations(v.video_id).segments:
        if s.label in ds.classes:
            a, b = segment_snippets(s.start, s.end, ds.grid.snippet_seconds, t)
            y[a:b] = 1
    return y


def capture(model, items, device):
    """Per video: the RGB stream's CCP input (CBP view), Z_cbp, Z_vlp, head input, embedding; fused attention."""
    from models.data import collate
    rgb = model.streams["i3d_rgb"]
    store: dict[str, torch.Tensor] = {}
    hooks = []
    if rgb.ccp is not None:
        hooks.append(rgb.ccp.register_forward_hook(
            lambda m, args, out: store.update(cbp=args[0], vlp=args[1], z_cbp=out[0], z_vlp=out[1])))
    hooks.append(rgb.head.register_forward_hook(lambda m, args, out: store.update(head_in=args[0])))
    res = []
    model.eval()
    with torch.no_grad():
        for it in items:
            batch = collate([it], device)
            outs = model(batch)
            r = {k: v[0].float().cpu().numpy() for k, v in store.items()}
            r["embedding"] = outs["i3d_rgb"]["embedding"][0].float().cpu().numpy()
            r["att_rgb"] = outs["i3d_rgb"]["attention"][0].float().cpu().numpy()
            r["att_flow"] = outs["i3d_flow"]["attention"][0].float().cpu().numpy()
            res.append(r)
    for h in hooks:
        h.remove()
    return res


def probe_auc(train_x, train_y, test_x, test_y, lam=10.0) -> float:
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (train_y - train_y.mean()))
    return auc(b @ w, test_y)


def view_report(model, train_v, test_v, ds, device, names, max_snippets=40000):
    from models.data import prepare
    rng = np.random.default_rng(0)
    tr = capture(model, [prepare(v, names) for v in train_v], device)
    te = capture(model, [prepare(v, names) for v in test_v], device)
    ytr = [snippet_labels(ds, v) for v in train_v]
    yte = [snippet_labels(ds, v) for v in test_v]
    rep: dict = {}
    y_all = np.concatenate(yte)
    rep["att_auc_rgb"] = auc(np.concatenate([r["att_rgb"] for r in te]), y_all)
    rep["att_auc_flow"] = auc(np.concatenate([r["att_flow"] for r in te]), y_all)
    rep["att_auc_fused"] = auc(np.concatenate([(r["att_rgb"] + r["att_flow"]) / 2 for r in te]), y_all)
    for key in ("cbp", "vlp", "z_cbp", "z_vlp", "head_in", "embedding"):
        if key not in tr[0]:
            continue
        xtr, ylab = np.concatenate([r[key] for r in tr]), np.concatenate(ytr)
        xte = np.concatenate([r[key] for r in te])
        i = rng.permutation(len(xtr))[:max_snippets]
        j = rng.permutation(len(xte))[:max_snippets]
        rep[f"probe_{key}"] = probe_auc(xtr[i], ylab[i].astype(float), xte[j], y_all[j])
        rep[f"rms_{key}"] = float(np.sqrt((xte ** 2).mean()))
        if key == "cbp":
            rep["frac_sat_cbp"] = float((np.abs(xte) > 0.95).mean())
    return rep


def grad_norms(model, items, targets, cfg, device) -> dict:
    from models.data import collate, random_window
    rng = np.random.default_rng(0)
    idx = np.arange(min(16, len(items)))
    batch = collate([random_window(items[i], cfg.train.max_len, rng) for i in idx], device)
    model.train()
    outs = model(batch)
    parts = model.losses(outs, torch.from_numpy(targets[idx]).to(device), batch["mask"], torch.from_numpy(idx).long(), 1.0)
    model.zero_grad()
    parts["total"].backward()
    res = {}
    rgb = model.streams["i3d_rgb"]
    for name, mod in (("caf", rgb.caf), ("ccp", rgb.ccp), ("head", rgb.head)):
        if mod is not None:
            g = [p.grad.norm() ** 2 for p in mod.parameters() if p.grad is not None]
            res[f"grad_{name}"] = float(torch.stack(g).sum().sqrt()) if g else 0.0
    if rgb.ccp is not None:
        res["grad_ccp_v_cbp"] = float(rgb.ccp.v_cbp.weight.grad.norm())
        res["grad_ccp_v_vlp"] = float(rgb.ccp.v_vlp.weight.grad.norm())
    model.zero_grad()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["ccp", "caf+ccp"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--dims", choices=["full", "small"], default="full")
    ap.add_argument("--videos-per-subset", type=int, default=0)
    ap.add_argument("--init-only", action="store_true", help="views of the untrained model only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/diag_views")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from models.ablation import ROWS
    from models.config import load_config
    from models.data import feature_dims, prepare
    from models.network import ClipAENet, required_features
    from models.predict import predict
    from models.scoring import evaluate_predictions
    from models.synthetic import synthetic_problem
    from models.train import _one_hot, train
    from storage.datasets import load_dataset

    ds = load_dataset("thumos14")
    store, train_v, test_v = synthetic_problem(ds, args.dims, args.videos_per_subset)
    results = []
    for variant in args.variants:
        row, _, over = variant.partition(":")
        for seed in args.seeds:
            cfg = load_config().replace(switches=ROWS[row].__dict__)
            cfg = cfg.replace(train={"rounds": args.rounds, "epochs_per_round": args.epochs, "seed": seed,
                                     "device": args.device, "num_threads": args.threads, "progress": False})
            for kv in filter(None, over.split(",")):
                key, value = kv.split("=", 1)
                sec, f = key.split(".", 1)
                cfg = cfg.replace(**{sec: {f: yaml.safe_load(value)}})
            names = required_features(cfg)
            device = torch.device(args.device)
            rec: dict = {"variant": variant, "seed": seed}
            t0 = time.perf_counter()
            if args.init_only:
                torch.manual_seed(seed)
                model = ClipAENet(cfg, ds.num_classes, feature_dims(train_v), len(train_v)).to(device)
                targets = _one_hot(np.array([v.labels[0] if v.labels else 0 for v in train_v]), ds.num_classes)
            else:
                out = Path(args.out) / f"{variant.replace(':', '_').replace('=', '-').replace(',', '_')}_s{seed}"
                res = train(cfg, store, ds, out, videos=train_v)
                pred = predict(res.checkpoint, store, ds, ds.test_subset, videos=test_v, device=args.device)
                ev = evaluate_predictions(pred, ds, ds.test_subset)
                rec.update(avg_mAP=ev.average_mAP, mAP=ev.mAP, purity=res.cluster_history[-1]["purity"],
                           train_s=res.seconds)
                state = torch.load(res.checkpoint, weights_only=True)
                model = ClipAENet(cfg, ds.num_classes, feature_dims(train_v), len(train_v)).to(device)
                model.load_state_dict(state["model"])
                clusters = json.loads((out / "train_clusters.json").read_text())
                targets = _one_hot(np.array([clusters[v.video_id] for v in train_v]), ds.num_classes)
            rec.update(view_report(model, train_v, test_v, ds, device, names))
            rec.update(grad_norms(model, [prepare(v, names) for v in train_v], targets, cfg, device))
            rec["seconds"] = time.perf_counter() - t0
            print(json.dumps(rec), flush=True)
            results.append(rec)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
