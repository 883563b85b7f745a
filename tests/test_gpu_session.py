"""bench/gpu_session.sh, checked without a GPU: every step's command uses flags its script has, the
TV-L1 variants parse, and the default steps fit in one device call. Device time is scarce (15 minutes a
session, machine start included, when one is lent at all): a typo there would cost a whole call."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("tests tests-fast tvl1 tvl1-triton tvl1-variants tvl1-tail tvl1-band tvl1-band2 extract extract-triton profile "
         "profile-triton e2e e2e-fast e2e-r48 e2e-f16 e2e-flat e2e-f16flat e2e-long e2e-long-fast e2e-long-r48 "
         "e2e-long-f16 e2e-long-flat e2e-long-f16flat e2e-flat1 e2e-long-flat1 e2e-long-best e2e-long-best-w12 "
         "e2e-flat-w4 e2e-long-flat_a16 e2e-long-f16flat_a16 e2e-long-fused_a16 e2e-long-fused_a16_r48 "
         "e2e-long-fused1_a16_r40-w10 e2e-long-best-b1024-w4 tvl1-streams e2e-long-flat_a16-b1024 e2e-long-best-b2048-w2 e2e-long-flowonly e2e-long-best-flowonly-b1024-w6 train").split()
DEVICE_CALL_S = 600  # the device tool's per-call limit
SETUP_S = 40  # installing the carried wheels, nvidia-smi, imports, the import check (≈ 20 s + ~10 s)


def _dry_run(out: Path, *steps: str) -> list[tuple[str, int, list[str]]]:
    env = {**os.environ, "GPU_SESSION_DRY_RUN": "1", "PYTHON": sys.executable}
    r = subprocess.run(["bash", "bench/gpu_session.sh", str(out), *steps], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    log = (out / "session.log").read_text()
    assert "unknown step" not in log, log
    rows = []
    for line in log.splitlines():
        name, limit, *cmd = line.split()
        rows.append((name, int(limit), cmd))
    return rows


def test_default_steps_fit_one_device_call(tmp_path):
    rows = _dry_run(tmp_path)
    assert [r[0] for r in rows] == ["tvl1-variants", "e2e-long", "e2e-long-best", "e2e-long-f16flat_a16"]
    # Each step's timeout also allows 10 s to kill it (--kill-after=10).
    assert SETUP_S + sum(limit + 10 for _, limit, _ in rows) <= DEVICE_CALL_S, rows


def test_unknown_steps_are_refused(tmp_path):
    env = {**os.environ, "GPU_SESSION_DRY_RUN": "1", "PYTHON": sys.executable}
    subprocess.run(["bash", "bench/gpu_session.sh", str(tmp_path), "e2e-bogus", "e2e-flat-long"], cwd=ROOT,
                   env=env, capture_output=True, text=True, timeout=60, check=True)
    log = (tmp_path / "session.log").read_text()
    assert log.count("unknown step") == 2, log
    subprocess.run(["bash", "bench/gpu_session.sh", str(tmp_path), "e2e-long-wx", "e2e-long-best-w"], cwd=ROOT,
                   env=env, capture_output=True, text=True, timeout=60, check=True)
    assert (tmp_path / "session.log").read_text().count("unknown step") == 4
    # -bN: TV-L1 batches (windows) of N pairs, N a multiple of 16 (a window is N / 16 snippets)
    subprocess.run(["bash", "bench/gpu_session.sh", str(tmp_path), "e2e-long-b100", "e2e-long-bx", "e2e-long-b0"],
                   cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert (tmp_path / "session.log").read_text().count("unknown step") == 7
    # no leading zeros (bash would read them as octal: -b09 aborts the session, -b020 is 16)
    subprocess.run(["bash", "bench/gpu_session.sh", str(tmp_path), "e2e-long-b0512", "e2e-long-w08"],
                   cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert (tmp_path / "session.log").read_text().count("unknown step") == 9


def test_batch_suffix_sets_windows_and_flow_batch(tmp_path):
    rows = {name: cmd for name, _, cmd in _dry_run(tmp_path, "e2e-long-best-b2048-w2", "e2e-long")}
    cmd = rows["e2e-long-best-b2048-w2"]
    assert cmd[cmd.index("--flow-batch") + 1] == "2048" and cmd[cmd.index("--window-snippets") + 1] == "128"
    assert cmd[cmd.index("--video-workers") + 1] == "2"
    cmd = rows["e2e-long"]
    assert cmd[cmd.index("--flow-batch") + 1] == "512" and cmd[cmd.index("--window-snippets") + 1] == "32"
    assert "--features" not in cmd  # all four


def test_flowonly_suffix_extracts_i3d_flow_alone(tmp_path):
    rows = {name: cmd for name, _, cmd in _dry_run(tmp_path, "e2e-long-best-flowonly-b1024-w6", "e2e-long-flowonly")}
    for cmd in rows.values():
        assert cmd[cmd.index("--features") + 1] == "i3d_flow"
    cmd = rows["e2e-long-best-flowonly-b1024-w6"]
    assert cmd[cmd.index("--flow-batch") + 1] == "1024" and cmd[cmd.index("--video-workers") + 1] == "6"
    assert cmd[cmd.index("--e2e-videos") + 1] == "12"  # whole videos per worker, at least 8


def test_video_count_is_a_multiple_of_the_workers(tmp_path):
    rows = {name: cmd for name, _, cmd in _dry_run(tmp_path, "e2e-long", "e2e-long-w3", "e2e-long-w12", "e2e-long-w4")}
    videos = {name: int(cmd[cmd.index("--e2e-videos") + 1]) for name, cmd in rows.items()}
    assert videos == {"e2e-long": 8, "e2e-long-w3": 9, "e2e-long-w12": 12, "e2e-long-w4": 8}


def test_tvl1_streams_runs_on_cpu(tmp_path):
    """bench/tvl1_streams.py end to end on tiny frames (torch backend): threads, batches, JSON."""
    out = tmp_path / "streams.json"
    r = subprocess.run([sys.executable, "bench/tvl1_streams.py", "--device", "cpu", "--size", "32", "--unique", "4",
                        "--source", "e2e", "--e2e-seconds", "3", "--configs", "1x2,2x3", "--total", "6", "--rounds", "1", "--variant", "t=backend:torch",
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    d = json.loads(out.read_text())
    assert d["runs"]["1x2"][0]["pairs"] == 6 and d["runs"]["2x3"][0]["pairs"] == 6  # whole batches >= --total
    assert d["summary"]["1x2"]["vs_first"] == 1.0 and d["summary"]["2x3"]["pairs_per_s"] > 0
    assert d["source"] == "e2e" and d["unique_pairs"] == 4


def test_e2e_spans_spread_over_the_whole_video():
    sys.path.insert(0, str(ROOT / "bench"))
    from tvl1_launch_balance import spread_spans

    starts = spread_spans(3876, 24, 8)
    assert len(starts) == 24 and starts[0] == 0 and starts[-1] == 3876 - 9  # the last span ends on the last frame
    assert all(b - a >= 8 for a, b in zip(starts, starts[1:]))  # spans do not overlap
    assert spread_spans(20, 5, 8) == [0, 2, 5, 8, 11]  # (a short video: overlapping spans, none repeated)
    with pytest.raises(ValueError):
        spread_spans(8, 1, 8)


def test_every_step_uses_real_flags(tmp_path):
    rows = _dry_run(tmp_path, *STEPS)
    assert {r[0] for r in rows} >= {s for s in STEPS if not s.startswith("tvl1-band")}
    helps: dict[str, str] = {}
    variants = []
    for name, _, cmd in rows:
        if cmd[1:3] == ["-m", "pytest"]:  # the GPU tests
            assert "tests/test_gpu.py" in cmd, (name, cmd)
            continue
        script = next(c for c in cmd if c.endswith(".py"))
        if script not in helps:
            r = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                               timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert r.returncode == 0, (script, r.stderr[-2000:])
            helps[script] = r.stdout
        flags = {c.split("=")[0] for c in cmd if c.startswith("--")}
        missing = sorted(f for f in flags if not re.search(rf"{re.escape(f)}\b", helps[script]))
        assert not missing, (name, script, missing)
        if "--variants" in cmd:
            i = cmd.index("--variants") + 1
            variants += [c for c in cmd[i:] if not c.startswith("--")]
    assert variants
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import profile_tvl1  # (its --help ran above: an import failure is a real failure, not a skip)

        for spec in variants:
            name, cfg, knobs = profile_tvl1.parse_variant(spec)
            assert cfg.backend in ("torch", "triton", "triton-grid"), spec
            assert set(knobs) <= set(profile_tvl1.KNOBS.values()), spec
            if "SWEEP_LAYOUT" in knobs:
                assert knobs["SWEEP_LAYOUT"] in ("rows", "flat", "fused"), spec
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_launch_balance_counts_the_end_to_end_videos_pairs(tmp_path):
    """bench/tvl1_launch_balance.py --source e2e (the band-step count docs/tvl1.md multiplies by frames/s)."""
    out = tmp_path / "lb.json"
    r = subprocess.run([sys.executable, "bench/tvl1_launch_balance.py", "--source", "e2e", "--e2e-seconds", "2",
                        "--spans", "2", "--pairs", "2", "--batches", "4", "--json", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    d = json.loads(out.read_text())["sets"]["e2e"]
    assert d["unique_pairs"] == 4 and d["span_starts"][0] == 0 and len(d["span_starts"]) == 2
    steps = d["span_work_band_steps_per_pair"]
    assert len(steps) == 2 and all(s > 0 for s in steps)
    assert d["batches"]["4"]["work_band_steps_per_pair"]["flat"] == pytest.approx(sum(steps) / 2, abs=0.1)


def test_a_step_name_first_is_refused_and_out_defaults_to_the_device_tools(tmp_path):
    """`bash bench/gpu_session.sh e2e-long` made a folder named e2e-long whose results never came back; with no
    argument the results went to bench/out/gpu, not to the device tool's $OUT."""
    env = {**os.environ, "GPU_SESSION_DRY_RUN": "1", "PYTHON": sys.executable}
    r = subprocess.run(["bash", "bench/gpu_session.sh", "e2e-long"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "output folder" in r.stderr and not (ROOT / "e2e-long").exists()
    r = subprocess.run(["bash", str(ROOT / "bench/gpu_session.sh")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env={**env, "OUT": str(tmp_path / "device_out")})
    assert r.returncode == 0, r.stderr
    assert "tvl1-variants" in (tmp_path / "device_out" / "session.log").read_text()  # (run from another cwd too)


def test_best_variant_needs_both_sets_and_falls_back_to_the_default(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from best_tvl1_variant import best
    finally:
        sys.path.remove(str(ROOT / "bench"))

    both = lambda b, s: {"bikes": [b], "synthetic": [s]}  # noqa: E731
    rates = lambda **v: {f"pairs_per_s[{n}][{k}]": r for n, sets in v.items() for k, r in sets.items()}  # noqa: E731
    assert best({}) == "flat"
    assert best(rates(rows={"bikes": [500.0]})) == "flat"  # rows alone, on one set only: not "the fastest"
    assert best(rates(flat=both(600, 3800), flat_a16=both(700, 4000), f16flat_a16=both(900, 5000))) == "flat_a16"
    assert best({"failed": {"fused_a16": "CompilationError"}, **rates(flat=both(600, 3800),
                                                                     fused_a16=both(0.0, 0.0))}) == "flat"
    out = subprocess.run([sys.executable, "bench/best_tvl1_variant.py", str(tmp_path / "absent.json")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "flat"
