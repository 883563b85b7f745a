"""Device, seeding and batched forward passes shared by training and prediction."""
from __future__ import annotations

import contextlib
import random
import re

import numpy as np
import torch

from models.data import collate


def pick_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda[:N]``, checked: a bad name or a missing GPU is a clear ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(name)):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA only (no GradScaler needed); plain fp32 on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def length_batches(lengths: list[int], budget: int = 2_000_000, max_batch: int = 16) -> list[list[int]]:
    """Group video indices of similar length so that B * T^2 (the attention cost) stays under ``budget``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur = [], []
    for i in order:
        t = max(lengths[i], 1)
        if cur and ((len(cur) + 1) * t * t > budget or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


@torch.no_grad()
def forward_full(model, items: list[dict[str, np.ndarray]], device: torch.device, amp: bool, fn):
    """Run ``model`` in eval mode over whole videos; ``fn(outs, mask) -> list per video`` extracts results
    (already cut to each video's length). Returns results in the input order."""
    model.eval()
    results: list = [None] * len(items)
    lengths = [next(iter(it.values())).shape[0] for it in items]
    for idx in length_batches(lengths):
        batch = collate([items[i] for i in idx], device)
        with autocast(device, amp):
            outs = model(batch)
        for i, r in zip(idx, fn(outs, batch["mask"])):
            results[i] = r
    return results
