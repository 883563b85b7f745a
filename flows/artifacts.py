"""Builders for the Prefect artifacts of a flow run (pure functions) and their publishers.

Builders return plain data (rows, markdown) so tests check content without a server;
``publish_*`` wrap the Prefect artifact API. Keys (which make an artifact show on the
UI's Artifacts page, with history across runs) only allow lowercase letters, digits
and dashes, hence :func:`artifact_key`.

Images: the Prefect UI renders markdown artifacts, and an ``![](data:image/png;base64,...)``
image inside one is displayed inline (checked by tests/test_ui_browser.py), so plots
need no file server; the same PNGs are also kept in the run record.
"""
from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID


def artifact_key(*parts: str) -> str:
    """``artifact_key("extract-and-train", "THUMOS14", "map")`` -> ``extract-and-train-thumos14-map``."""
    key = "-".join(re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-") for p in parts if p)
    return re.sub(r"-+", "-", key).strip("-")


def map_table_rows(map_by_tiou: Mapping[float, float], average_map: float) -> list[dict[str, str]]:
    """One row per tIoU threshold plus the average, mAP in percent (the paper tables' unit)."""
    rows = [{"tIoU": f"{float(t):.2f}", "mAP (%)": f"{100 * float(m):.2f}"} for t, m in sorted(map_by_tiou.items())]
    rows.append({"tIoU": "avg", "mAP (%)": f"{100 * float(average_map):.2f}"})
    return rows


def failures_rows(failures: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    return [{"video": f["video_id"], "source": f.get("source", ""), "error": f["error"]} for f in failures]


def image_markdown(title: str, png: bytes) -> str:
    """A markdown image with the PNG inlined as a base64 data URI."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


@dataclass
class RunSummary:
    """What the markdown summary artifact reports for one extract-and-train run."""

    flow_run_id: str
    dataset: str
    store_path: str
    store_fingerprint: str
    num_videos: int
    extracted: list[str]
    skipped: int
    failures: list[dict[str, str]]
    timings_s: dict[str, float]
    average_map: float | None
    map_by_tiou: dict[float, float] = field(default_factory=dict)
    random_init: bool = False
    record_path: str | None = None
    code_revision: str = "unknown"
    evaluated_videos: int | None = None  # videos of the evaluated subset that were predicted
    not_evaluated: list[str] = field(default_factory=list)  # of the subset, absent or incomplete in the store
    evaluated_classes: str | None = None  # "N of M" classes with ground truth among the evaluated videos


def summary_markdown(s: RunSummary) -> str:
    lines = [
        f"# extract-and-train: {s.dataset}",
        "",
        "| | |",
        "|---|---|",
        f"| flow run | `{s.flow_run_id}` |",
        f"| dataset | {s.dataset} |",
        f"| store | `{s.store_path}` |",
        f"| store fingerprint | `{s.store_fingerprint}` |",
        f"| code revision | `{s.code_revision}` |",
        f"| videos in store | {s.num_videos} |",
        f"| extracted this run | {len(s.extracted)} |",
        f"| already complete (skipped) | {s.skipped} |",
        f"| failed videos | {len(s.failures)} |",
    ]
    if s.average_map is not None:
        lines.append(f"| average mAP | **{100 * s.average_map:.2f} %** |")
    if s.evaluated_videos is not None:
        lines.append(f"| videos evaluated | {s.evaluated_videos}" + (
            f" (**{len(s.not_evaluated)} of the subset not complete in the store, not evaluated**: "
            + ", ".join(s.not_evaluated[:10]) + (" ..." if len(s.not_evaluated) > 10 else "") + ")"
            if s.not_evaluated else "") + " |")
    if s.evaluated_classes is not None:
        lines.append(f"| classes evaluated | {s.evaluated_classes} |")
    if s.random_init:
        lines.append("| weights | **random initialisation (explicit opt-in; features are not the paper's)** |")
    if s.record_path:
        lines.append(f"| run record | `{s.record_path}` |")
    lines += ["", "## Timings", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in s.timings_s.items()]
    if s.failures:
        lines += ["", "## Failed videos", "", "| video | error |", "|---|---|"]
        lines += [f"| {f['video_id']} | {f['error'].replace('|', '/')} |" for f in s.failures]
    return "\n".join(lines)


# --- publishers (need a Prefect run context or API) --------------------------------------------


def publish_map_table(key: str, map_by_tiou: Mapping[float, float], average_map: float, dataset: str) -> UUID:
    from prefect.artifacts import create_table_artifact

    return create_table_artifact(
        table=map_table_rows(map_by_tiou, average_map),
        key=key,
        description=f"Detection mAP per tIoU on {dataset} (ActivityNet-style evaluation)",
    )


def publish_failures(key: str, failures: Sequence[Mapping[str, str]]) -> UUID:
    from prefect.artifacts import create_table_artifact

    rows = failures_rows(failures) or [{"video": "-", "source": "-", "error": "no failures"}]
    return create_table_artifact(table=rows, key=key, description=f"{len(failures)} video(s) failed extraction")


def publish_markdown(key: str, markdown: str, description: str) -> UUID:
    from prefect.artifacts import create_markdown_artifact

    return create_markdown_artifact(markdown=markdown, key=key, description=description)


def publish_record_link(key: str, record_path: str) -> UUID:
    from prefect.artifacts import create_link_artifact

    return create_link_artifact(
        link=f"file://{record_path}", link_text=record_path, key=key,
        description="Immutable run record (`clipae runs show <flow-run-id>`)",
    )


class ProgressReporter:
    """A live progress artifact updated as mapped extraction tasks finish."""

    def __init__(self, key: str, total: int, what: str):
        from prefect.artifacts import create_progress_artifact

        self.total = max(total, 1)
        self.done = 0
        self.what = what
        self.id = create_progress_artifact(progress=0.0 if total else 100.0, key=key, description=self._text())

    def _text(self) -> str:
        return f"{self.what}: {self.done}/{self.total}"

    def advance(self, n: int = 1) -> None:
        from prefect.artifacts import update_progress_artifact

        self.done += n
        update_progress_artifact(self.id, progress=100.0 * self.done / self.total, description=self._text())
