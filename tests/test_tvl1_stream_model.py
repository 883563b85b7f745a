"""bench/tvl1_stream_model.py: the slot model that bench/tvl1_streams.py's GPU timings are read against."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import tvl1_stream_model as m  # noqa: E402


def _pairs(n: int, iterations: int = 1, width: int = 224) -> list[dict]:
    return [{(width, 0, 0): iterations} for _ in range(n)]


def test_one_sm_packs_five_programs_at_224_px():
    steps = m.band_steps(224)
    assert steps == 99  # ceil((224 * 224 + 224) / 512)
    # 10 equal programs, 5 at a time on one SM: two rounds, every slot busy
    assert m.utilisation(_pairs(10), streams=1, batch=10, sms=1, batches=1) == pytest.approx(1.0)
    # 6 programs: the second round holds one program in five slots
    assert m.utilisation(_pairs(6), streams=1, batch=6, sms=1, batches=1) == pytest.approx(0.6)
    # at the other widths 4 fit (64 registers), unless the rows are padded (48 everywhere)
    assert m.utilisation(_pairs(8, width=179), streams=1, batch=8, sms=1, batches=1) == pytest.approx(1.0)
    assert m.utilisation(_pairs(8, width=179), streams=1, batch=8, sms=1, batches=1,
                         padded=True) == pytest.approx(0.8)


def test_a_slow_pair_holds_its_stream_and_other_streams_fill_in():
    slow = [{(224, 0, 0): 10}] + [{(224, 0, 0): 1}] * 4  # one launch: one pair of 10 iterations, four of 1
    one = m.utilisation(slow * 2, streams=1, batch=5, sms=1, batches=2)
    two = m.utilisation(slow * 2, streams=2, batch=5, sms=1, batches=1)
    assert one == pytest.approx(14 / 50)  # each launch lasts 10 iterations with 14 of 50 slot-iterations used
    assert two > 1.5 * one  # the second stream's launch runs beside the first one's slow pair


def test_recorded_counts_load():
    pairs = m.load_pairs(*m.SETS["synthetic"])
    assert len(pairs) == 64 and all(k[0] in (91, 114, 143, 179, 224) for p in pairs for k in p)
    e2e = m.load_pairs(*m.SETS["e2e"])  # the end-to-end videos' pairs: 64 spans of 8
    assert len(e2e) == 512 and all(k[0] in (91, 114, 143, 179, 224) for p in e2e for k in p)


def test_streams_summary_skips_the_warm_up_round_and_keeps_failures():
    import tvl1_streams

    runs = {"1x512": [{"pairs_per_s": 10.0, "peak_gb": 1.0}, {"pairs_per_s": 100.0, "peak_gb": 2.0}],
            "8x512": [{"pairs_per_s": 50.0, "peak_gb": 3.0}, {"pairs_per_s": 300.0, "peak_gb": 4.0}],
            "1x2048": [{"pairs": 2048, "error": "OutOfMemoryError()"}]}
    s = tvl1_streams.summarize(runs, rounds=2)
    assert s["1x512"] == {"pairs_per_s": 100.0, "vs_first": 1.0, "peak_gb": 2.0}
    assert s["8x512"]["vs_first"] == 3.0
    assert s["1x2048"] == {"error": "OutOfMemoryError()"}
    assert tvl1_streams.summarize(runs, rounds=1)["8x512"]["pairs_per_s"] == 175.0  # one round: all of it
    with pytest.raises(SystemExit):
        tvl1_streams.parse_configs("4x")
