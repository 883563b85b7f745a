"""Component switches, the CLI wiring, and a store-backed train -> predict round trip."""
from __future__ import annotations

import json

import pytest
import torch

from clipae.cli import build_parser
from clipae.commands._model_args import config_from_args
from models.ablation import ROWS
from models.config import ClipAEConfig, load_config
from models.network import ClipAENet, FeatureDims, required_features
from tests._model_fixtures import TINY_DIMS, tiny_config, tiny_problem

DIMS = FeatureDims(rgb=32, flow=32, clip=24, audio=16)


def _batch(t: int = 10, b: int = 2) -> dict:
    return {"i3d_rgb": torch.randn(b, t, 32), "i3d_flow": torch.randn(b, t, 32), "clip_vitb16": torch.randn(b, t, 24),
            "vggish": torch.randn(b, t, 16), "mask": torch.ones(b, t, dtype=torch.bool)}


def _net(**sw) -> ClipAENet:
    return ClipAENet(tiny_config().replace(switches=sw), 4, DIMS, 6)


def test_all_off_is_the_two_stream_baseline():
    cfg = tiny_config().replace(switches=ROWS["baseline"].__dict__)
    net = ClipAENet(cfg, 4, DIMS, 6)
    assert required_features(cfg) == ["i3d_rgb", "i3d_flow"]
    for s in net.streams.values():
        assert s.caf is None and s.ccp is None
        assert s.head.embed[0].in_channels == 32            # the raw I3D stream, nothing concatenated
    assert len(net.banks) == 0
    batch = {k: v for k, v in _batch().items() if k in ("i3d_rgb", "i3d_flow", "mask")}
    outs = net(batch)                                      # runs without audio / CLIP inputs
    parts = net.losses(outs, torch.eye(4)[:2], batch["mask"], torch.arange(2), 1.0)
    assert not any(k.endswith("/self") for k in parts)


def test_full_model_has_caf_ccp_banks_and_self_loss():
    net = _net()
    for s in net.streams.values():
        assert s.caf is not None and s.ccp is not None
    assert set(net.banks) == {"i3d_rgb_cbp", "i3d_rgb_vlp", "i3d_flow_cbp", "i3d_flow_vlp"}
    batch = _batch()
    outs = net(batch)
    assert {"caf_audio", "caf_cbp", "z_cbp", "z_vlp"} <= set(outs["i3d_rgb"])
    parts = net.losses(outs, torch.eye(4)[:2], batch["mask"], torch.arange(2), 1.0)
    assert parts["i3d_rgb/self"] > 0
    before = net.banks["i3d_rgb_vlp"].bank.clone()
    net.update_banks(outs, torch.arange(2))
    assert not torch.equal(before[:2], net.banks["i3d_rgb_vlp"].bank[:2])
    assert torch.equal(before[2:], net.banks["i3d_rgb_vlp"].bank[2:])


@pytest.mark.parametrize("arrangement", ["parallel", "series"])
def test_fused_caf_view_is_standardised(arrangement):
    """model.caf_out_norm: the CAF output ([X_cbp; X_audio], tanh, large common mode) is centred and at unit
    scale per snippet where it is consumed (the head next to CCP's output; CCP in the series arrangement);
    with the option off it goes on as is."""
    seen = {}
    for on in (True, False):
        cfg = tiny_config().replace(model={"caf_out_norm": on, "caf_ccp": arrangement})
        net = ClipAENet(cfg, 4, DIMS, 6).eval()
        rgb = net.streams["i3d_rgb"]
        assert (rgb.caf_norm is not None) == on
        consumer = rgb.ccp if arrangement == "series" else rgb.head
        h = consumer.register_forward_hook(lambda m, args, out, on=on: seen.__setitem__(on, args[0].detach()[..., :64]))
        net(_batch())
        h.remove()
    assert seen[True].mean(-1).abs().max() < 1e-4 and torch.allclose(seen[True].std(-1, unbiased=False),
                                                                      torch.ones(2, 10), atol=1e-2)
    assert seen[False].abs().max() <= 1.0                 # raw tanh outputs


def test_caf_and_ccp_run_side_by_side_as_in_the_paper():
    """CLIP-AE §2: CAF fuses audio into F_CBP while "simultaneously F_CBP and F_VLP are input into" CCP; the
    head sees both outputs. So CCP's output does not depend on the audio; CAF's does."""
    net = _net().eval()
    s = net.streams["i3d_rgb"]
    assert s.ccp.v_cbp.in_features == DIMS.rgb                        # CCP's CBP view is the raw I3D
    assert s.head.embed[0].in_channels == 2 * 32 + 2 * 32             # [CAF_cbp; CAF_audio; Z_cbp; Z_vlp]
    batch = _batch()
    louder = {**batch, "vggish": batch["vggish"] * 3 + 1}
    a, b = net(batch)["i3d_rgb"], net(louder)["i3d_rgb"]
    assert torch.equal(a["z_cbp"], b["z_cbp"]) and torch.equal(a["z_vlp"], b["z_vlp"])
    assert not torch.allclose(a["caf_cbp"], b["caf_cbp"])
    # CCP without CAF: the audio goes to the head next to CCP's output, not into CCP
    s2 = _net(caf=False).streams["i3d_rgb"]
    assert s2.ccp.v_cbp.in_features == DIMS.rgb and s2.head.embed[0].in_channels == DIMS.audio + 2 * 32


def test_series_arrangement_feeds_the_fused_view_to_ccp():
    net = ClipAENet(tiny_config().replace(model={"caf_ccp": "series"}), 4, DIMS, 6).eval()
    s = net.streams["i3d_rgb"]
    assert s.ccp.v_cbp.in_features == 2 * 32 and s.head.embed[0].in_channels == 2 * 32
    batch = _batch()
    a, b = net(batch)["i3d_rgb"], net({**batch, "vggish": batch["vggish"] * 3 + 1})["i3d_rgb"]
    assert not torch.allclose(a["z_cbp"], b["z_cbp"])
    with pytest.raises(ValueError, match="caf_ccp"):
        tiny_config().replace(model={"caf_ccp": "stacked"})


@pytest.mark.parametrize("sw,caf,ccp,in_extra", [
    ({"caf": False}, False, True, None),                    # audio beside CCP's output
    ({"ccp": False}, True, False, 24),                      # CLIP concatenated after CAF
    ({"audio": False}, False, True, None),
    ({"clip": False}, True, False, 0),
    ({"selfsup": False}, True, True, None),
])
def test_each_switch(sw, caf, ccp, in_extra):
    net = _net(**sw)
    s = net.streams["i3d_rgb"]
    assert (s.caf is not None) == caf and (s.ccp is not None) == ccp
    if in_extra is not None:                                # CAF output 2*d_x (+ CLIP when concatenated)
        assert s.head.embed[0].in_channels == 2 * 32 + in_extra
    assert (len(net.banks) > 0) == (ccp and sw.get("selfsup", True))
    batch = _batch()
    parts = net.losses(net(batch), torch.eye(4)[:2], batch["mask"], torch.arange(2), 1.0)
    assert torch.isfinite(parts["total"])
    assert ("i3d_rgb/self" in parts) == sw.get("selfsup", True)


def test_audio_mask_zeroes_audio():
    from models.data import VideoFeatures, prepare
    v = VideoFeatures("v", {"vggish": torch.ones(4, 3).numpy(), "audio_mask": torch.tensor([1, 0, 1, 0]).bool().numpy()}, 3.0)
    a = prepare(v, ["vggish", "audio_mask"])["vggish"]
    assert a[1].sum() == 0 and a[3].sum() == 0 and a[0].sum() == 3


def test_train_records_a_store_that_changed_while_it_read(tmp_path, capsys, monkeypatch):
    """inputs.json's store fingerprint was taken before training only: videos written meanwhile by another
    process made it name a store state the run never read."""
    import yaml

    import models.train as train_mod
    from clipae.cli import main
    from models.synthetic import SyntheticSpec, synthetic_videos, write_synthetic_store
    from storage import FeatureStore

    ds, _, _ = tiny_problem()
    spec = SyntheticSpec(dims=dict(TINY_DIMS))
    vids = ds.videos(ds.train_subset)[:6]
    write_synthetic_store(tmp_path / "store", ds, synthetic_videos(ds, spec, video_ids=vids[:5]), spec)
    late = synthetic_videos(ds, spec, video_ids=vids[5:])
    real = train_mod.train

    def train_while_another_process_writes(*a, **kw):
        write_synthetic_store(tmp_path / "store", ds, late, spec)  # (opens the existing store, adds a video)
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "train", train_while_another_process_writes)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(weak_epochs=1).to_dict()))
    before = FeatureStore.open(tmp_path / "store").fingerprint()
    assert main(["train", "--store", str(tmp_path / "store"), "--dataset", "thumos14", "--mode", "weak",
                 "--config", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run")]) == 0
    inputs = json.loads((tmp_path / "run" / "inputs.json").read_text())
    assert inputs["store_fingerprint"] == before
    assert inputs["store_fingerprint_after"] == FeatureStore.open(tmp_path / "store").fingerprint() != before
    assert "changed while training" in capsys.readouterr().err


def test_cli_flags_map_to_config():
    args = build_parser().parse_args(["train", "--store", "s", "--dataset", "thumos14", "--mode", "weak",
                                      "--no-caf", "--no-clip", "--rounds", "2", "--seed", "5", "--epochs", "7"])
    cfg = config_from_args(args)
    assert cfg.train.mode == "weak" and cfg.train.seed == 5 and cfg.train.weak_epochs == 7
    assert not cfg.switches.caf and not cfg.switches.clip and cfg.switches.ccp and cfg.switches.audio
    assert load_config().to_dict() == ClipAEConfig().to_dict()          # YAML and dataclass defaults agree
    with pytest.raises(ValueError, match="unknown keys"):
        ClipAEConfig.from_dict({"train": {"epochz": 3}})


def test_store_backed_train_and_predict_cli(tmp_path, capsys):
    """Synthetic features written into a real FeatureStore; `clipae train` and `clipae predict` on it."""
    from clipae.cli import main
    from models.synthetic import SyntheticSpec, synthetic_videos, write_synthetic_store

    ds, _, _ = tiny_problem()
    spec = SyntheticSpec(dims=dict(TINY_DIMS))
    vids = ds.videos(ds.train_subset)[:6] + ds.videos(ds.test_subset)[:3]
    write_synthetic_store(tmp_path / "store", ds, synthetic_videos(ds, spec, video_ids=vids), spec)
    cfg_path = tmp_path / "tiny.yaml"
    cfg = tiny_config(weak_epochs=1).to_dict()
    import yaml
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", "--store", str(tmp_path / "store"), "--dataset", "thumos14", "--mode", "weak",
                 "--config", str(cfg_path), "--out", str(run)]) == 0
    inputs = json.loads((run / "inputs.json").read_text())  # what the run was trained on, beside the checkpoint
    assert inputs["videos"] == 6 and inputs["subset"] == ds.train_subset and len(inputs["store_fingerprint"]) > 8
    assert inputs["store"] == str(tmp_path / "store") and "i3d_rgb" in inputs["features"]
    assert main(["predict", "--checkpoint", str(run), "--store", str(tmp_path / "store"), "--dataset", "thumos14",
                 "--out", str(tmp_path / "pred.json"), "--device", "cpu"]) == 0
    pred = json.loads((tmp_path / "pred.json").read_text())
    assert set(pred) >= {"version", "results"} and set(pred["results"]) == set(vids[6:])
    for dets in pred["results"].values():
        assert dets and all(set(d) == {"label", "score", "segment"} for d in dets)

    # the test videos re-extracted another way after training: predict refuses them instead of mixing silently
    import dataclasses

    from storage import FeatureStore

    store = FeatureStore.open(tmp_path / "store")
    for vid in vids[6:]:
        other = dataclasses.replace(store.provenance(vid)["i3d_rgb"], preprocess_hash="another-crop")
        store.write_video(vid, {"i3d_rgb": store.load(vid, ["i3d_rgb"])["i3d_rgb"]}, None, {"i3d_rgb": other})
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), "--store", str(tmp_path / "store"), "--dataset", "thumos14",
                 "--out", str(tmp_path / "pred2.json"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "i3d_rgb of 3 videos (e.g. 'video_test_" in err and "was made another way than the training videos'" in err
    assert "preprocess another-crop" in err and not (tmp_path / "pred2.json").exists()


def test_cluster_features_follow_config_and_switches():
    import pytest

    from models.config import ClipAEConfig
    from models.train import cluster_feature_names

    cfg = ClipAEConfig()
    assert cluster_feature_names(cfg) == ["i3d_rgb", "i3d_flow", "clip_vitb16"]
    assert cluster_feature_names(cfg.replace(switches={"clip": False})) == ["i3d_rgb", "i3d_flow"]
    assert cluster_feature_names(cfg.replace(train={"cluster_features": ["i3d_rgb", "vggish"]})) == ["i3d_rgb", "vggish"]
    with pytest.raises(ValueError, match="unknown: \\['resnet'\\]"):
        cluster_feature_names(cfg.replace(train={"cluster_features": ["resnet"]}))
    with pytest.raises(ValueError, match="at least one"):
        cluster_feature_names(cfg.replace(switches={"clip": False}, train={"cluster_features": ["clip_vitb16"]}))


def test_damaged_values_and_damage_elsewhere_in_the_store(tmp_path, capsys):
    """Random bytes of the right size in an uncompressed chunk pass the store's size checks: training names the
    video and feature (was a RuntimeError deep in the model). A video the run does not read, with corrupt
    metadata, does not stop training (was a failure after the whole schedule, from the store fingerprint)."""
    import numpy as np

    from clipae.cli import main
    from models.synthetic import SyntheticSpec, synthetic_videos, write_synthetic_store
    from storage import FeatureStore

    ds, _, _ = tiny_problem()
    spec = SyntheticSpec(dims=dict(TINY_DIMS))
    vids = ds.videos(ds.train_subset)[:6] + ds.videos(ds.test_subset)[:3]
    write_synthetic_store(tmp_path / "store", ds, synthetic_videos(ds, spec, video_ids=vids), spec)
    store = FeatureStore.open(tmp_path / "store")
    import shutil

    shutil.copytree(store.path / "videos" / vids[0], store.path / "videos" / "not_in_the_dataset")
    (store.path / "videos" / "not_in_the_dataset" / "zarr.json").write_text("{broken")
    cfg_path = tmp_path / "tiny.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(tiny_config(weak_epochs=1).to_dict()))
    args = ["train", "--store", str(store.path), "--dataset", "thumos14", "--mode", "weak", "--config", str(cfg_path)]
    assert main([*args, "--out", str(tmp_path / "run1")]) == 0
    fp = json.loads((tmp_path / "run1" / "inputs.json").read_text())["store_fingerprint"]
    assert fp == store.fingerprint() and len(fp) == 64

    chunk = store.path / "videos" / vids[1] / "i3d_rgb" / "c" / "0" / "0"
    nan = np.full(chunk.stat().st_size // 4, np.nan, np.float32)
    chunk.write_bytes(nan.tobytes())
    assert main([*args, "--out", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err
    assert vids[1] in err and "'i3d_rgb'" in err and "non-finite" in err, err
    assert not (tmp_path / "run2").exists()  # unreadable inputs leave no empty run directory

    # every damaged video in one error (one re-extraction instead of one failed run per video)
    other = store.path / "videos" / vids[3] / "clip_vitb16" / "c" / "0" / "0"
    other.write_bytes(other.read_bytes()[:-3])
    assert main([*args, "--out", str(tmp_path / "run3")]) == 2
    err = capsys.readouterr().err
    assert "2 video(s) damaged" in err and vids[1] in err and vids[3] in err and "wrong size" in err, err

    # also when their METADATA is damaged: the provenance check named only the first such video (scale review:
    # 300 damaged videos, 300 failed runs)
    for v in (vids[1], vids[3]):
        (store.path / "videos" / v / "zarr.json").write_text("{broken")
    assert main([*args, "--out", str(tmp_path / "run4")]) == 2
    err = capsys.readouterr().err
    assert "2 video(s) damaged" in err and vids[1] in err and vids[3] in err, err


def test_ablation_reads_every_video_before_the_first_row_trains(tmp_path):
    """A damaged test video stopped the ablation only in the first row's prediction, after its training."""
    import numpy as np

    from models.ablation import run_ablation
    from models.synthetic import SyntheticSpec, synthetic_videos, write_synthetic_store
    from storage import FeatureStore

    ds, _, _ = tiny_problem()
    spec = SyntheticSpec(dims=dict(TINY_DIMS))
    vids = ds.videos(ds.train_subset)[:6] + ds.videos(ds.test_subset)[:3]
    write_synthetic_store(tmp_path / "store", ds, synthetic_videos(ds, spec, video_ids=vids), spec)
    store = FeatureStore.open(tmp_path / "store")
    chunk = store.path / "videos" / vids[-1] / "i3d_flow" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # a truncated test-video chunk
    cfg = tiny_config(weak_epochs=1).replace(train={"mode": "weak"})
    with pytest.raises(Exception, match=vids[-1]):
        run_ablation(cfg, store, ds, tmp_path / "abl", rows=["baseline"])
    assert not (tmp_path / "abl" / "baseline").exists()  # (nothing trained)
    assert np.isfinite(store.load(vids[0])["i3d_rgb"]).all()


def test_same_cluster_input_gives_every_ablation_row_the_same_round0_clusters(tmp_path):
    """By default a row without CLIP also clusters without it, so Table 3's rows differ in their pseudo-labels
    as well as their modules; with ``cluster_features_follow_switches: false`` (``clipae ablate
    --same-cluster-input``) the baseline reads CLIP for clustering only and gets the full model's clusters."""
    from models.synthetic import SyntheticSpec, synthetic_videos, write_synthetic_store
    from models.train import cluster_feature_names, train
    from storage import FeatureStore

    ds, _, _ = tiny_problem()
    spec = SyntheticSpec(dims=dict(TINY_DIMS))
    vids = ds.videos(ds.train_subset)[:12]
    write_synthetic_store(tmp_path / "store", ds, synthetic_videos(ds, spec, video_ids=vids), spec)
    store = FeatureStore.open(tmp_path / "store")
    base = tiny_config(rounds=1, epochs_per_round=1).replace(switches=ROWS["baseline"].__dict__)
    same = base.replace(train={"cluster_features_follow_switches": False})
    full = tiny_config(rounds=1, epochs_per_round=1).replace(switches=ROWS["caf+ccp"].__dict__)
    assert cluster_feature_names(base) == ["i3d_rgb", "i3d_flow"]
    assert cluster_feature_names(same) == cluster_feature_names(full) == ["i3d_rgb", "i3d_flow", "clip_vitb16"]
    # (one round: the clusters returned are round 0's, made before any training)
    c_same = train(same, store, ds, tmp_path / "same").train_clusters
    c_full = train(full, store, ds, tmp_path / "full").train_clusters
    assert c_same == c_full
    meta = torch.load(tmp_path / "same" / "model.pt", weights_only=False)["meta"]
    assert set(meta["feature_configs"]) == {"i3d_rgb", "i3d_flow"}  # the model itself still reads I3D only

    args = build_parser().parse_args(["ablate", "--synthetic", "--same-cluster-input"])
    assert args.same_cluster_input
