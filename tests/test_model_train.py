"""Training learns (far above trivial predictors), UTAL clusters, resume is exact, checkpoints load safely."""
from __future__ import annotations

import json

import pytest
import torch

from models import checkpoint as ckpt
from models import train as train_mod
from models.predict import predict
from models.scoring import evaluate_predictions, random_segment_predictions, whole_video_predictions
from tests._model_fixtures import tiny_config, tiny_problem

torch.set_num_threads(1)   # 2 OpenMP threads on the shared 2-core box are several times slower


def _trivial(ds, store) -> tuple[float, float]:
    """avg mAP of two trivial predictors that even know the true classes: whole video, random segments."""
    test = store.videos(ds.videos(ds.test_subset))
    return (evaluate_predictions(whole_video_predictions(test, ds.classes), ds).average_mAP,
            evaluate_predictions(random_segment_predictions(test, ds.classes), ds).average_mAP)


def test_weakly_supervised_learns_far_above_trivial(tmp_path):
    ds, _, store = tiny_problem()
    res = train_mod.train(tiny_config(mode="weak"), store, ds, tmp_path)
    pred = predict(res.checkpoint, store, ds, device="cpu")
    ev = evaluate_predictions(pred, ds)
    whole, rand = _trivial(ds, store)
    assert ev.average_mAP > 10 * whole and ev.average_mAP > 2.5 * rand, (ev.mAP, whole, rand)
    assert ev.mAP[0] > 0.3
    assert res.history[-1]["i3d_rgb/mil"] < res.history[0]["i3d_rgb/mil"]
    assert "video_clusters" not in pred and {d["label"] for r in pred["results"].values() for d in r} <= set(ds.classes)


def test_utal_clusters_and_localizes(tmp_path):
    ds, _, store = tiny_problem()
    maps = []
    for seed in (0, 1):  # two seeds: on this tiny problem one run's mAP varies by +-3 points with the seed
        out = tmp_path / f"seed{seed}"
        res = train_mod.train(tiny_config(mode="utal").replace(train={"seed": seed}), store, ds, out)
        assert [c["round"] for c in res.cluster_history] == [0, 1]
        assert res.cluster_history[-1]["purity"] > 0.75     # chance is ~1/4 for 4 balanced classes
        pred = predict(res.checkpoint, store, ds, device="cpu")
        assert set(pred["video_clusters"]) == set(pred["results"])
        labels = {d["label"] for r in pred["results"].values() for d in r}
        assert labels and all(lbl.startswith("cluster_") for lbl in labels)
        for vid, dets in pred["results"].items():
            dur = ds.annotations(vid).duration
            assert all(0 <= d["segment"][0] < d["segment"][1] <= dur + 1e-6 for d in dets)
        maps.append(evaluate_predictions(pred, ds).average_mAP)  # clusters mapped to classes (Hungarian)
        assert json.loads((out / "train_clusters.json").read_text())
    whole, rand = _trivial(ds, store)                       # the trivial ones even know the true labels
    mean = sum(maps) / len(maps)
    assert mean > 10 * whole and mean > 2 * rand, (maps, whole, rand)


def test_a_fresh_run_in_a_used_directory_never_leaves_the_old_runs_files(tmp_path, monkeypatch):
    """Training again into a run directory and stopping early left the new config beside the OLD model.pt
    (which predict then used), and a SIGTERM mid-write left a 33 MB .last.pt.<random> that --resume kept."""
    import os
    import stat

    ds, _, store = tiny_problem()
    cfg = tiny_config(mode="utal", rounds=1, epochs_per_round=2)
    out = tmp_path / "run"
    train_mod.train(cfg, store, ds, out)
    assert stat.S_IMODE(os.stat(out / ckpt.MODEL_FILE).st_mode) == 0o666 & ~ckpt._UMASK  # (mkstemp: 0600)
    (out / ".last.pt.k2j3h4").write_bytes(b"half a checkpoint")

    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    real_epoch = train_mod._train_epoch
    calls = []

    def stopped_at(n):
        def epoch(*a, **k):
            calls.append(1)
            if len(calls) > n:
                raise KeyboardInterrupt
            return real_epoch(*a, **k)
        return epoch

    # Stopped (or failed: a late bad input, a diverging loss) before its first epoch: the previous run stays
    # whole (adversarial review: a failed train had deleted it and left only its own config.json).
    monkeypatch.setattr(train_mod, "_train_epoch", stopped_at(0))
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(tiny_config(mode="utal", rounds=1, epochs_per_round=2, seed=5), store, ds, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # (and the temporary is gone)
    # Stopped after it: the new run's config and last.pt, never the old model beside them.
    calls.clear()
    monkeypatch.setattr(train_mod, "_train_epoch", stopped_at(1))
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(tiny_config(mode="utal", rounds=1, epochs_per_round=2, seed=5), store, ds, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([ckpt.CONFIG_FILE, ckpt.RESUME_FILE])
    assert '"seed": 5' in (out / ckpt.CONFIG_FILE).read_text()


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
    ds, _, store = tiny_problem()
    cfg = tiny_config(mode="utal", rounds=2, epochs_per_round=2)
    full = train_mod.train(cfg, store, ds, tmp_path / "full")

    real_epoch = train_mod._train_epoch
    calls = {"n": 0}

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:        # dies in round 1, epoch 0 (after round 0 was checkpointed)
            raise KeyboardInterrupt
        return real_epoch(*a, **k)

    monkeypatch.setattr(train_mod, "_train_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(cfg, store, ds, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / ckpt.MODEL_FILE).exists()
    assert ckpt.load(tmp_path / "resumed" / ckpt.RESUME_FILE)["epoch"] == 2
    monkeypatch.setattr(train_mod, "_train_epoch", real_epoch)
    resumed = train_mod.train(cfg, store, ds, tmp_path / "resumed", resume=True)

    a = ckpt.load(full.checkpoint)["model"]
    b = ckpt.load(resumed.checkpoint)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert resumed.train_clusters == full.train_clusters
    with pytest.raises(ValueError, match="different config"):
        train_mod.train(tiny_config(mode="utal", rounds=3, epochs_per_round=2), store, ds, tmp_path / "resumed", resume=True)


def test_checkpoint_is_plain_and_loads_with_weights_only(tmp_path):
    ds, _, store = tiny_problem()
    res = train_mod.train(tiny_config(mode="weak", weak_epochs=1), store, ds, tmp_path)
    state = torch.load(res.checkpoint, weights_only=True)
    assert set(state) == {"model", "meta"}
    assert json.loads((tmp_path / ckpt.CONFIG_FILE).read_text())["train"]["mode"] == "weak"
    assert not list(tmp_path.glob(".*"))      # no temporary files left behind by the atomic writes

    # a file that is not a checkpoint of ours: CheckpointError naming it, never torch's weights_only advice
    from models.predict import load_model

    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    torch.save({"model": {}, "meta": {"config": "{}"}}, tmp_path / "partial.pt")
    for name, message in (("notes.txt", "not a clipae checkpoint or damaged"), ("other.pt", "no 'model', 'meta'"),
                          ("partial.pt", "its meta lacks")):
        with pytest.raises(ckpt.CheckpointError, match=message) as e:
            load_model(tmp_path / name, device="cpu")
        assert name in str(e.value) and "weights_only" not in str(e.value)


def test_checkpoints_from_before_caf_ccp_load_as_series(tmp_path):
    """Checkpoints written before model.caf_ccp existed were trained with CAF and CCP in series: their saved
    config has no such key, and must not be read with today's default (the layer shapes differ)."""
    from models.predict import load_model

    ds, _, store = tiny_problem()
    cfg = tiny_config(mode="weak", weak_epochs=1).replace(model={"caf_ccp": "series"})
    res = train_mod.train(cfg, store, ds, tmp_path)
    state = torch.load(res.checkpoint, weights_only=True)
    saved = json.loads(state["meta"]["config"])
    del saved["model"]["caf_ccp"]
    state["meta"]["config"] = json.dumps(saved)
    old = tmp_path / "old.pt"
    torch.save(state, old)
    model, _, loaded = load_model(old, "cpu")
    assert loaded.model.caf_ccp == "series"
    assert load_model(res.checkpoint, "cpu")[2].model.caf_ccp == "series"
    assert tiny_config().model.caf_ccp == "parallel"
    # an interrupted run of that time resumes with model.caf_ccp: series (and only with it)
    last = torch.load(tmp_path / ckpt.RESUME_FILE, weights_only=True)
    saved = json.loads(last["config"])
    del saved["model"]["caf_ccp"]
    last["config"] = json.dumps(saved)
    torch.save(last, tmp_path / ckpt.RESUME_FILE)
    train_mod.train(cfg, store, ds, tmp_path, resume=True)
    with pytest.raises(ValueError, match="different config"):
        train_mod.train(tiny_config(mode="weak", weak_epochs=1), store, ds, tmp_path, resume=True)


def test_ablation_over_seeds_reports_mean_and_spread(tmp_path):
    from models.ablation import run_ablation

    ds, _, store = tiny_problem()
    cfg = tiny_config(rounds=1, epochs_per_round=1)
    rows = run_ablation(cfg, store, ds, tmp_path, ["baseline"], seeds=[0, 1])
    (row,) = rows
    assert row.seeds == [0, 1] and len(row.runs) == 2
    assert row.average_mAP == pytest.approx(sum(row.runs) / 2)
    assert row.average_mAP_std is not None and row.average_mAP_std >= 0
    assert (tmp_path / "seed0" / "baseline" / "model.pt").exists() and (tmp_path / "seed1" / "baseline" / "model.pt").exists()
    table = (tmp_path / "ablation.md").read_text()
    assert "seeds 0, 1" in table and "±" in table
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["seeds"] == [0, 1] and len(saved["runs"]) == 2


def test_a_bad_training_device_is_a_config_error():
    """`train.device: gpu` passed the config and failed inside the training task, after the extraction."""
    from models.config import ClipAEConfig

    with pytest.raises(ValueError, match=r"config.train: device must be auto, cpu, cuda or cuda:N, got device='gpu'"):
        ClipAEConfig().replace(train={"device": "gpu"})
    assert ClipAEConfig().replace(train={"device": "cuda:1"}).train.device == "cuda:1"


def test_pick_device_checks_the_name_and_the_gpu(monkeypatch):
    import torch

    from models.runtime import pick_device

    assert pick_device("cpu").type == "cpu"
    for bad in ("gpu", "cuda:x", "CPU"):
        with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
            pick_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


def test_config_values_of_the_wrong_type_or_range_are_refused_by_name():
    """Adversarial review: `epochs_per_round: '2'`, `batch_size: 2.5`, `lr: abc` failed deep in training with
    tracebacks; `switches.audio: 'no'` trained WITH audio; `loss.tau: 0` trained a model full of NaN;
    `inference.thresholds: 0.5` trained and then crashed every predict; weak `--epochs 0` wrote an untrained
    model; `kmeans_iters: 0` ran no Lloyd iteration."""
    from models.config import ClipAEConfig

    good = ClipAEConfig()
    assert ClipAEConfig.from_dict({"train": {"lr": 1}}).train.lr == 1.0  # (an integer is a number)
    import numpy as np

    cfg = good.replace(train={"seed": np.int64(3), "lr": np.float32(0.5)})  # (numpy scalars: plain numbers)
    assert type(cfg.train.seed) is int and type(cfg.train.lr) is float and '"seed": 3' in cfg.to_json()
    for section, values, message in [
        ("train", {"epochs_per_round": "2"}, "train.epochs_per_round: must be an integer"),
        ("train", {"batch_size": 2.5}, "train.batch_size: must be an integer"),
        ("train", {"lr": "abc"}, "train.lr: must be a finite number"),
        ("switches", {"audio": "no"}, "switches.audio: must be true or false"),
        ("inference", {"thresholds": 0.5}, "inference.thresholds: must be a list"),
        ("inference", {"thresholds": []}, "thresholds must be a non-empty list"),
        ("loss", {"tau": 0}, "tau must be > 0"),
        ("train", {"weak_epochs": 0}, "weak_epochs must be >= 1"),
        ("train", {"kmeans_iters": 0}, "kmeans_restarts, kmeans_iters must be >= 1"),
        ("train", {"lr": -1}, "lr, weight_decay must be > 0 and >= 0"),
        ("train", {"seed": -1}, "seed must be >= 0"),
        ("model", {"dropout": 2.0}, "dropout must be in [0, 1)"),
        ("model", {"d_x": 0}, "d_x, ccp_dim, embed_dim must be >= 1"),
        ("inference", {"nms_sigma": 0}, "nms_sigma must be > 0"),
        ("inference", {"max_proposals": 0}, "max_proposals, max_classes must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=__import__("re").escape(message)):
            good.replace(**{section: values})


def test_a_run_that_fails_before_its_first_epoch_keeps_the_previous_run(tmp_path):
    """Adversarial review: a UTAL dataset with fewer training videos than classes failed in k-means after the
    previous run in --out had been deleted; a diverging loss kept training and saved a NaN model."""
    ds, _, store = tiny_problem()
    out = tmp_path / "run"
    train_mod.train(tiny_config(mode="utal", rounds=1, epochs_per_round=1), store, ds, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    few = ds.videos(ds.train_subset)[:2]
    with pytest.raises(ValueError, match="2 training videos for 4 clusters"):
        train_mod.train(tiny_config(mode="utal", rounds=1, epochs_per_round=1), store, ds, out, video_ids=few)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    import unittest.mock

    with unittest.mock.patch.object(train_mod, "_train_epoch", lambda *a, **k: {"total": float("nan")}):
        with pytest.raises(ValueError, match="the loss is not finite.*nothing was written"):
            train_mod.train(tiny_config(mode="utal", rounds=1, epochs_per_round=1), store, ds, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_resume_refuses_other_training_inputs(tmp_path, monkeypatch):
    """Adversarial review: a resume on a store with one training video fewer died in load_state_dict with a size
    mismatch dump; on the same videos with changed features it continued silently."""
    ds, _, store = tiny_problem()
    cfg = tiny_config(mode="utal", rounds=1, epochs_per_round=2)
    calls = []
    real = train_mod._train_epoch

    def once(*a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "_train_epoch", once)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(cfg, store, ds, tmp_path / "run")
    monkeypatch.setattr(train_mod, "_train_epoch", real)
    fewer = ds.videos(ds.train_subset)[:-1]
    with pytest.raises(ValueError, match="resume needs the same inputs"):
        train_mod.train(cfg, store, ds, tmp_path / "run", resume=True, video_ids=fewer)
    done = train_mod.train(cfg, store, ds, tmp_path / "run", resume=True)  # (the same inputs: resumes)
    assert done.epochs_completed == 2


def test_a_one_snippet_video_is_pooled_uniformly_not_to_zero():
    import numpy as np

    from models.kmeans import video_level_features
    from models.data import VideoFeatures

    v = VideoFeatures("v", {"i3d_rgb": np.ones((1, 4), np.float32)}, 1.0)
    got = video_level_features([v], ["i3d_rgb"], weights=[np.zeros(1)])
    assert np.allclose(got, 0.5)  # (the unit vector of ones, not zero)


def test_predict_refuses_a_weak_checkpoint_of_other_classes(tmp_path):
    from models.synthetic import ClassSubsetDataset
    from storage.datasets import load_dataset

    ds, _, store = tiny_problem()
    train_mod.train(tiny_config(mode="weak", weak_epochs=1), store, ds, tmp_path / "weak")
    other = ClassSubsetDataset(load_dataset("thumos14"), ["CliffDiving", "Diving", "GolfSwing", "HighJump"],
                               max_duration=240.0)
    with pytest.raises(ValueError, match="its labels would match none"):
        predict(tmp_path / "weak", store, other)


def test_ablation_refuses_repeated_seeds_and_rows(tmp_path):
    """Adversarial review: `--seeds 3 3` trained one folder twice and reported "± 0.0"; repeated rows too."""
    from models.ablation import run_ablation

    ds, _, store = tiny_problem()
    for kw in ({"seeds": [3, 3]}, {"rows": ["baseline", "baseline"]}):
        with pytest.raises(ValueError, match="repeat"):
            run_ablation(tiny_config(), store, ds, tmp_path / "abl", **kw)
    assert not (tmp_path / "abl").exists()


def test_resume_inputs_cover_only_the_features_training_reads():
    """Review: the resume check hashed each video's whole fingerprint, so extracting vggish into the store of an
    interrupted --no-audio run made --resume refuse unchanged inputs."""
    import numpy as np

    from models.data import VideoFeatures

    class Store:
        def __init__(self, meta):
            self.meta = meta

        def video_meta(self, vid):
            return self.meta

    v = VideoFeatures("v", {"i3d_rgb": np.zeros((2, 4), np.float32)}, 1.0)
    before = {"features": {"i3d_rgb": {"sha256": "a"}}, "fingerprint": "f1"}
    added = {"features": {"i3d_rgb": {"sha256": "a"}, "vggish": {"sha256": "b"}}, "audio_mask": "m",
             "fingerprint": "f2"}
    changed = {"features": {"i3d_rgb": {"sha256": "c"}}, "fingerprint": "f3"}
    key = train_mod._training_inputs(Store(before), [v])
    assert train_mod._training_inputs(Store(added), [v]) == key
    assert train_mod._training_inputs(Store(changed), [v]) != key
