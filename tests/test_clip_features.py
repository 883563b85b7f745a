"""CLIP extractor: loading real checkpoint formats (built here for a tiny open_clip config), pooling, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.clip_features import (
    ClipConfig,
    ClipExtractor,
    ClipWeightsError,
    build_clip_visual,
    clip_sample_positions,
    pool_snippet_embeddings,
    read_clip_state_dict,
)
from tests.media import register_tiny_clip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny CLIP (random, seeded) saved in both published formats."""
    import open_clip

    d = tmp_path_factory.mktemp("clip")
    name = register_tiny_clip(d)
    torch.manual_seed(123)
    model = open_clip.create_model(name).eval()

    class OpenAIArchive(torch.nn.Module):
        """Same parameter names as the model, saved as TorchScript like OpenAI's ViT-B-16.pt."""

        def __init__(self, m):
            super().__init__()
            for n, c in m.named_children():
                setattr(self, n, c)
            for n, p in m.named_parameters(recurse=False):
                setattr(self, n, p)
            self.register_buffer("input_resolution", torch.tensor(32))  # the ints OpenAI stores too

        def forward(self, x):
            return self.visual(x)

    ts = torch.jit.trace(OpenAIArchive(model).eval(), torch.zeros(1, 3, 32, 32), check_trace=False)
    ts_path = d / "tiny_openai.pt"
    torch.jit.save(ts, str(ts_path))
    sd_path = d / "tiny_open_clip.bin"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, sd_path)  # DDP-style prefix
    return {"name": name, "model": model, "torchscript": ts_path, "state_dict": sd_path, "dir": d}


def test_sample_positions_and_pooling():
    assert clip_sample_positions(16, 4) == [2, 6, 10, 14]
    assert clip_sample_positions(16, 1) == [8]
    assert clip_sample_positions(16, 16) == list(range(16))
    with pytest.raises(ValueError):
        clip_sample_positions(16, 17)
    e = torch.tensor([[[3.0, 0.0], [0.0, 0.5]]])  # norms differ: each frame still counts equally
    pooled = pool_snippet_embeddings(e)
    assert torch.allclose(pooled, torch.tensor([[2**-0.5, 2**-0.5]]), atol=1e-6)


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
def test_loads_published_formats_exactly(tiny, fmt):
    cfg = ClipConfig(model_name=tiny["name"], frames_per_snippet=2)
    ext = ClipExtractor(tiny[fmt], "cpu", cfg)
    assert not ext.random_init and len(ext.weights_sha256) == 64
    x = torch.rand(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(ext.visual(x), tiny["model"].visual(x), atol=1e-5)
    frames = np.random.default_rng(0).integers(0, 256, (2, 16, 40, 52, 3), dtype=np.uint8)
    feats = ext.snippet_features(frames)
    assert feats.shape == (2, 512) and feats.dtype == np.float32
    assert np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    # the pooled feature is the re-normalised mean of the normalised frame embeddings at positions 4, 12
    crops = ext.preprocess(torch.from_numpy(frames[0, [4, 12]]))
    emb = torch.nn.functional.normalize(ext.embed_crops(crops), dim=-1).mean(0)
    assert np.allclose(feats[0], (emb / emb.norm()).numpy(), atol=1e-5)


def test_openai_archive_keys_are_cleaned(tiny):
    sd = read_clip_state_dict(tiny["torchscript"])
    assert "input_resolution" not in sd and "visual.conv1.weight" in sd
    assert not any(k.startswith("module.") for k in read_clip_state_dict(tiny["state_dict"]))


def test_wrong_or_missing_weights_are_clear_errors(tiny, tmp_path):
    cfg = ClipConfig(model_name=tiny["name"])
    with pytest.raises(ClipWeightsError, match="random"):
        ClipExtractor(None, "cpu", cfg)  # no weights and no opt-in
    with pytest.raises(ClipWeightsError, match="does not exist"):
        ClipExtractor(tmp_path / "nope.pt", "cpu", cfg)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ClipWeightsError, match="not a readable CLIP checkpoint"):
        ClipExtractor(junk, "cpu", cfg)
    other = tmp_path / "other.pt"
    sd = torch.load(tiny["state_dict"])
    sd["module.visual.proj"] = torch.zeros(64, 256)  # wrong output width
    torch.save(sd, other)
    with pytest.raises(ClipWeightsError, match=r"shape mismatches.*proj"):
        build_clip_visual(cfg, other)
    with pytest.raises(ClipWeightsError, match="unknown open_clip model"):
        ClipExtractor(None, "cpu", ClipConfig(model_name="no-such-model"), allow_random=True)


def test_random_init_is_seeded(tiny):
    cfg = ClipConfig(model_name=tiny["name"], seed=7)
    a = ClipExtractor(None, "cpu", cfg, allow_random=True)
    b = ClipExtractor(None, "cpu", cfg, allow_random=True)
    assert a.random_init and a.weights_sha256 is None
    crops = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(a.embed_crops(crops), b.embed_crops(crops))


def test_zero_snippets_and_flipped_frames(tiny):
    ext = ClipExtractor(None, "cpu", ClipConfig(model_name=tiny["name"], seed=7), allow_random=True)
    assert ext.snippet_features(np.zeros((0, 16, 40, 48, 3), np.uint8)).shape == (0, ext.embed_dim)
    assert ext.snippet_features_from_crops(np.zeros((0, 2, 3, 32, 32), np.uint8)).shape == (0, ext.embed_dim)
    bgr = np.random.default_rng(0).integers(0, 256, (2, 16, 40, 48, 3), dtype=np.uint8)
    # frames[..., ::-1] (OpenCV's BGR to RGB) has negative strides, which torch.as_tensor refuses
    np.testing.assert_array_equal(ext.snippet_features(bgr[..., ::-1]),
                                  ext.snippet_features(np.ascontiguousarray(bgr[..., ::-1])))
    emb = ext.embed_crops(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert not emb.is_inference()  # ordinary tensors: usable in autograd and in place
    emb /= emb.norm(dim=1, keepdim=True)


def test_quick_gelu_is_the_default_and_can_be_turned_off(tmp_path):
    """OpenAI's weights need QuickGELU (the default); GELU-trained state dicts (LAION) need quick_gelu=False."""
    import json

    import open_clip
    from open_clip.model import QuickGELU

    import tests.media as media

    name = "clipae-tiny-test-gelu"
    if name not in open_clip.list_models():
        cfg = {k: v for k, v in media._TINY_CLIP_CFG.items() if k != "quick_gelu"}  # like open_clip's ViT-B-16
        (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
        open_clip.add_model_config(tmp_path / f"{name}.json")

    def n_quick(config):
        visual, _ = build_clip_visual(config, None)
        return sum(isinstance(m, QuickGELU) for m in visual.modules())

    assert n_quick(ClipConfig(model_name=name)) > 0
    assert n_quick(ClipConfig(model_name=name, quick_gelu=False)) == 0



def test_crop_entry_points_check_dtype_and_layout(tiny):
    """Float crops were scaled by 1/255 as if 0..255; shape errors named the flattened (T*k, ...) shape."""
    ext = ClipExtractor(None, "cpu", ClipConfig(model_name=tiny["name"], seed=7), allow_random=True)
    crops = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    with pytest.raises(TypeError, match=r"uint8 \(N, 3, S, S\) crops .*got torch.float32"):
        ext.embed_crops(crops.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"S=32 .*got \(2, 32, 32, 3\)$"):  # channels last
        ext.embed_crops(crops.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"\(T, k, 3, S, S\) crops with S=32 .*got \(1, 2, 3, 40, 40\)$"):
        ext.snippet_features_from_crops(np.zeros((1, 2, 3, 40, 40), np.uint8))
    assert torch.equal(ext.embed_crops(crops), ext.embed_crops(torch.from_numpy(crops)))
    # frames and snippets too: a wrong dtype is a TypeError (as for every extractor), a wrong layout a ValueError
    frames = np.zeros((2, 40, 48, 3), np.uint8)
    with pytest.raises(TypeError, match=r"uint8 \(N, H, W, 3\) RGB frames, got torch.float32"):
        ext.preprocess(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"uint8 \(N, H, W, 3\) RGB frames, got torch.uint8 \(2, 3, 40, 48\)"):
        ext.preprocess(frames.transpose(0, 3, 1, 2))
    with pytest.raises(TypeError, match=r"uint8 \(T, F, H, W, 3\) RGB snippets, got torch.float32"):
        ext.snippet_features(frames[None].astype(np.float32))
    with pytest.raises(ValueError, match=r"uint8 \(T, F, H, W, 3\) RGB snippets, got torch.uint8 \(2, 40, 48, 3\)"):
        ext.snippet_features(frames)


def test_crops_are_normalised_with_openai_mean_and_std(tiny):
    """open_clip's eval transform: x / 255, minus OpenAI's mean, divided by its std (folded into one affine
    map here; a shift of -mean without the division gave other embeddings)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    ext = ClipExtractor(None, "cpu", ClipConfig(model_name=tiny["name"], seed=7), allow_random=True)
    crops = np.random.default_rng(3).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = ext.visual((torch.from_numpy(crops).float() / 255 - mean) / std)
    torch.testing.assert_close(ext.embed_crops(crops), want, atol=1e-5, rtol=1e-4)
