"""Outside projects read our stores with plain zarr-python / xarray, without importing this project."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from storage import FeatureStore
from tests.store_helpers import feats, info, provs

READER = textwrap.dedent('''
    import json, sys
    import numpy as np
    import xarray as xr
    import zarr

    path = sys.argv[1]
    root = zarr.open_group(path, mode="r")
    meta = root.attrs["clipae_store"]
    videos = root["videos"]
    out = {"grid": meta["grid"], "features": meta["features"], "videos": {}}
    for vid in sorted(videos.group_keys()):
        g = videos[vid]
        ds = xr.open_zarr(path, group=f"videos/{vid}", consolidated=False)
        out["videos"][vid] = {
            "rgb_sum": float(np.asarray(g["i3d_rgb"][:]).astype(np.float64).sum()),
            "clip_shape": list(ds["clip_vitb16"].shape),
            "time0": float(ds["time"][0]),
            "T": g.attrs["clipae_video"]["num_snippets"],
            "random_init": g.attrs["clipae_video"]["features"]["i3d_rgb"]["provenance"]["random_init"],
            "audio_present": int(np.asarray(ds["audio_mask"]).sum()),
        }
        # README: read what you need, then check the publication's version is still the group's current one
        ds = ds.load()
        current = zarr.open_group(path, mode="r")["videos"][vid].attrs["clipae_video"]["version"]
        out["videos"][vid]["version_ok"] = bool(current) and current == ds.attrs["clipae_video"]["version"]
    assert not any(m in sys.modules for m in ("storage", "clipae", "models", "extractors")), "project imported"
    print(json.dumps(out))
''')


def test_plain_zarr_and_xarray_read_the_store(tmp_path):
    dims = {"i3d_rgb": 1024, "i3d_flow": 1024, "clip_vitb16": 512, "vggish": 128}
    store = FeatureStore.create(tmp_path / "s.zarr", features=dims)
    expected = {}
    for i, vid in enumerate(["video_a", "video_b"]):
        f = feats(20 + i, dims, seed=i)
        f["audio_mask"][:5] = False
        store.write_video(vid, f, info(vid), provs(f))
        expected[vid] = f
    res = subprocess.run([sys.executable, "-c", READER, str(store.path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    import json

    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["grid"] == {"fps": 25.0, "snippet_frames": 16, "stride": 16} and out["features"] == dims
    assert sorted(out["videos"]) == ["video_a", "video_b"]
    for vid, f in expected.items():
        v = out["videos"][vid]
        assert v["T"] == f["i3d_rgb"].shape[0] and v["clip_shape"] == [v["T"], 512]
        assert np.isclose(v["rgb_sum"], f["i3d_rgb"].astype(np.float64).sum())
        assert v["time0"] == 0.32 and v["random_init"] is True and v["audio_present"] == v["T"] - 5
        assert v["version_ok"]
