"""I3D: loading checkpoints in the pytorch-i3d format, SAME padding, features, input helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.i3d import (
    I3DCheckpointError,
    Unit3D,
    build_i3d,
    load_i3d,
    rgb_to_i3d_input,
    same_padding,
)

torch.set_num_threads(2)


# Published pytorch-i3d layout (rgb_imagenet.pt / flow_imagenet.pt), written out from the
# paper's Inception-v1 table, independently of extractors.i3d.
def published_shapes(in_channels: int, num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def unit(name, cin, cout, k, bn=True, bias=False):
        shapes[f"{name}.conv3d.weight"] = (cout, cin, k, k, k)
        if bias:
            shapes[f"{name}.conv3d.bias"] = (cout,)
        if bn:
            for p in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{name}.bn.{p}"] = (cout,)

    unit("Conv3d_1a_7x7", in_channels, 64, 7)
    unit("Conv3d_2b_1x1", 64, 64, 1)
    unit("Conv3d_2c_3x3", 64, 192, 3)
    cin = 192
    for name, (o0, o1a, o1b, o2a, o2b, o3) in [
        ("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
        ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
        ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
        ("Mixed_4f", (256, 160, 320, 32, 128, 128)), ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
        ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
    ]:  # fmt: skip
        unit(f"{name}.b0", cin, o0, 1)
        unit(f"{name}.b1a", cin, o1a, 1)
        unit(f"{name}.b1b", o1a, o1b, 3)
        unit(f"{name}.b2a", cin, o2a, 1)
        unit(f"{name}.b2b", o2a, o2b, 3)
        unit(f"{name}.b3b", cin, o3, 1)
        cin = o0 + o1b + o2b + o3
    assert cin == 1024
    unit("logits", 1024, num_classes, 1, bn=False, bias=True)
    return shapes


def published_state_dict(in_channels: int, seed: int = 0, with_nbt: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in published_shapes(in_channels).items():
        if k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith("bn.weight"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 5:
            fan_in = int(np.prod(shape[1:]))
            sd[k] = torch.randn(shape, generator=g) * np.sqrt(2.0 / fan_in)
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.1
        if with_nbt and k.endswith("bn.running_var"):
            sd[k.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    return sd


@pytest.fixture(scope="module")
def rgb_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("i3d") / "rgb_imagenet.pt"
    sd = published_state_dict(3)
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="module")
def rgb_model(rgb_ckpt):
    return load_i3d(rgb_ckpt[0], in_channels=3)


def test_model_keys_are_the_published_keys():
    for c in (3, 2):
        sd = build_i3d(c).state_dict()
        keys = {k for k in sd if not k.endswith("num_batches_tracked")}
        shapes = published_shapes(c)
        assert keys == set(shapes)
        assert all(tuple(sd[k].shape) == shapes[k] for k in shapes)


def test_load_strict_values_and_eval_mode(rgb_model, rgb_ckpt):
    _, sd = rgb_ckpt
    msd = rgb_model.state_dict()
    for k, v in sd.items():
        assert torch.equal(msd[k], v), k
    assert not rgb_model.training
    assert rgb_model.Conv3d_1a_7x7.bn.eps == 1e-3 and rgb_model.Conv3d_1a_7x7.bn.momentum == 0.01


def test_load_with_num_batches_tracked_and_flow(tmp_path):
    path = tmp_path / "flow_imagenet.pt"
    torch.save(published_state_dict(2, seed=1, with_nbt=True), path)
    m = load_i3d(path, in_channels=2)
    assert m.Conv3d_1a_7x7.conv3d.weight.shape[1] == 2
    out = m.features(torch.zeros(1, 2, 8, 64, 64))
    assert out.shape == (1, 1024)


def test_bad_checkpoints_fail_clearly(rgb_ckpt, tmp_path):
    _, sd = rgb_ckpt
    bad = dict(sd)
    bad["Mixed_3b.branch0.conv3d.weight"] = bad.pop("Mixed_3b.b0.conv3d.weight")
    torch.save(bad, tmp_path / "renamed.pt")
    with pytest.raises(I3DCheckpointError) as e:
        load_i3d(tmp_path / "renamed.pt", 3)
    msg = str(e.value)
    assert "missing keys (1): Mixed_3b.b0.conv3d.weight" in msg
    assert "unexpected keys (1): Mixed_3b.branch0.conv3d.weight" in msg
    # wrong stream: an rgb checkpoint loaded as flow
    with pytest.raises(I3DCheckpointError, match=r"Conv3d_1a_7x7.conv3d.weight: file \(64, 3, 7, 7, 7\)"):
        load_i3d(rgb_ckpt[0], 2)
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "dp.pt")
    with pytest.raises(I3DCheckpointError, match="DataParallel"):
        load_i3d(tmp_path / "dp.pt", 3)
    torch.save({"model": 1}, tmp_path / "notsd.pt")
    with pytest.raises(I3DCheckpointError, match="state_dict"):
        load_i3d(tmp_path / "notsd.pt", 3)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(I3DCheckpointError):
        load_i3d(tmp_path / "junk.pt", 3)


def test_features_full_size_clip(rgb_model):
    """The standard (1, 3, 16, 224, 224) clip; equals pytorch-i3d's 2x7x7 average pool."""
    x = torch.rand(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    f = rgb_model.features(x)
    assert f.shape == (1, 1024) and f.dtype == torch.float32 and torch.isfinite(f).all()
    with torch.inference_mode():
        m5c = rgb_model.mixed_5c(x)
        assert m5c.shape == (1, 1024, 2, 7, 7)
        ref = rgb_model.avg_pool(m5c).flatten(1)
        assert rgb_model.logits(m5c.mean((2, 3, 4), keepdim=True)).shape == (1, 400, 1, 1, 1)
    torch.testing.assert_close(f, ref, atol=1e-5, rtol=1e-5)


def test_features_any_size_deterministic_and_batched(rgb_model):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 9, 67, 50, generator=g) * 2 - 1  # odd sizes: asymmetric SAME padding
    f = rgb_model.features(x)
    assert f.shape == (3, 1024)
    torch.testing.assert_close(rgb_model.features(x), f, atol=0, rtol=0)
    single = torch.cat([rgb_model.features(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(single, f, atol=1e-4, rtol=1e-4)
    assert (f[0] - f[1]).abs().max() > 1e-4  # different clips, different features
    with pytest.raises(ValueError):
        rgb_model.features(torch.zeros(1, 2, 8, 32, 32))


def test_implicit_padding_path_equals_explicit_same_padding(rgb_model):
    """The fast stride-1 path (padding inside the conv) is exactly TF SAME padding."""
    x = torch.rand(1, 3, 8, 45, 38, generator=torch.Generator().manual_seed(2)) * 2 - 1
    fast = rgb_model.features(x)
    units = [m for m in rgb_model.modules() if isinstance(m, Unit3D)]
    saved = [u._implicit_pad for u in units]
    try:
        for u in units:
            u._implicit_pad = None
        slow = rgb_model.features(x)
    finally:
        for u, s in zip(units, saved):
            u._implicit_pad = s
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


def test_same_padding_matches_tf_rule():
    # TF: out = ceil(n / s); total = max((out - 1) * s + k - n, 0); front = total // 2
    for n in range(1, 40):
        for k in (1, 2, 3, 7):
            for s in (1, 2):
                out = -(-n // s)
                total = max((out - 1) * s + k - n, 0)
                assert same_padding(n, k, s) == (total // 2, total - total // 2)


def test_input_conversions():
    frames = np.zeros((16, 4, 5, 3), dtype=np.uint8)
    frames[..., 0] = 255
    frames[..., 1] = 0
    frames[..., 2] = 128
    x = rgb_to_i3d_input(frames)
    assert x.shape == (1, 3, 16, 4, 5) and x.dtype == torch.float32
    assert torch.all(x[0, 0] == 1.0) and torch.all(x[0, 1] == -1.0)
    torch.testing.assert_close(x[0, 2], torch.full((16, 4, 5), 128 / 255 * 2 - 1))
    assert rgb_to_i3d_input(np.zeros((2, 16, 4, 5, 3), np.uint8)).shape == (2, 3, 16, 4, 5)
    with pytest.raises(TypeError):
        rgb_to_i3d_input(frames.astype(np.float32))
    with pytest.raises(ValueError):
        rgb_to_i3d_input(np.zeros((16, 4, 5), np.uint8))
    # negative strides (the BGR -> RGB flip), which torch.as_tensor refuses
    bgr = frames[..., ::-1]
    torch.testing.assert_close(rgb_to_i3d_input(bgr), rgb_to_i3d_input(np.ascontiguousarray(bgr)))


def test_features_are_ordinary_tensors(rgb_model):
    """A linear probe on the features trains, and they can be normalised in place (inference-mode tensors
    refuse both)."""
    f = rgb_model.features(torch.rand(2, 3, 8, 32, 32) * 2 - 1)
    assert not f.requires_grad and not f.is_inference()
    torch.nn.Linear(1024, 3)(f).sum().backward()
    f /= f.norm(dim=1, keepdim=True)


def test_random_init_is_seeded():
    a = build_i3d(3, seed=3).Mixed_5c.b0.conv3d.weight
    b = build_i3d(3, seed=3).Mixed_5c.b0.conv3d.weight
    c = build_i3d(3, seed=4).Mixed_5c.b0.conv3d.weight
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert build_i3d(3, num_classes=20).logits.conv3d.bias.shape == (20,)



def test_features_refuse_unscaled_input_and_take_numpy():
    """uint8 frames ran as 0..255 floats (the weights expect [-1, 1]): features that look fine but are not."""
    net = build_i3d(3, seed=0)
    frames = np.random.default_rng(0).integers(0, 256, (1, 3, 8, 32, 32), dtype=np.uint8)
    for x in (frames, torch.from_numpy(frames)):
        with pytest.raises(TypeError, match=r"floating-point input in \[-1, 1\], got torch.uint8.*rgb_to_i3d_input.*"
                                            r"flow_to_i3d_input"):
            net.features(x)
    x = rgb_to_i3d_input(frames[0].transpose(1, 2, 3, 0))  # (T, H, W, 3) -> (1, 3, T, H, W)
    assert torch.equal(net.features(x.numpy()), net.features(x))


def test_rgb_to_i3d_input_reports_the_callers_shape():
    with pytest.raises(ValueError, match=r"got \(16, 3, 64, 64\)$"):  # channels first: not (1, 16, 3, 64, 64)
        rgb_to_i3d_input(np.zeros((16, 3, 64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"got \(64, 64, 3\)$"):
        rgb_to_i3d_input(np.zeros((64, 64, 3), np.uint8))


def test_odd_in_channels_and_a_wrapped_checkpoint(tmp_path):
    """`load_i3d(p, "3")` failed deep inside torch; a training checkpoint's {"state_dict": ...} wrapper got
    "does not contain a state_dict (got dict)"."""
    from extractors.i3d import I3DCheckpointError, check_i3d_state_dict

    sd = published_state_dict(3)
    for bad in ("3", 3.0, True, 0):
        with pytest.raises(ValueError, match="in_channels must be an integer"):
            check_i3d_state_dict(sd, bad, "x.pt")
    assert set(check_i3d_state_dict({"state_dict": sd, "epoch": 3}, 3, "x.pt")) == set(sd)
    with pytest.raises(I3DCheckpointError, match=r"not a plain state_dict: 1 entries are not tensors \(epoch\)"):
        check_i3d_state_dict({**sd, "epoch": 3}, 3, "x.pt")


def test_strided_same_padding_pads_at_the_end():
    """TF SAME puts the odd padding pixel at the END (4 px, kernel 3, stride 2: front 0, back 1), so the first
    output reads the first input pixel; padding at the front would shift every strided conv by a pixel."""
    from extractors.i3d import MaxPool3dSamePadding

    unit = Unit3D(1, 1, (1, 3, 3), stride=(1, 2, 2), activation=False, use_batch_norm=False).eval()
    with torch.no_grad():
        unit.conv3d.weight.zero_()
        unit.conv3d.weight[0, 0, 0, 0, 0] = 1.0  # the top-left tap
        x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 1, 1, 4, 4)
        out = unit(x)
    assert out.shape == (1, 1, 1, 2, 2)
    assert out[0, 0, 0].tolist() == [[1.0, 3.0], [9.0, 11.0]]  # x[0, 0], x[0, 2], x[2, 0], x[2, 2]
    pool = MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=0)
    assert pool(x)[0, 0, 0].tolist() == [[11.0, 12.0], [15.0, 16.0]]  # windows from x[0, 0] (padding at the front: 6)


def test_inception_branches_are_concatenated_in_the_published_order(rgb_model):
    """Channels of a mixed block are b0 | b1 (1x1 -> 3x3) | b2 (1x1 -> 3x3) | b3 (pool -> 1x1), as in
    pytorch-i3d: the published checkpoints' later layers expect them in that order."""
    m = rgb_model.Mixed_3b
    x = torch.rand(1, 192, 2, 7, 7, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = m(x)
        parts = [m.b0(x), m.b1b(m.b1a(x)), m.b2b(m.b2a(x)), m.b3b(m.b3a(x))]
    assert [p.shape[1] for p in parts] == [64, 128, 32, 32]
    torch.testing.assert_close(out, torch.cat(parts, dim=1), rtol=0, atol=0)
    assert not torch.equal(parts[0][:, :32], parts[2])  # (distinct branches: the order is observable)


def test_an_extra_key_in_a_complete_checkpoint_is_refused(rgb_ckpt, tmp_path):
    """Strict loading: a key the network does not have (another model's head, a fine-tuned extra) is an
    error naming it, not silently dropped."""
    _, sd = rgb_ckpt
    torch.save({**sd, "logits.extra.weight": torch.zeros(3)}, tmp_path / "extra.pt")
    with pytest.raises(I3DCheckpointError, match=r"unexpected keys \(1\): logits.extra.weight"):
        load_i3d(tmp_path / "extra.pt", 3)
