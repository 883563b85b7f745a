"""Per-video feature extraction into a FeatureStore.

``extract_video`` decodes a video once (background thread, bounded windows of snippets),
feeds the frames to every extractor the store still lacks for it -- I3D RGB, TV-L1 flow ->
I3D flow, CLIP ViT-B/16, VGGish on the audio at the snippet centres -- and publishes all
new features with one atomic ``store.write_video``. ``extract_many`` runs a list of videos,
reusing the loaded networks, and turns per-video problems into :class:`ExtractFailure`
entries instead of stopping. docs/extraction.md describes the design.
"""
from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
import traceback
from collections import defaultdict
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from extractors.audio_decode import audio_lead_samples, decode_audio
from extractors.clip_features import ClipExtractor, clip_sample_positions, pool_snippet_embeddings
from extractors.config import (
    EXTRACTOR_VERSIONS,
    WEIGHTS_KEYS,
    ExtractConfig,
    preprocess_hash,
    preprocess_params,
)
from extractors.decode import open_frames
from extractors.errors import ConfigError, DecodeError, ExtractionCancelled, ResourceError, StageError, VideoError
from extractors.i3d import build_i3d, load_i3d, rgb_to_i3d_input
from extractors.preprocess import FramePreprocessor, PreprocessSpec, iter_preprocessed
from extractors.probe import not_a_file_reason, probe_video
from extractors.tvl1 import check_backend_device, flow_to_i3d_input, resolve_backend, tvl1_flow, uses_torch_compile
from extractors.vggish import EMBEDDING_DIM, build_vggish, centered_coverage, load_vggish
from extractors.weights import resolve_all
from extractors.windows import BackgroundIterator, FrameWindow, SnippetWindower, StreamEnd
from storage import (ANY_VERSION, AUDIO_MASK, FeatureProvenance, FeatureStore, SnippetGrid, StoreConflict,
                     StoreDamageError, StoreError, VideoInfo)

VISUAL_FEATURES = ("i3d_rgb", "i3d_flow", "clip_vitb16")
_FINGERPRINT_BYTES = 1 << 20
ProgressFn = Callable[[int, int | None], None]
_T = TypeVar("_T")


# --------------------------------------------------------------------------- results
@dataclass
class ExtractReport:
    """One video done (or already complete: ``computed`` empty)."""

    video_id: str
    path: str
    computed: list[str]
    reused: list[str]
    num_frames: int | None = None
    num_snippets: int | None = None
    decode_backend: str | None = None
    has_audio: bool | None = None
    seconds: float = 0.0
    precision: dict[str, str] = field(default_factory=dict)
    # Wall seconds per stage as seen by this video's thread (see StageClock): where the time went.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # The source the store held for this id when it was replaced (its file changed, or the id now names
    # another file): everything stored for the id was redone. None otherwise.
    replaced_source: str | None = None
    # What was damaged in the stored entry (unreadable metadata) when it was rewritten from the source.
    repaired_damage: str | None = None

    ok = True

    @property
    def skipped(self) -> bool:
        return not self.computed

    @property
    def frames_per_second(self) -> float | None:
        if not self.computed or not self.num_frames or self.seconds <= 0:
            return None
        return self.num_frames / self.seconds


@dataclass
class ExtractFailure:
    """One video that failed; the run went on with the others."""

    video_id: str
    path: str
    error: VideoError

    ok = False

    @property
    def stage(self) -> str:
        return self.error.stage

    @property
    def reason(self) -> str:
        return self.error.reason


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of size + first and last MiB: detects a replaced source without reading it all."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        h.update(f.read(_FINGERPRINT_BYTES))
        if size > _FINGERPRINT_BYTES:
            f.seek(max(_FINGERPRINT_BYTES, size - _FINGERPRINT_BYTES))
            h.update(f.read(_FINGERPRINT_BYTES))
    return "head-tail-sha256:" + h.hexdigest()


class StageClock:
    """Wall seconds per stage of one video, as its worker thread sees them (waits included).

    ``decode_wait`` is time spent waiting for the decoder thread (decode is the bottleneck when it is
    large), ``compute_wait`` waiting for the networks' thread (busy with another video's window); a stage timed
    with ``sync=True`` waits for its own CUDA stream, so GPU time lands in the stage that queued it.
    """

    def __init__(self, device: torch.device) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._device = device if device.type == "cuda" else None

    @contextmanager
    def __call__(self, stage: str, sync: bool = False) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            if sync and self._device is not None:
                torch.cuda.current_stream(self._device).synchronize()
            self.seconds[stage] += time.perf_counter() - t

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def _note_thread(idents: list[int]) -> None:
    idents.append(threading.get_ident())


# --------------------------------------------------------------------------- networks
class Extractors:
    """Weights resolved up front (a missing file fails the run before any video); networks load lazily."""

    def __init__(self, config: ExtractConfig) -> None:
        self.config = config
        self.device = torch.device(config.resolved_device())
        if "i3d_flow" in config.features:
            try:
                check_backend_device(config.tvl1, self.device)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        keys = [WEIGHTS_KEYS[f] for f in config.features]
        if "vggish" in config.features and config.vggish_postprocess:
            keys.append("vggish_pca")
        # every missing or wrong file in one error; the PCA file is never replaced by a random one
        resolved = resolve_all(keys, config.weights_dir_path(), config.allow_random_weights, never_random=["vggish_pca"])
        self.weights = {f: resolved[WEIGHTS_KEYS[f]] for f in config.features}
        self.vggish_pca = resolved.get("vggish_pca")
        self._models: dict[str, object] = {}
        self._lock = threading.RLock()
        # The networks run on ONE long-lived thread (``compute``): several videos may decode at once
        # (``video_workers``) but the networks compute for one window at a time, which bounds their
        # memory and keeps torch.compile single-threaded; and cuDNN keeps its per-shape execution
        # plans per thread, so windows arriving on many short-lived worker threads each rebuilt them
        # (on the H100: ~5 s of host-bound plan building per video and network, GPU idle).
        # (Device memory still grows with video_workers: each worker may hold one window's flow.)
        # (The initializer must not hold ``self``: the live thread would keep the networks alive.)
        self._compute_thread: list[int] = []
        self._compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipae-networks",
                                           initializer=_note_thread, initargs=(self._compute_thread,))
        # TV-L1, the one slow stage, runs on the worker threads (several windows' flow at once, each
        # worker on its own CUDA stream, so one batch's last unconverged pairs overlap the next
        # batch) unless its kernels are torch.compile'd, which must not be entered concurrently.
        self.concurrent_flow = not uses_torch_compile(config.tvl1, self.device)
        # None: not decided; else the autocast dtype or "fp32" (decided on the first batch).
        self._precision: dict[str, torch.dtype | str | None] = {f: None for f in config.features}
        if self.device.type != "cuda" or config.precision == "fp32":
            self._precision = {f: "fp32" for f in config.features}
        elif config.precision in ("bf16", "fp16"):
            dt = torch.bfloat16 if config.precision == "bf16" else torch.float16
            self._precision = {f: (dt if f != "vggish" else "fp32") for f in config.features}
        self._precision["vggish"] = "fp32"  # tiny network: nothing to gain

    @property
    def random_init_features(self) -> list[str]:
        """Features whose network is randomly initialised (allowed explicitly; recorded in provenance)."""
        return [f for f, w in self.weights.items() if w.random_init]

    def compute(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` (network work) on the networks' thread and return its result; one at a time."""
        if threading.get_ident() in self._compute_thread:  # called from a network job
            return fn()
        return self._compute.submit(fn).result()

    def close(self) -> None:
        """Stop the networks' thread (it also ends when this object is garbage collected)."""
        self._compute.shutdown(wait=True)
        self._compute_thread.clear()  # (a later thread may reuse the id)

    def expected_provenance(self, feature: str) -> FeatureProvenance:
        w = self.weights[feature]
        return FeatureProvenance(
            extractor=feature,
            extractor_version=EXTRACTOR_VERSIONS[feature],
            weights_sha256=w.sha256,
            random_init=w.random_init,
            preprocess_hash=preprocess_hash(self.config, feature, random_init=w.random_init),
            params={"preprocess": preprocess_params(self.config, feature), "device": self.device.type,
                    **({"random_seed": self.config.random_seed} if w.random_init else {})},
        )

    def model(self, feature: str):
        with self._lock:  # one Extractors may serve several worker threads (Prefect task runners)
            if feature not in self._models:
                self._models[feature] = self._load(feature)
                if self.device.type == "cuda":  # loaded on this thread's stream: finish before others use it
                    torch.cuda.current_stream(self.device).synchronize()
            return self._models[feature]

    def _load(self, feature: str):
        w, dev, seed = self.weights[feature], self.device, self.config.random_seed
        if feature in ("i3d_rgb", "i3d_flow"):
            ch = 3 if feature == "i3d_rgb" else 2
            return build_i3d(ch, seed=seed).to(dev) if w.random_init else load_i3d(w.path, ch, dev)
        if feature == "clip_vitb16":
            clip_cfg = replace(self.config.clip, seed=self.config.random_seed)
            return ClipExtractor(w, dev, clip_cfg, allow_random=w.random_init)
        if feature == "vggish":
            relu = self.config.vggish_final_relu
            if w.random_init:
                return build_vggish(final_relu=relu, seed=seed, device=dev)
            return load_vggish(w.path, self.vggish_pca.path if self.vggish_pca else None, dev, final_relu=relu)
        raise ConfigError(f"unknown feature {feature!r}")

    def precision_name(self, feature: str) -> str:
        p = self._precision.get(feature)
        return "fp32" if p in (None, "fp32") else str(p).replace("torch.", "")

    def run(self, feature: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Call ``fn`` under the feature's precision; on the first call in ``auto`` mode, decide it.

        bf16 autocast is kept only if every row of the first batch has cosine >= the configured
        minimum against fp32 (CLIP and I3D are checked on the real weights and data of this run).
        """
        p = self._precision.get(feature)
        if p == "fp32":
            return fn().float()
        if isinstance(p, torch.dtype):
            with torch.autocast("cuda", dtype=p):
                return fn().float()
        ref = fn().float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = fn().float()
        cos = torch.nn.functional.cosine_similarity(ref, low, dim=-1).min().item()
        self._precision[feature] = torch.bfloat16 if cos >= self.config.autocast_min_cosine else "fp32"
        return ref


# --------------------------------------------------------------------------- planning
def _grid_of(config: ExtractConfig) -> SnippetGrid:
    return SnippetGrid(fps=config.fps, snippet_frames=config.snippet_frames, stride=config.stride)


def check_store_grid(store: FeatureStore, config: ExtractConfig) -> None:
    if store.grid != _grid_of(config):
        raise ConfigError(f"store {store.path} has snippet grid {store.grid}, the extraction config {_grid_of(config)}")


def plan_video(store: FeatureStore, video_id: str, fingerprint: str, models: Extractors) -> tuple[list[str], list[str], bool]:
    """(features to compute, features reused, replace_all) for one video."""
    feats = list(models.config.features)
    if not store.has_video(video_id):
        return feats, [], False
    if store.video_info(video_id).source_fingerprint != fingerprint and not _imported_only(store, video_id):
        return feats, [], True  # the source changed: nothing stored for it is valid
    missing = store.missing_arrays(video_id)
    if "time" in missing:  # (rewritten by every write: redo this run's features, which rewrites it)
        return feats, [], False
    have = store.features_of(video_id) - missing  # (a deleted array is redone)
    prov = store.provenance(video_id)
    todo, reused = [], []
    for f in feats:
        ok = f in have and f in prov and prov[f].same_config(models.expected_provenance(f))
        if f == "vggish":
            ok = ok and AUDIO_MASK in have
        (reused if ok else todo).append(f)
    return todo, reused, False


def _imported_only(store: FeatureStore, video_id: str) -> bool:
    """Every stored feature came from ``clipae import-features``: the stored source is a folder of .npy files,
    not a video, so extracting from the video adds to them (e.g. community I3D features + our CLIP and
    VGGish); the imported ones are kept unless this run computes the same names."""
    prov = store.provenance(video_id)
    return bool(prov) and all(p.extractor.startswith("import:") for p in prov.values())


# --------------------------------------------------------------------------- per-window compute
def _snippet_stack(frames: np.ndarray | torch.Tensor, offsets: list[int], length: int):
    if isinstance(frames, np.ndarray):
        return np.stack([frames[o : o + length] for o in offsets])
    return torch.stack([frames[o : o + length] for o in offsets])


def _full_batch(x: torch.Tensor, bs: int) -> tuple[torch.Tensor, int]:
    """On CUDA, pad a short batch to ``bs`` rows (copies of its last row) and return the real count.

    Each I3D then sees one input shape per run: cuDNN builds execution plans per shape (seconds of
    host time for I3D's ~60 convolutions), and every window's tail batch would otherwise be new.
    Callers pass min(batch_size, window_snippets), which no batch exceeds, so padding adds at most
    one batch's work per window.
    """
    n = x.shape[0]
    if x.device.type != "cuda" or n >= bs:
        return x, n
    return torch.cat([x, x[-1:].expand(bs - n, *x.shape[1:])]), n


def _i3d_rgb(win: FrameWindow, grid: SnippetGrid, models: Extractors, bs: int) -> np.ndarray:
    net = models.model("i3d_rgb")
    clips = _snippet_stack(win.rgb, win.snippet_offsets(grid), grid.snippet_frames)  # (T, F, c, c, 3) uint8
    out = []
    for i in range(0, len(clips), bs):
        x, n = _full_batch(torch.from_numpy(clips[i : i + bs]).to(models.device, non_blocking=True),
                           min(bs, models.config.window_snippets))
        out.append(models.run("i3d_rgb", lambda: net.features(rgb_to_i3d_input(x)))[:n].cpu())
    return torch.cat(out).numpy()


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise ExtractionCancelled()


def _window_flow(win: FrameWindow, grid: SnippetGrid, models: Extractors,
                 cancel: threading.Event | None = None) -> torch.Tensor:
    """I3D flow input for every frame the window's snippets use: (n, 2, c, c) in [-1, 1].

    Frame j's flow goes to frame j+1; the last frame of a video has no successor and gets zero flow.
    ``cancel`` is checked before every TV-L1 batch (the longest step of a window on a CPU).
    """
    cfg = models.config
    n = win.snippet_offsets(grid)[-1] + grid.snippet_frames
    gray = torch.from_numpy(win.gray).to(models.device)
    pairs = min(n, gray.shape[0] - 1)
    c = gray.shape[-1]
    flow = torch.zeros((n, 2, c, c), dtype=torch.float32, device=models.device)
    for i in range(0, pairs, cfg.flow_batch_pairs):
        _check_cancel(cancel)
        j = min(pairs, i + cfg.flow_batch_pairs)
        flow[i:j] = flow_to_i3d_input(  # (grey levels of decoded uint8 frames: finite, no check's GPU sync)
            tvl1_flow(gray[i:j], gray[i + 1 : j + 1], cfg.tvl1, check_finite=False), cfg.flow_bound)
    return flow


def _i3d_flow(win: FrameWindow, grid: SnippetGrid, models: Extractors, bs: int,
              flow: torch.Tensor | None = None, cancel: threading.Event | None = None) -> np.ndarray:
    net = models.model("i3d_flow")
    if flow is None:
        flow = _window_flow(win, grid, models, cancel)
    offsets = win.snippet_offsets(grid)
    out = []
    for i in range(0, len(offsets), bs):
        # (B, F, 2, c, c) -> (B, 2, F, c, c)
        x, n = _full_batch(_snippet_stack(flow, offsets[i : i + bs], grid.snippet_frames).permute(0, 2, 1, 3, 4),
                           min(bs, models.config.window_snippets))
        out.append(models.run("i3d_flow", lambda: net.features(x))[:n].cpu())
    return torch.cat(out).numpy()


def _clip(win: FrameWindow, models: Extractors) -> np.ndarray:
    ext: ClipExtractor = models.model("clip_vitb16")
    crops = torch.from_numpy(win.clip)
    t, k = crops.shape[:2]
    flat = crops.reshape(t * k, *crops.shape[2:])
    emb = models.run("clip_vitb16", lambda: ext.embed_crops(flat, batch_size=max(1, models.config.batch_size * k)))
    return pool_snippet_embeddings(emb.reshape(t, k, -1)).numpy()


# --------------------------------------------------------------------------- the video pass
def _visual_pass(path: str, probe, todo: list[str], config: ExtractConfig, models: Extractors, backend: str,
                 progress: ProgressFn | None, clock: StageClock,
                 cancel: threading.Event | None = None) -> tuple[dict[str, np.ndarray], StreamEnd]:
    grid = _grid_of(config)
    want = {f: f in todo for f in VISUAL_FEATURES}
    positions = (clip_sample_positions(grid.snippet_frames, config.clip.frames_per_snippet)
                 if want["clip_vitb16"] else None)
    clip_offsets = set(positions or [])

    def clip_frame(k: int) -> bool:
        return any(k >= p and (k - p) % grid.stride == 0 for p in clip_offsets)

    spec = PreprocessSpec(
        resize_short=config.resize_short, crop_size=config.crop_size,
        want_rgb=want["i3d_rgb"], want_gray=want["i3d_flow"],
        clip_size=models.model("clip_vitb16").image_size if want["clip_vitb16"] else 224,
        want_clip=want["clip_vitb16"],
    )  # fmt: skip

    def produce(stop):
        source = open_frames(path, probe, grid.fps, backend=backend, threads=config.decode_threads)
        try:
            windower = SnippetWindower(grid, config.window_snippets, positions, spec.want_rgb, spec.want_gray)
            if not any(want.values()) and getattr(source, "num_frames", None) is not None:
                n = source.num_frames  # decord knows the count without decoding
            else:
                pre = FramePreprocessor(spec, clip_frame)
                for batch in iter_preprocessed(source, pre, batch=16, stop=stop):
                    yield from windower.push(batch)
                yield from windower.finish()
                n = windower.seen
            yield StreamEnd(n, grid.num_snippets(n), source.backend, source.duration, source.width, source.height)
        finally:
            source.close()

    outs: dict[str, list[np.ndarray]] = {f: [] for f in VISUAL_FEATURES if want[f]}
    end: StreamEnd | None = None
    expected = None
    if probe.duration:
        expected = grid.num_snippets(int(probe.duration * grid.fps))
    done = 0
    if progress:  # the total from the start, not after the first window (seconds to minutes on a CPU)
        progress(0, expected)
    with BackgroundIterator(produce, maxsize=config.queue_windows) as windows:
        it = iter(windows)
        while True:
            with clock("decode_wait"):
                item = next(it, None)
            if item is None:
                break
            _check_cancel(cancel)
            if isinstance(item, StreamEnd):
                end = item
                continue
            flow = None
            if want["i3d_flow"] and models.concurrent_flow:
                with clock("tvl1", sync=True):  # finished on this stream before the networks' thread reads it
                    flow = _window_flow(item, grid, models, cancel)
            def networks(win: FrameWindow = item, flow: torch.Tensor | None = flow, queued: float = time.perf_counter()):
                clock.seconds["compute_wait"] += time.perf_counter() - queued  # another window had the networks
                _check_cancel(cancel)  # (queued behind other videos' windows when the run was cancelled)
                if want["i3d_rgb"]:
                    with clock("i3d_rgb"):
                        outs["i3d_rgb"].append(_i3d_rgb(win, grid, models, config.batch_size))
                if want["i3d_flow"]:
                    with clock("i3d_flow" if flow is not None else "tvl1+i3d_flow"):
                        outs["i3d_flow"].append(_i3d_flow(win, grid, models, config.batch_size, flow, cancel))
                if want["clip_vitb16"]:
                    with clock("clip_vitb16"):
                        outs["clip_vitb16"].append(_clip(win, models))

            _check_cancel(cancel)
            models.compute(networks)
            done += item.num_snippets
            if progress:
                progress(done, expected)
    assert end is not None
    feats = {f: (np.concatenate(v) if v else np.zeros((0, 1), np.float32)) for f, v in outs.items()}
    return feats, end


def _audio_features(wav: np.ndarray | None, num_snippets: int, grid: SnippetGrid, config: ExtractConfig,
                    models: Extractors, lead: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """VGGish embeddings and audio mask; ``lead``: samples of padding before a late-starting audio stream."""
    if wav is None or wav.size == 0:
        return np.zeros((num_snippets, EMBEDDING_DIM), np.float32), np.zeros(num_snippets, bool)
    centers = np.array([grid.snippet_center_seconds(i) for i in range(num_snippets)])
    net = models.model("vggish")
    emb = net.embed_centered(wav, config.audio_sample_rate, centers, postprocess=config.vggish_postprocess)
    # A snippet "has audio" when at least half of its 0.96 s VGGish window lies inside the stream.
    mask = centered_coverage(wav.shape[0], config.audio_sample_rate, centers, first_sample=lead) > 0.5
    return np.asarray(emb, np.float32), mask


def extract_video(
    video_path: str | os.PathLike,
    video_id: str,
    store: FeatureStore,
    config: ExtractConfig,
    extractors: Extractors | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> ExtractReport:
    """Compute the features ``store`` lacks for ``video_id`` (same extractor config) and publish them.

    Raises :class:`VideoError` for anything wrong with this video; configuration and weights
    problems (not tied to one video) raise ConfigError / WeightsError. Once ``cancel`` is set the
    extraction stops at its next window or TV-L1 batch with :class:`ExtractionCancelled`, publishing nothing.
    """
    models = extractors or Extractors(config)
    try:
        if models.device.type == "cuda":
            # Each calling thread's GPU work (decode uploads, TV-L1) on its own stream, so videos extracted
            # from several threads (extract_many's workers, Prefect's task threads) overlap on the device.
            # (The device first: leaving a stream context on another GPU would touch the current one.)
            with torch.cuda.device(models.device), torch.cuda.stream(_worker_stream(models.device)):
                return _extract_video(video_path, video_id, store, config, models, progress, cancel)
        return _extract_video(video_path, video_id, store, config, models, progress, cancel)
    except StageError as e:
        # A failure is kept (ExtractFailure, Prefect's task state): drop the finished frames its
        # traceback holds, or they would pin that video's GPU tensors (flow, batches) meanwhile.
        _release_frames(e)
        raise


def _release_frames(exc: BaseException) -> None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


def _extract_video(video_path, video_id: str, store: FeatureStore, config: ExtractConfig, models: Extractors,
                   progress: ProgressFn | None, cancel: threading.Event | None = None) -> ExtractReport:
    t0 = time.perf_counter()
    path = str(video_path)
    check_store_grid(store, config)
    grid = store.grid
    if not Path(path).is_file():
        raise VideoError(path, "probe", not_a_file_reason(path))
    try:
        fingerprint = file_fingerprint(path)
    except OSError as e:
        raise VideoError(path, "probe", f"cannot read the file: {e.strerror or e}") from e
    repaired = None
    try:
        version = store.video_version(video_id)  # (read first: the plan is on this version or a newer one)
        todo, reused, replace_all = plan_video(store, video_id, fingerprint, models)
        replaced_source = store.video_info(video_id).source if replace_all else None
    except StoreDamageError as e:  # unreadable stored metadata: nothing of it can be trusted; redo from the source
        todo, reused, replace_all, replaced_source, repaired = list(models.config.features), [], True, None, e.detail
        version = ANY_VERSION
    except StoreError as e:  # (this video's failure, not the run's)
        raise _video_or_machine(path, "store", e) from e
    if not todo:
        return ExtractReport(video_id, path, [], reused, seconds=time.perf_counter() - t0)
    stage = "probe"
    clock = StageClock(models.device)
    try:
        probe = probe_video(path)
        if not probe.has_video:
            raise VideoError(path, "probe", "no video stream (audio-only or not a video file)")
        stage = "networks"  # (loaded once, by the first video; a failure here is not the decoder's)
        for f in todo:
            models.model(f)
        stage = "audio"
        with clock("audio_decode"):
            wav = decode_audio(path, probe, config.audio_sample_rate) if "vggish" in todo else None
        stage = "decode"
        try:
            feats, end = _visual_pass(path, probe, todo, config, models, config.decode_backend, progress, clock,
                                      cancel)
        except DecodeError as e:
            if config.decode_backend != "auto" or e.backend != "decord":
                raise
            # decord opened the file but failed while reading it: redo the whole pass with ffmpeg.
            feats, end = _visual_pass(path, probe, todo, config, models, "ffmpeg", progress, clock, cancel)
        t = end.num_snippets
        if t == 0:
            raise VideoError(
                path, "decode",
                f"too short: {end.num_frames} frames at {grid.fps:g} fps ({(end.duration or 0):.2f} s) is less than "
                f"one {grid.snippet_frames}-frame snippet",
            )  # fmt: skip
        if "vggish" in todo:
            stage = "vggish"
            with clock("vggish"):  # (includes waiting for the networks' thread)
                lead = audio_lead_samples(probe, config.audio_sample_rate)
                _check_cancel(cancel)
                feats["vggish"], feats[AUDIO_MASK] = models.compute(
                    lambda: _audio_features(wav, t, grid, config, models, lead))
        for name, arr in feats.items():
            if arr.shape[0] != t:
                raise VideoError(path, name, f"produced {arr.shape[0]} rows for {t} snippets")
            if arr.dtype != bool and not np.all(np.isfinite(arr)):
                raise VideoError(path, name, "produced non-finite values (NaN/Inf)")
        _check_cancel(cancel)  # (a write under way when the run is cancelled completes: it is atomic)
        stage = "store"
        info = VideoInfo(
            source=str(Path(path).resolve()), source_fingerprint=fingerprint, fps=grid.fps,
            num_frames=end.num_frames, duration=float(end.duration or end.num_frames / grid.fps),
            has_audio=bool(probe.has_audio), width=end.width or probe.width, height=end.height or probe.height,
            source_fps=probe.avg_fps,
        )  # fmt: skip
        prov = {}
        for f in todo:
            p = models.expected_provenance(f)
            p.params = {**p.params, "precision": models.precision_name(f), "decode_backend": end.backend}
            if f == "i3d_flow":
                p.params["tvl1_backend"] = resolve_backend(config.tvl1, models.device)
            prov[f] = p
        with clock("store"):
            replaced_source = _write(store, video_id, fingerprint, feats, info, prov, replace_all, version,
                                     replaced_source)
    except StageError:  # (already says whose fault it is)
        raise
    except StoreError as e:
        raise _video_or_machine(path, "store", e) from e
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # anything else is still this video's failure, named by stage
        raise _video_or_machine(path, stage, e, f"{type(e).__name__}: {e}") from e
    return ExtractReport(
        video_id, path, todo, reused, num_frames=end.num_frames, num_snippets=t, decode_backend=end.backend,
        has_audio=probe.has_audio, seconds=time.perf_counter() - t0,
        precision={f: models.precision_name(f) for f in todo}, stage_seconds=clock.rounded(),
        replaced_source=replaced_source, repaired_damage=repaired,
    )  # fmt: skip


#: OS errors that say the machine is out of something, whatever the stage (never the video's fault)
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE}
#: ... and, writing the store, refusals and I/O errors of its file system
_STORE_ERRNOS = _MACHINE_ERRNOS | {errno.EACCES, errno.EPERM, errno.EIO}


def _video_or_machine(path: str, stage: str, exc: BaseException, reason: str | None = None
                      ) -> VideoError | ResourceError:
    """The error to raise for ``exc``, met while extracting ``path`` at ``stage``: a ResourceError when the
    machine is at fault, which the flows retry or fail the run for and reextract does not hold against the
    file; else the video's VideoError.

    The machine: a disk full or read-only, no file descriptors, the store's file system refusing the write,
    GPU memory exhausted, or a GPU fault (a sticky CUDA error fails every later video of the process too).
    A host ``MemoryError`` stays the video's: on Linux a machine out of memory meets the OOM killer, while a
    MemoryError is one huge allocation, which a file causes (a damaged header declaring an absurd size), and
    treating it as the machine's would fail every run for that one file."""
    reason = reason or str(exc)
    seen, e = set(), exc
    while e is not None and id(e) not in seen:  # (the store wraps what the OS said)
        seen.add(id(e))
        if isinstance(e, (torch.OutOfMemoryError, torch.AcceleratorError)) or (
                isinstance(e, RuntimeError) and "ALLOC_FAILED" in str(e)):  # (cuDNN/cuBLAS out of memory)
            return ResourceError(path, stage, reason)
        if isinstance(e, OSError) and e.errno in (_STORE_ERRNOS if stage == "store" else _MACHINE_ERRNOS):
            return ResourceError(path, stage, reason)
        e = e.__cause__ if e.__cause__ is not None else None if e.__suppress_context__ else e.__context__
    return VideoError(path, stage, reason)


def _write(store: FeatureStore, video_id: str, fingerprint: str, feats: dict, info: VideoInfo, prov: dict,
           replace_all: bool, version, replaced_source: str | None) -> str | None:
    """Publish this run's features on the version they were planned on; returns the source whose features
    it replaced (None when it kept or added to what was stored).

    Another process may have written the video since the plan (two runs on one store, a shard overlap).
    Then the plan is made again on what is stored now: from the same source, this run's features merge into
    it (what the other process added is kept); from another source, two files claim this video id and the
    video fails here, nothing written, rather than mixing features of two files."""
    t = next(iter(feats.values())).shape[0]
    for _ in range(5):
        if not replace_all and version is not None and version is not ANY_VERSION \
                and _imported_only(store, video_id) and store.num_snippets(video_id) != t:
            # imported features a snippet or two longer or shorter than the video's own (importers accept 2 %):
            # they cannot sit beside this run's, so the video's own features replace them
            replace_all, replaced_source = True, store.video_info(video_id).source
        try:
            store.write_video(video_id, feats, info, prov, replace_all=replace_all, expect_version=version)
            return replaced_source if replace_all else None
        except StoreConflict:
            version = store.video_version(video_id)
            if version is not None and store.video_info(video_id).source_fingerprint != fingerprint \
                    and not _imported_only(store, video_id):
                raise StoreError(
                    f"video {video_id!r}: another process stored it from another file ({store.video_info(video_id).source})"
                    f" while this run extracted it from {info.source}; nothing written. Two files for one video id? "
                    "Give them different ids; else run again to extract the current file") from None
            replace_all = False
    raise StoreError(f"video {video_id!r}: written by other processes five times while this run tried to store it")


def apply_torch_threads(config: ExtractConfig) -> None:
    """``config.torch_threads`` (None: torch's own setting). Process-wide, so callers apply it once,
    before any video: ``extract_many`` per call, the flows when a config's networks are set up."""
    if config.torch_threads and torch.get_num_threads() != config.torch_threads:
        torch.set_num_threads(config.torch_threads)


def extract_many(
    videos: Iterable[tuple[str, str | os.PathLike]],
    store: FeatureStore,
    config: ExtractConfig,
    extractors: Extractors | None = None,
    on_video_start: Callable[[str, str], None] | None = None,
    on_video_done: Callable[[ExtractReport | ExtractFailure], None] | None = None,
    progress: ProgressFn | None = None,
    video_progress: Callable[[str], ProgressFn | None] | None = None,
) -> list[ExtractReport | ExtractFailure]:
    """Extract ``(video_id, path)`` pairs; a failing video becomes an ExtractFailure. Results keep input order.

    With ``config.video_workers`` > 1, that many videos are decoded at once (one thread each, sharing
    the loaded networks), so decoding and preprocessing, which run on the CPU, keep the device busy;
    the networks serve one window at a time (``Extractors.compute``) while TV-L1 runs for several
    windows at once (``Extractors.concurrent_flow``; on CUDA each thread has its own stream).
    Callbacks are then called from the worker threads, one at a time, and ``progress`` (per-video
    snippets, for one video at a time) is not reported; ``video_progress(video_id)``, called as a video
    starts, gives that video's own progress function (or None), for any number of workers: those are
    called from the videos' threads, concurrently. Ctrl-C (or an error not tied to one video, raised from
    any worker) stops the run at once: videos not yet started never start, running ones stop at their next
    window or TV-L1 batch and publish nothing, and the exception propagates without waiting for them.
    """
    check_store_grid(store, config)
    apply_torch_threads(config)
    models = extractors or Extractors(config)
    items = list(videos)
    callback_lock = threading.Lock()
    workers = min(config.video_workers, max(1, len(items)))
    cancel = threading.Event()

    def one(item: tuple[str, str | os.PathLike]) -> ExtractReport | ExtractFailure | None:
        if cancel.is_set():
            return None  # (the run is being abandoned: its caller gets the exception, not this list)
        vid, path = item
        if on_video_start:
            with callback_lock:
                on_video_start(vid, str(path))
        prog = video_progress(vid) if video_progress else progress if workers == 1 else None
        try:
            res: ExtractReport | ExtractFailure = extract_video(path, vid, store, config, models, prog, cancel)
        except VideoError as e:
            res = ExtractFailure(vid, str(path), e)
        except ExtractionCancelled:
            return None
        except BaseException:
            cancel.set()  # (here, before this thread is handed the next video)
            raise
        if cancel.is_set():  # the run was abandoned meanwhile: whatever this video hit then is not its failure
            return None
        if on_video_done:
            with callback_lock:
                on_video_done(res)
        return res

    if workers == 1:  # (Ctrl-C arrives in this thread, inside the video)
        return [one(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="extract")
    futures = [pool.submit(one, item) for item in items]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)  # (not in order: an error in any video's thread ends the run)
        failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception() is not None), None)
        if failed is not None:
            raise failed.exception()
        results = [f.result() for f in futures]
    except BaseException:
        # Not `with pool:` -- leaving it waits for every running video to finish (minutes on a CPU).
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


_STREAMS = threading.local()


def _worker_stream(device: torch.device) -> torch.cuda.Stream:
    """One CUDA stream per calling thread, reused across its videos."""
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    stream = getattr(_STREAMS, "stream", None)
    if stream is None or stream.device != device:
        stream = _STREAMS.stream = torch.cuda.Stream(device)
    return stream


def summarize(results: Sequence[ExtractReport | ExtractFailure]) -> dict:
    """Counts for a run summary. ``video_seconds`` sums each extracted video's own time: with several
    videos at once it exceeds the wall time, so throughput is frames over the caller's wall clock."""
    done = [r for r in results if r.ok and not r.skipped]
    return {
        "videos": len(results),
        "extracted": len(done),
        "skipped": sum(1 for r in results if r.ok and r.skipped),
        "failed": sum(1 for r in results if not r.ok),
        "snippets": sum(r.num_snippets or 0 for r in done),
        "frames": sum(r.num_frames or 0 for r in done),
        "video_seconds": sum(r.seconds for r in done),
    }

