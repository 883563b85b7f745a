"""The component ablation (CLIP-AE Table 3): train one model per switch setting, evaluate each on the
test subset, write a markdown + JSON table. With several training seeds the table reports each row's
mean and sample standard deviation over the seeds (the data stay the same; only the training seed varies)."""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from models import checkpoint as ckpt
from models.config import ClipAEConfig, SwitchConfig
from models.predict import predict, write_predictions
from models.scoring import evaluate_predictions
from models.train import train

#: name -> switches. Rows 1-4 are the paper's Table 3 (CAF / CCP; L_self rides with the modules it trains);
#: the others separate the self-supervised losses and the modules from merely adding the inputs.
ROWS: dict[str, SwitchConfig] = {
    "baseline": SwitchConfig(audio=False, clip=False, caf=False, ccp=False, selfsup=False),
    "caf": SwitchConfig(audio=True, clip=False, caf=True, ccp=False, selfsup=True),
    "ccp": SwitchConfig(audio=False, clip=True, caf=False, ccp=True, selfsup=True),
    "caf+ccp": SwitchConfig(audio=True, clip=True, caf=True, ccp=True, selfsup=True),
    "caf+ccp-selfsup": SwitchConfig(audio=True, clip=True, caf=True, ccp=True, selfsup=False),
    "concat-audio+clip": SwitchConfig(audio=True, clip=True, caf=False, ccp=False, selfsup=False),
    # CCP with the audio concatenated instead of fused by CAF (beside CCP's output; into CCP's CBP view with
    # model.caf_ccp: series): isolates what CAF adds.
    "ccp+concat-audio": SwitchConfig(audio=True, clip=True, caf=False, ccp=True, selfsup=True),
}
DEFAULT_ROWS = ["baseline", "caf", "ccp", "caf+ccp", "caf+ccp-selfsup"]


@dataclass
class AblationRow:
    name: str
    switches: dict
    tiou: list[float]
    mAP: list[float]
    average_mAP: float
    train_seconds: float
    extra: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)         # the training seeds this row summarises
    mAP_std: list[float] | None = None                     # over seeds (sample std; None for one run)
    average_mAP_std: float | None = None
    runs: list[float] = field(default_factory=list)        # each seed's average mAP, in ``seeds`` order


def run_ablation(cfg: ClipAEConfig, store, dataset, out_dir: str | Path, rows: list[str] | None = None,
                 train_videos=None, test_videos=None, reference_rows: dict[str, dict] | None = None,
                 resume: bool = False, seeds: list[int] | None = None) -> list[AblationRow]:
    """Train and evaluate each row; ``train_videos`` / ``test_videos`` (in-memory) override the store.
    ``reference_rows`` ({name: predictions}) adds untrained reference predictors to the table.

    ``seeds``: training seeds (default: ``cfg.train.seed`` alone). With one seed each row trains into
    ``out_dir/<row>``; with several into ``out_dir/seed<N>/<row>``, and the returned rows (and the table)
    are the per-row mean with the standard deviation over the seeds (``runs`` keeps each seed's value)."""
    out = Path(out_dir)
    seeds = list(seeds) if seeds else [cfg.train.seed]
    names = rows or DEFAULT_ROWS
    for what, values in (("seed", seeds), ("row", names)):  # (a repeat trained twice into one folder and
        repeated = sorted({str(v) for v in values if list(values).count(v) > 1})  # reported a fake ± 0.0)
        if repeated:
            raise ValueError(f"ablation: {what}s repeat ({', '.join(repeated)}); give each once")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise ValueError(f"unknown ablation row(s) {unknown}; known: {sorted(ROWS)}")
    if hasattr(store, "load"):
        _check_store_videos(cfg, names, store, dataset, train_videos is None, test_videos is None)
    per_seed: dict[str, list[AblationRow]] = {n: [] for n in names}
    for seed in seeds:
        seed_out = out if len(seeds) == 1 else out / f"seed{seed}"
        for name in names:
            per_seed[name].append(_run_row(cfg.replace(train={"seed": seed}), name, store, dataset, seed_out,
                                           train_videos, test_videos, resume))
    results = [aggregate_rows(per_seed[n]) for n in names]
    for name, pred in (reference_rows or {}).items():
        ev = evaluate_predictions(pred, dataset, dataset.test_subset)
        results.append(AblationRow(name, {}, ev.tiou, ev.mAP, ev.average_mAP, 0.0, {"reference": True}))
    write_table(results, out, cfg, seeds, [r for n in names for r in per_seed[n]])
    return results


def _check_store_videos(cfg: ClipAEConfig, names: list[str], store, dataset, train: bool, test: bool) -> None:
    """Read every video the rows will read, once, before the first row trains: a damaged test video otherwise
    surfaces in the first row's prediction, after its whole training schedule."""
    from models.data import load_videos
    from models.train import features_read

    feats = sorted({f for n in names for f in features_read(cfg.replace(switches=ROWS[n].__dict__))})
    for subset, wanted in ((dataset.train_subset, train), (dataset.test_subset, test)):
        if wanted:
            load_videos(store, dataset, subset, feats)  # (raises naming the video and file; the data is dropped)


def _run_row(cfg: ClipAEConfig, name: str, store, dataset, out: Path, train_videos, test_videos,
             resume: bool) -> AblationRow:
    sw = ROWS[name]
    row_cfg = cfg.replace(switches=sw.__dict__)
    t0 = time.perf_counter()
    res = train(row_cfg, store, dataset, out / name, videos=train_videos, resume=resume)
    secs = time.perf_counter() - t0
    pred = predict(res.checkpoint, store, dataset, dataset.test_subset, videos=test_videos, device=cfg.train.device)
    write_predictions(pred, out / name / "predictions.json")
    ev = evaluate_predictions(pred, dataset, dataset.test_subset)
    ckpt.atomic_write_text(ev.to_json(), out / name / "evaluation.json")
    extra = {"cluster_purity": res.cluster_history[-1]["purity"]} if res.cluster_history else {}
    return AblationRow(name, sw.__dict__, ev.tiou, ev.mAP, ev.average_mAP, secs, extra,
                       seeds=[cfg.train.seed], runs=[ev.average_mAP])


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def aggregate_rows(runs: list[AblationRow]) -> AblationRow:
    """One row from the same row trained with several seeds: mean mAP per tIoU and on average, the sample
    standard deviation of each, mean train seconds, mean of numeric ``extra`` values. One run: unchanged."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    per_t = list(zip(*(r.mAP for r in runs)))
    avgs = [r.average_mAP for r in runs]
    extra = {}
    for k in first.extra:
        vals = [r.extra.get(k) for r in runs]
        if all(isinstance(v, (int, float)) for v in vals):
            extra[k] = statistics.fmean(vals)
    return AblationRow(first.name, first.switches, first.tiou, [statistics.fmean(v) for v in per_t],
                       statistics.fmean(avgs), statistics.fmean(r.train_seconds for r in runs), extra,
                       seeds=[s for r in runs for s in r.seeds], mAP_std=[_std(list(v)) for v in per_t],
                       average_mAP_std=_std(avgs), runs=avgs)


def format_markdown(rows: list[AblationRow], title: str = "") -> str:
    tiou = rows[0].tiou
    head = "| row | CAF | CCP | L_self | audio | CLIP | " + " | ".join(f"{t:.2f}" for t in tiou) + " | AVG | train s |"
    sep = "|" + "---|" * (7 + len(tiou) + 1)
    mark = lambda b: "✓" if b else ""  # noqa: E731
    lines = [title, "", head, sep] if title else [head, sep]
    for r in rows:
        s = r.switches
        cells = [r.name] + ([mark(s.get("caf") and s.get("audio")), mark(s.get("ccp") and s.get("clip")),
                             mark(s.get("selfsup")), mark(s.get("audio")), mark(s.get("clip"))] if s else ["-"] * 5)
        cells += [f"{100 * m:.1f}" for m in r.mAP]
        avg = f"{100 * r.average_mAP:.1f}"
        if r.average_mAP_std is not None:
            avg += f" ± {100 * r.average_mAP_std:.1f}"
        cells += [avg, f"{r.train_seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    multi = [r for r in rows if r.average_mAP_std is not None]
    if multi:
        text += ("\nPer-tIoU columns and AVG: mean over the training seeds " + ", ".join(map(str, multi[0].seeds))
                 + "; ± is the sample standard deviation of the average mAP. Per seed (AVG): "
                 + "; ".join(f"{r.name} " + "/".join(f"{100 * v:.1f}" for v in r.runs) for r in multi) + "\n")
    return text


def write_table(rows: list[AblationRow], out: Path, cfg: ClipAEConfig, seeds: list[int] | None = None,
                runs: list[AblationRow] | None = None) -> None:
    seeds = seeds or [cfg.train.seed]
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    title = f"Ablation ({cfg.train.mode}, {cfg.train.rounds if cfg.train.mode == 'utal' else 1} round(s), {which}): mAP (%) per tIoU"
    if cfg.train.mode == "utal":
        title += (f"; every row clusters on {'+'.join(cfg.train.cluster_features)}"
                  if not cfg.train.cluster_features_follow_switches else
                  "; each row clusters only on the inputs it uses (--same-cluster-input: one clustering input for all)")
    ckpt.atomic_write_text(format_markdown(rows, title), out / "ablation.md")
    ckpt.atomic_write_text(json.dumps({"config": cfg.to_dict(), "seeds": seeds, "rows": [r.__dict__ for r in rows],
                                       "runs": [r.__dict__ for r in (runs or [])]}, indent=1), out / "ablation.json")
