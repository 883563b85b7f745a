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

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_train_epoch", stopped)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(tiny_config(mode="utal", rounds=1, epochs_per_round=2, seed=5), store, ds, out)
    assert sorted(p.name for p in out.iterdir()) == [ckpt.CONFIG_FILE]


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
