"""Run records: atomic publication, immutability, and `clipae runs list|show|compare`."""
from __future__ import annotations

import datetime as dt
import json
import os
import stat

import numpy as np
import pytest

from clipae.cli import main
from clipae.runs import RECORD_FILE, RunRecordWriter, code_revision, find_run, list_runs


def _publish(runs_dir, run_id, maps, started=None, config=None, **extra):
    w = RunRecordWriter(run_id, runs_dir, started=started)
    w.write_json("metrics.json", {"mAP": list(maps.values())})
    w.write_bytes("plots/x.png", b"\x89PNG fake")
    (w.path / "model").mkdir()
    (w.path / "model" / "model.pt").write_bytes(b"weights")
    return w, w.publish({
        "flow": "extract-and-train", "dataset": "demo", "status": "completed",
        "code_revision": "abc123", "store_fingerprint": "f" * 16,
        "config": config or {"dataset": "demo", "training": {"rounds": 3}},
        "metrics": {"map_by_tiou": maps, "average_map": sum(maps.values()) / len(maps)},
        "failures": [{"video_id": "bad", "error": "VideoError: x: decode: broken"}], "timings_s": {"extract": 1.5},
        **extra,
    })


def test_publish_is_atomic_dated_and_read_only(tmp_path):
    started = dt.datetime(2026, 11, 22, 23, 59, tzinfo=dt.timezone.utc)
    w, path = _publish(tmp_path, "run-1", {"0.10": 0.5, "0.50": 0.25}, started=started)
    assert path == tmp_path / "2026-11-22" / "run-1"
    assert not w.staging.exists(), "the staging directory is renamed, not copied"
    record = json.loads((path / RECORD_FILE).read_text())
    assert set(record["files"]) == {"metrics.json", "plots/x.png", "model/model.pt"}
    assert record["run_id"] == "run-1" and record["started"].startswith("2026-11-22T23:59")
    for p in [path, *path.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), f"{p} is writable"
    if os.geteuid() != 0:  # root ignores permission bits
        with pytest.raises(PermissionError):
            (path / "metrics.json").write_text("tampered")


def test_unpublished_staging_is_invisible_and_a_retry_never_overwrites(tmp_path):
    RunRecordWriter("crashed", tmp_path).write_json("config.json", {})
    assert list_runs(tmp_path) == []
    _, first = _publish(tmp_path, "same", {"0.50": 0.1})
    _, second = _publish(tmp_path, "same", {"0.50": 0.2})
    assert first != second and second.name == "same-2"
    assert json.loads((first / RECORD_FILE).read_text())["metrics"]["average_map"] == pytest.approx(0.1)


def test_find_by_prefix_and_ambiguity(tmp_path):
    _publish(tmp_path, "abcd-1", {"0.50": 0.1})
    _publish(tmp_path, "abce-2", {"0.50": 0.2})
    assert find_run("abcd", tmp_path).run_id == "abcd-1"
    with pytest.raises(KeyError, match="ambiguous"):
        find_run("abc", tmp_path)
    with pytest.raises(KeyError, match="no run record"):
        find_run("zzz", tmp_path)
    for i in range(12):  # many matches: counted, ten named (was every id, one 9 KB line for 256 runs)
        _publish(tmp_path, f"abf-{i:02d}", {"0.50": 0.1})
    with pytest.raises(KeyError, match=r"14 runs match \(abcd-1, abce-2, abf-00, .*abf-07, \.\.\.\)"):
        find_run("ab", tmp_path)


def test_cli_list_show_compare(tmp_path, capsys):
    _publish(tmp_path, "run-a", {"0.10": 0.5, "0.50": 0.25})
    _publish(tmp_path, "run-b", {"0.10": 0.6, "0.50": 0.35}, config={"dataset": "demo", "training": {"rounds": 5}})
    assert main(["runs", "--runs-dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert "run-a" in out and "run-b" in out and "37.50" in out and "47.50" in out
    assert main(["runs", "--runs-dir", str(tmp_path), "show", "run-a"]) == 0
    out = capsys.readouterr().out
    assert "25.00" in out and "bad: VideoError" in out and "model/model.pt" in out
    assert main(["runs", "show", "run-a", "--runs-dir", str(tmp_path)]) == 0  # the flag after the action too
    out = capsys.readouterr().out
    assert "25.00" in out and "  training.rounds: 3" in out and "RANDOM-INIT" not in out  # settings shown
    _publish(tmp_path, "run-r", {"0.10": 0.9}, random_init_features=["i3d_rgb"])
    assert main(["runs", "show", "run-r", "--runs-dir", str(tmp_path)]) == 0
    assert "RANDOM-INIT features i3d_rgb" in capsys.readouterr().out
    assert main(["runs", "list", "--runs-dir", str(tmp_path)]) == 0
    assert [ln for ln in capsys.readouterr().out.splitlines() if "run-r" in ln][0].endswith("(random-init features)")
    assert main(["runs", "--runs-dir", str(tmp_path), "compare", "run-a", "run-b"]) == 0
    out = capsys.readouterr().out
    assert "config.training.rounds: 3 | 5" in out
    assert "35.00" in out and "25.00" in out


def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
    """User mistakes give `clipae CMD: error: ...` and exit 2, not a traceback (CLIPAE_DEBUG=1 shows it)."""
    monkeypatch.delenv("CLIPAE_DEBUG", raising=False)
    _publish(tmp_path, "run-a", {"0.10": 0.5})
    cases = [
        (["runs", "--runs-dir", str(tmp_path), "show", "zzz"], "clipae runs show: error: no run record matches 'zzz'"),
        (["evaluate", "--dataset", "demo", "--pred", str(tmp_path / "none.json")], "clipae evaluate: error:"),
        (["train", "--store", str(tmp_path / "none.zarr"), "--dataset", "demo"], "clipae train: error: store"),
        (["train", "--store", str(tmp_path / "none.zarr"), "--dataset", "nosuch"], "clipae train: error:"),
        (["evaluate", "--gt", str(tmp_path / "bad.json"), "--pred", str(tmp_path / "bad.json")], "clipae evaluate: error:"),
        (["train", "--store", str(tmp_path / "none.zarr"), "--dataset", str(tmp_path / "bad.yaml")], "clipae train: error:"),
    ]
    (tmp_path / "bad.json").write_text('{"database": {')  # cut off
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3, (argv, err)
    # a bug is not bad input: exit 1 and the hint, not "error" and 2
    import clipae.commands.runs as runs_cmd

    monkeypatch.setattr(runs_cmd, "find_run", lambda *a: np.zeros(3)[5])
    assert main(["runs", "--runs-dir", str(tmp_path), "show", "run-a"]) == 1
    assert "CLIPAE_DEBUG=1" in capsys.readouterr().err
    monkeypatch.setattr(runs_cmd, "find_run", lambda *a: np.reshape(np.zeros(3), (2, 2)))  # ValueError in numpy
    assert main(["runs", "--runs-dir", str(tmp_path), "show", "run-a"]) == 1
    capsys.readouterr()
    monkeypatch.undo()
    monkeypatch.setenv("CLIPAE_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["runs", "--runs-dir", str(tmp_path), "show", "zzz"])


def test_code_revision_outside_git_is_unknown(tmp_path):
    assert code_revision(tmp_path) == "unknown"
    assert isinstance(code_revision(), str) and code_revision()


def test_unsafe_run_ids_are_rejected(tmp_path):
    for bad in ("", "../x", ".hidden"):
        with pytest.raises(ValueError):
            RunRecordWriter(bad, tmp_path)


def test_list_shows_status_and_show_says_why_a_run_failed(tmp_path, capsys):
    from clipae.cli import main

    _publish(tmp_path, "good-1", {"0.50": 0.3})
    _publish(tmp_path, "bad-2", {"0.50": 0.0}, status="failed",
             error="StoreDamageError: video 'v1': array 'i3d_rgb' chunk file /s/videos/v1/i3d_rgb/c/0/0: wrong size")
    assert main(["runs", "--runs-dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert "status" in out.splitlines()[0]
    assert any("bad-2" in line and "failed" in line for line in out.splitlines())
    assert any("good-1" in line and "completed" in line for line in out.splitlines())
    assert main(["runs", "--runs-dir", str(tmp_path), "show", "bad-2"]) == 0
    assert "error      StoreDamageError: video 'v1'" in capsys.readouterr().out


def test_one_unreadable_record_does_not_hide_the_others(tmp_path, capsys, caplog):
    """A cut-off record.json (or one that is not an object) stopped every `clipae runs` command."""
    _publish(tmp_path, "run-good", {"0.10": 0.5})
    for day, run, text in (("2026-01-01", "cut", "{x"), ("2026-01-02", "alist", "[1]"),
                           ("2026-01-03", "nostart", '{"started": null}')):
        (tmp_path / day / run).mkdir(parents=True)
        (tmp_path / day / run / "record.json").write_text(text)
    with caplog.at_level("WARNING"):
        assert main(["runs", "--runs-dir", str(tmp_path), "list"]) == 0
        assert main(["runs", "--runs-dir", str(tmp_path), "show", "run-good"]) == 0
    assert "run-good" in capsys.readouterr().out
    assert "cut/record.json" in caplog.text and "not an object" in caplog.text
    # an explicit --runs-dir that does not exist is a typo, not "no runs"
    assert main(["runs", "--runs-dir", str(tmp_path / "typo"), "list"]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_a_killed_writers_staging_is_dropped_by_the_next_writer_but_never_a_live_ones(tmp_path):
    """Runs killed before publishing (SIGKILL, OOM, a lost machine) left runs/.staging/<id>/ forever."""
    import subprocess
    import sys
    import time

    live = RunRecordWriter("live", tmp_path)
    live.write_bytes("model/last.pt", b"x" * 10)
    code = ("import os, sys; from clipae.runs import RunRecordWriter; "
            "w = RunRecordWriter('killed', sys.argv[1]); w.write_bytes('model/last.pt', b'x'); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 9  # (dies holding its lock)
    old = tmp_path / ".staging" / "from-an-older-version"  # (no lock file: dropped only once a day old)
    young = tmp_path / ".staging" / "young-unlocked"
    for d in (old, young):
        d.mkdir()
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    RunRecordWriter("next", tmp_path)
    left = sorted(p.name for p in (tmp_path / ".staging").iterdir() if p.is_dir())
    assert left == ["live", "next", "young-unlocked"]
    assert (tmp_path / ".staging" / "live" / "model" / "last.pt").exists()
    with pytest.raises(RuntimeError, match="another live process"):  # (it would have deleted live's files)
        RunRecordWriter("live", tmp_path)
    assert (tmp_path / ".staging" / "live" / "model" / "last.pt").exists()
    published = live.publish({"status": "completed"})
    assert published.is_dir() and not (tmp_path / ".staging" / "live.lock").exists()


def test_an_unknown_flag_is_reported_by_its_command_with_its_usage(tmp_path, capsys):
    """An unknown flag got the top-level `usage: clipae [-h] COMMAND ...` and `clipae: error:` (README: the
    command's usage line and `clipae COMMAND: error:`)."""
    for argv, prog, unknown in [(["store", "info", "--bogus", str(tmp_path)], "clipae store info", "--bogus"),
                                (["runs", "list", "--bogus"], "clipae runs list", "--bogus"),
                                (["train", "--store", "s", "--dataset", "demo", "--bogus", "3"], "clipae train",
                                 "--bogus 3")]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"usage: {prog} " in err, err
        assert f"{prog}: error: unrecognized arguments: {unknown}\n" in err, err


def test_the_cli_and_extraction_configs_start_without_torch():
    """`clipae --help`, `clipae runs list` and config files took 2-8 s: the extraction config imported torch
    (through the TV-L1 and CLIP modules) only for their settings classes."""
    import subprocess
    import sys

    code = ("import sys; from clipae.cli import build_parser; build_parser(); "
            "from extractors.config import ExtractConfig; ExtractConfig(); "
            "print(sorted(m for m in ('torch', 'numpy', 'zarr', 'prefect') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch" not in out, out


def test_one_id_under_two_dates_is_published_apart_and_selectable(tmp_path, capsys):
    """A retry of a flow run after midnight UTC published the same id under a new date: neither could be shown."""
    day1 = dt.datetime(2025, 1, 1, 23, 0, tzinfo=dt.timezone.utc)
    day2 = dt.datetime(2025, 1, 2, 1, 0, tzinfo=dt.timezone.utc)
    _publish(tmp_path, "dup0", {"0.50": 0.1}, started=day1)
    _, second = _publish(tmp_path, "dup0", {"0.50": 0.2}, started=day2)
    assert second.name == "dup0-2" and second.parent.name == "2025-01-02"
    assert find_run("2025-01-02/dup0", tmp_path).path == second
    assert find_run("dup0", tmp_path).date == "2025-01-01"  # (the exact id wins over the prefix)
    # records other tools wrote with one id in two dates are still told apart
    os.chmod(tmp_path / "2025-01-02", 0o755)
    os.rename(second, tmp_path / "2025-01-02" / "dup0")
    with pytest.raises(KeyError, match=r"2 runs match \(2025-01-01/dup0, 2025-01-02/dup0\); give DATE/ID"):
        find_run("dup0", tmp_path)
    assert main(["runs", "--runs-dir", str(tmp_path), "show", "2025-01-02/dup0"]) == 0
    assert "20.00" in capsys.readouterr().out


def test_records_of_odd_shapes_are_listed_shown_and_compared(tmp_path, capsys):
    """Valid JSON with wrong types (metrics null, dataset null, failures a string, timings a list) broke
    `runs list` for every run or gave tracebacks; "0.3" and "0.30" were two rows; compare said "same settings"
    for runs on different datasets and averaged over different tIoU sets without a word."""
    _publish(tmp_path, "good", {"0.30": 0.5, "0.70": 0.1}, config={"x": 1})
    _publish(tmp_path, "odd1", {"0.3": 0.4, "0.7": 0.2}, config={"x": 1}, dataset=None, failures="oops",
             timings_s=[1, 2])
    _publish(tmp_path, "odd2", {"0.5": 0.3}, config={"x": 1}, dataset="activitynet12",
             metrics=None, random_init_features=["clip_vitb16"])
    assert main(["runs", "--runs-dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "odd1" in out and "odd2" in out
    assert main(["runs", "--runs-dir", str(tmp_path), "show", "odd1"]) == 0
    assert main(["runs", "--runs-dir", str(tmp_path), "show", "odd2"]) == 0
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(tmp_path), "compare", "good", "odd1"]) == 0
    out = capsys.readouterr().out
    assert out.count("0.30") == 1 and out.count("0.70") == 1
    assert main(["runs", "--runs-dir", str(tmp_path), "compare", "good", "odd2"]) == 0
    out = capsys.readouterr().out
    assert "different tIoU thresholds" in out and "dataset:" in out and "random_init_features" in out


def test_show_json_is_strict_json(tmp_path, capsys):
    _publish(tmp_path, "nanrun", {"0.50": float("nan")})
    assert main(["runs", "--runs-dir", str(tmp_path), "show", "--json", "nanrun"]) == 0
    out = capsys.readouterr().out
    assert "NaN" not in out and json.loads(out)["metrics"]["map_by_tiou"]["0.50"] is None


def test_every_flag_of_every_command_has_help():
    """README: '`clipae COMMAND --help` documents every flag' (import-features' --layout and --no-progress had none)."""
    import argparse

    from clipae.cli import build_parser

    def parsers(p, name):
        yield name, p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub_name, sub in a.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    undocumented = [f"{name} {'/'.join(a.option_strings) or a.dest}"
                    for name, p in parsers(build_parser(), "clipae") for a in p._actions
                    if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
                    and not (a.help and a.help.strip()) and a.help != argparse.SUPPRESS]
    assert not undocumented, undocumented
