"""Chunk compression for feature arrays, and a fast decoder for our own chunk files.

The codec is chosen by measurement (bench/bench_store.py, BENCHMARKS.md): float32 network features
have high-entropy mantissas, so lossless codecs saved only ~6% (Blosc-LZ4 + shuffle) while making a
full-epoch read ~2x slower. The default is therefore uncompressed chunks, which read faster than
per-video ``np.load``; the codecs stay available for stores on slow or metered storage.
"""
from __future__ import annotations

from dataclasses import dataclass

import numcodecs
import numpy as np
from zarr.codecs import BloscCodec, ZstdCodec


@dataclass(frozen=True)
class CodecSpec:
    name: str  # "none" | "blosc-lz4" | "blosc-zstd" | "zstd"
    level: int = 5

    def zarr_compressors(self) -> tuple:
        if self.name == "none":
            return ()
        if self.name == "blosc-lz4":
            return (BloscCodec(cname="lz4", clevel=self.level, shuffle="shuffle", typesize=4),)
        if self.name == "blosc-zstd":
            return (BloscCodec(cname="zstd", clevel=self.level, shuffle="shuffle", typesize=4),)
        if self.name == "zstd":
            return (ZstdCodec(level=self.level),)
        raise ValueError(f"unknown codec {self.name!r}; choose none, blosc-lz4, blosc-zstd or zstd")

    def to_dict(self) -> dict:
        return {"name": self.name, "level": self.level}


DEFAULT_CODEC = CodecSpec("none")


def identity_decode(raw: bytes, out: np.ndarray | None = None):
    if out is None:
        return raw
    memoryview(out).cast("B")[:] = raw
    return out


def chunk_decoder(codecs_meta: list[dict]):
    """Return ``decode(raw, out=None)`` for a v3 codec pipeline we know, or None to use zarr-python.

    Only little-endian ``bytes`` followed by at most one blosc/zstd compressor is handled here; anything
    else (written by another tool) is read through zarr-python, which is always correct.
    """
    if not codecs_meta or codecs_meta[0].get("name") != "bytes":
        return None
    if codecs_meta[0].get("configuration", {}).get("endian", "little") != "little":
        return None
    rest = codecs_meta[1:]
    if not rest:
        return identity_decode
    if len(rest) != 1:
        return None
    name = rest[0].get("name")
    if name == "blosc":
        return numcodecs.Blosc().decode
    if name == "zstd":
        return numcodecs.Zstd().decode
    return None

