"""Training: UTAL (cluster -> localize -> re-cluster, R rounds) or weakly-supervised (real video labels).

Entry point for the CLI and the Prefect flow: ``train(cfg, store, dataset, out_dir) -> TrainResult``.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models import checkpoint as ckpt
from models.config import ClipAEConfig
from models.data import VideoFeatures, collate, feature_configs, feature_dims, load_videos, prepare, random_window
from models.kmeans import align_clusters, kmeans, video_level_features
from models.network import AUDIO, CLIP, FLOW, RGB, STREAMS, ClipAENet, required_features
from models.runtime import autocast, forward_full, pick_device, seed_everything


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path                    # out_dir / model.pt
    mode: str
    rounds_completed: int
    epochs_completed: int
    seconds: float
    history: list[dict] = field(default_factory=list)          # per epoch: round, epoch, mean losses
    train_clusters: dict[str, int] | None = None               # UTAL: final pseudo label of each training video
    cluster_history: list[dict] = field(default_factory=list)  # UTAL: per round, purity vs. real labels if known


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    y = np.zeros((len(labels), k), dtype=np.float32)
    y[np.arange(len(labels)), labels] = 1.0
    return y


def _multi_hot(videos: list[VideoFeatures], k: int) -> np.ndarray:
    y = np.zeros((len(videos), k), dtype=np.float32)
    for i, v in enumerate(videos):
        y[i, v.labels] = 1.0
    return y


def cluster_purity(clusters: np.ndarray, videos: list[VideoFeatures]) -> float | None:
    """Fraction of videos whose cluster's majority real class is one of theirs (diagnostic only)."""
    if not all(v.labels for v in videos):
        return None
    hits = 0
    for c in np.unique(clusters):
        members = [videos[i] for i in np.flatnonzero(clusters == c)]
        counts = np.bincount(np.concatenate([v.labels for v in members]))
        major = int(counts.argmax())
        hits += sum(major in v.labels for v in members)
    return hits / len(videos)


def foreground_weights(model: ClipAENet, items, device, amp) -> list[np.ndarray]:
    """Each video's stream-fused foreground attention, min-max normalised per video (so a weakly
    separating but well-ordered attention still concentrates the pooling on the action snippets)."""
    def extract(outs, mask):
        att = sum(outs[s]["attention"].float() for s in STREAMS) / len(STREAMS)
        res = []
        for i, n in enumerate(mask.sum(1).tolist()):
            a = att[i, :n].cpu().numpy().astype(np.float64)
            res.append((a - a.min()) / max(a.max() - a.min(), 1e-6))
        return res
    return forward_full(model, items, device, amp, extract)


def cluster_feature_names(cfg: ClipAEConfig) -> list[str]:
    """The features UTAL clusters videos on (``train.cluster_features``), honouring the switches unless
    ``train.cluster_features_follow_switches`` is False (ablation rows with one clustering input)."""
    allowed = {RGB, FLOW, CLIP, AUDIO}
    follow = cfg.train.cluster_features_follow_switches
    names = [n for n in cfg.train.cluster_features if not follow
             or not (n == CLIP and not cfg.switches.clip) and not (n == AUDIO and not cfg.switches.audio)]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(f"train.cluster_features {cfg.train.cluster_features!r}: need at least one of {sorted(allowed)}"
                         f" enabled by the switches (unknown: {bad})")
    return names


def min_training_videos(mode: str, num_classes: int) -> int:
    """UTAL clusters the training videos into the dataset's classes (k-means): at least one video per class."""
    return int(num_classes) if mode == "utal" else 1


def features_read(cfg: ClipAEConfig) -> list[str]:
    """Every stored array training reads: the network's inputs, then UTAL's clustering inputs."""
    names = required_features(cfg)
    extra = [n for n in cluster_feature_names(cfg) if n not in names] if cfg.train.mode == "utal" else []
    return names + extra


def recluster(model: ClipAENet, videos, items, names: list[str], previous: np.ndarray, k: int, tc, device):
    """UTAL rounds > 0 (our choice, docs/model.md): k-means on the *input* features pooled with the
    localizer's foreground attention, warm-started from the previous round's clusters. Re-clustering
    learned embeddings restarted from scratch dropped purity 0.885 -> 0.465 on the synthetic THUMOS set:
    the embeddings are trained to separate the current pseudo classes and noise, not to be clustered."""
    weights = foreground_weights(model, items, device, tc.amp)
    feats = video_level_features(videos, names, weights)
    return kmeans(feats, k, seed=tc.seed, iters=tc.kmeans_iters, init_labels=previous)


def _train_epoch(model, opt, items, targets, cfg: ClipAEConfig, device, round_i: int, epoch: int, global_epoch: int) -> dict:
    tc = cfg.train
    rng = np.random.default_rng([tc.seed, round_i, epoch])
    torch.manual_seed(tc.seed * 100_003 + round_i * 1_009 + epoch)
    order = rng.permutation(len(items))
    co_w = min(1.0, global_epoch / max(cfg.loss.co_warmup_epochs, 1))
    model.train()
    sums: dict[str, float] = {}
    n_batches = math.ceil(len(order) / tc.batch_size)
    bar = tqdm(range(n_batches), desc=f"round {round_i} epoch {epoch}", leave=False, disable=not tc.progress)
    for b in bar:
        idx = order[b * tc.batch_size: (b + 1) * tc.batch_size]
        batch = collate([random_window(items[i], tc.max_len, rng) for i in idx], device)
        labels = torch.from_numpy(targets[idx]).to(device)
        index = torch.from_numpy(idx).long().to(device)
        with autocast(device, tc.amp):
            outs = model(batch)
        # Losses in fp32, outside autocast (usual AMP practice): the network runs in bf16, the losses'
        # pooled sums, covariances (L_de-cor) and memory-bank similarities keep full precision, and
        # UGCT's binary_cross_entropy, which CUDA autocast refuses outright, runs as it does on the CPU.
        outs = _float32(outs)
        parts = model.losses(outs, labels, batch["mask"], index, co_w)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        model.update_banks(outs, index)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        bar.set_postfix(loss=f"{float(parts['total'].detach()):.3f}")
    return {k: v / n_batches for k, v in sums.items()}


def _float32(x):
    """Nested dicts/lists of tensors with every floating tensor cast to float32 (autograd flows through)."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _float32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_float32(v) for v in x)
    return x


def _save_resume(path: Path, model, opt, cfg, round_i, epoch, targets, clusters, history, cluster_history,
                 inputs: dict) -> None:
    ckpt.atomic_save({
        "model": model.state_dict(), "optimizer": opt.state_dict(), "round": round_i, "epoch": epoch,
        "targets": torch.from_numpy(targets), "clusters": None if clusters is None else torch.from_numpy(clusters),
        "history": history, "cluster_history": cluster_history, "config": cfg.to_json(), "inputs": inputs,
    }, path)


def _training_inputs(store, videos) -> dict:
    """What a resume must train on again: the videos, in order, and the stored content of the features it
    reads (their recorded sha256; a feature added since, e.g. vggish under --no-audio, changes nothing)."""
    h = hashlib.sha256()
    for v in videos:
        try:
            meta = store.video_meta(v.video_id) if store is not None else {}
        except Exception:  # noqa: BLE001 -- (a store without that video: the ids alone)
            meta = {}
        feats = meta.get("features") or {}
        for n in sorted(v.features):
            sha = meta.get("audio_mask") if n == "audio_mask" else (feats.get(n) or {}).get("sha256")
            h.update(f"{v.video_id}\0{n}\0{sha or ''}\n".encode())
    return {"video_ids": [v.video_id for v in videos], "content": h.hexdigest()}


def train(cfg: ClipAEConfig, store, dataset, out_dir: str | Path, *, resume: bool = False,
          video_ids: list[str] | None = None, videos: list[VideoFeatures] | None = None) -> TrainResult:
    """Train on ``dataset.train_subset`` of ``store`` (or on ``videos`` given in memory) into ``out_dir``.

    ``resume=True`` continues from out_dir/last.pt (written after every epoch) with the same config.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    tc = cfg.train
    seed_everything(tc.seed)
    device = pick_device(tc.device)
    if device.type == "cpu" and tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)
    names = required_features(cfg)
    if videos is None:
        videos = load_videos(store, dataset, dataset.train_subset, features_read(cfg), video_ids)
    k = int(dataset.num_classes)
    items = [prepare(v, names) for v in videos]
    model = ClipAENet(cfg, k, feature_dims(videos), len(videos)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    rounds = tc.rounds if tc.mode == "utal" else 1
    epochs = tc.epochs_per_round if tc.mode == "utal" else tc.weak_epochs

    history: list[dict] = []
    cluster_history: list[dict] = []
    start_round, start_epoch = 0, 0
    targets: np.ndarray | None = None
    clusters: np.ndarray | None = None
    resume_path = out / ckpt.RESUME_FILE
    resuming = resume and resume_path.exists()
    inputs = _training_inputs(store, videos)
    if len(videos) < min_training_videos(tc.mode, k):  # (k-means would fail after the run directory was replaced)
        raise ValueError(f"{len(videos)} training videos for {k} clusters (the dataset's classes): UTAL clusters "
                         f"videos, so it needs at least as many training videos as classes")
    # A fresh run replaces the previous run's outputs in ``out`` only once its first epoch is done (begin(),
    # below): a run that fails before (bad input found late, a diverging loss) leaves the previous run as it
    # was, and no empty run directory.
    if out.is_dir():  # (what a writer killed mid-write left: temporaries, never anyone's output)
        ckpt.clear_run_dir(out, fresh=False)
    if resuming:
        state = ckpt.load(resume_path, device, required=("config", "model", "optimizer", "round", "epoch", "targets"))
        if ClipAEConfig.from_saved(json.loads(state["config"])).to_dict() != cfg.to_dict():
            raise ValueError(f"{resume_path}: saved with a different config; resume needs the same config")
        saved = state.get("inputs")  # (absent in resume files of older versions: not checked)
        if isinstance(saved, dict) and saved != inputs:
            what = ("other training videos" if saved.get("video_ids") != inputs["video_ids"]
                    else "the same videos with changed features")
            raise ValueError(f"{resume_path}: saved while training on {len(saved.get('video_ids', []))} videos; the "
                             f"store and dataset now give {what} ({len(inputs['video_ids'])} videos): resume needs "
                             "the same inputs (train afresh without --resume)")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_round, start_epoch = int(state["round"]), int(state["epoch"])
        targets = state["targets"].numpy()
        clusters = None if state["clusters"] is None else state["clusters"].numpy()
        history, cluster_history = list(state["history"]), list(state["cluster_history"])
        if start_epoch >= epochs:
            start_round, start_epoch = start_round + 1, 0
    begun = False

    def begin() -> None:
        nonlocal begun
        if not begun:
            out.mkdir(parents=True, exist_ok=True)
            ckpt.clear_run_dir(out, fresh=not resuming)
            ckpt.atomic_write_text(cfg.to_json(), out / ckpt.CONFIG_FILE)
            begun = True

    if resuming:
        begin()

    for r in range(start_round, rounds):
        if start_epoch == 0:  # (re)make the video-level labels of this round
            if tc.mode == "weak":
                targets = _multi_hot(videos, k)
            else:
                pool_names = cluster_feature_names(cfg)
                if r == 0:
                    feats = video_level_features(videos, pool_names)
                    res = kmeans(feats, k, seed=tc.seed, restarts=tc.kmeans_restarts, iters=tc.kmeans_iters)
                else:
                    res = recluster(model, videos, items, pool_names, clusters, k, tc, device)
                new = res.labels if clusters is None else align_clusters(res.labels, clusters, k)
                changed = None if clusters is None else float((new != clusters).mean())
                clusters = new
                targets = _one_hot(clusters, k)
                cluster_history.append({"round": r, "inertia": res.inertia, "changed": changed,
                                        "purity": cluster_purity(clusters, videos)})
        for e in range(start_epoch, epochs):
            g = r * epochs + e
            stats = _train_epoch(model, opt, items, targets, cfg, device, r, e, g)
            if not all(math.isfinite(v) for v in stats.values()):
                raise ValueError(f"round {r} epoch {e}: the loss is not finite ({stats}): training diverged; lower "
                                 "train.lr or check the loss settings (" + ("the last finished epoch is in "
                                 f"{resume_path}" if begun else f"nothing was written to {out}") + ")")
            history.append({"round": r, "epoch": e, **stats})
            if tc.progress:
                tqdm.write(f"round {r} epoch {e}: " + " ".join(f"{k_}={v:.3f}" for k_, v in stats.items()))
            begin()
            _save_resume(resume_path, model, opt, cfg, r, e + 1, targets, clusters, history, cluster_history, inputs)
        start_epoch = 0
    begin()  # (a resume of a finished run trains no epoch)

    meta = {
        "mode": tc.mode, "num_classes": k, "dims": feature_dims(videos).__dict__,
        "num_train_videos": len(videos), "config": cfg.to_json(),
        "classes": list(dataset.classes), "dataset": getattr(dataset, "name", ""),
        # how each feature was made (one way: load_videos checked), so predict can refuse other ones
        "feature_configs": {n: next(iter(keys)) for n, keys in
                            feature_configs(store, [v.video_id for v in videos], names).items()},
    }
    model_path = out / ckpt.MODEL_FILE
    ckpt.atomic_save({"model": model.state_dict(), "meta": meta}, model_path)
    train_clusters = None
    if clusters is not None:
        train_clusters = {v.video_id: int(c) for v, c in zip(videos, clusters)}
        ckpt.atomic_write_text(json.dumps(train_clusters, indent=1, sort_keys=True), out / "train_clusters.json")
    result = TrainResult(out, model_path, tc.mode, rounds, len(history), time.perf_counter() - t0,
                         history, train_clusters, cluster_history)
    ckpt.atomic_write_text(json.dumps({"mode": tc.mode, "rounds": rounds, "epochs": len(history),
                                       "seconds": result.seconds, "history": history,
                                       "cluster_history": cluster_history}, indent=1), out / "train_log.json")
    return result
