"""One evaluation call for the CLI: YouTube-VIS AP and/or TrackEval tracking metrics, and per-video rows."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from types import SimpleNamespace

from crossvis.data.ytvis import YTVISDataset
from crossvis.errors import CrossVISError
from crossvis.evaluation.hota import format_hota, hota_from_tracks
from crossvis.evaluation.report import format_metrics
from crossvis.evaluation.ytvis_eval import EvalResult, Evaluator, _evaluate, load_results
from crossvis.io import atomic_write

METRICS = ("ytvis", "hota")
PER_VIDEO_COLUMNS = [
    "video_id",
    "video",
    "frames",
    "gt_tracks",
    "result_tracks",
    "AP",
    "AP50",
    "AP75",
    "id_switches",
    "fragmentations",
    "HOTA",
    "AssA",
    "IDF1",
    "IDSW",
]


PER_TRACK_COLUMNS = [
    "video_id",
    "video",
    "annotation_id",
    "category",
    "frames",
    "matched_frames",
    "result_tracks",
    "id_switches",
    "fragmentations",
]


@dataclass
class Report:
    ytvis: EvalResult | None = None
    hota: dict | None = None
    per_video: list[dict] = field(default_factory=list)
    per_track: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        out: dict = self.ytvis.to_dict() if self.ytvis is not None else {}
        if self.hota is not None:
            out["hota"] = self.hota
        if self.per_video:
            out["per_video"] = self.per_video
        return out

    def text(self, per_video: bool = True) -> str:
        parts = []
        if self.ytvis is not None:
            parts.append(format_metrics(self.ytvis))
        if self.hota is not None:
            parts.append(format_hota(self.hota))
        if self.per_video and per_video:
            parts.append(format_per_video(self.per_video))
        return "\n".join(parts)

    def write_per_video_csv(self, path: str | os.PathLike) -> None:
        _write_csv(path, self.per_video, PER_VIDEO_COLUMNS)

    def write_per_track_csv(self, path: str | os.PathLike) -> None:
        _write_csv(path, self.per_track, PER_TRACK_COLUMNS)


def _write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
    with atomic_write(path) as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})


def per_track_rows(ds: YTVISDataset, identity: dict) -> list[dict]:
    """One row per GT track: frames present and matched (mask IoU >= 0.5, one-to-one per frame), how many
    result tracks covered it, its identity switches and fragmentations (the diagnostics' per-track counts)."""
    names = {c["id"]: c["name"] for c in ds.categories}
    rows = []
    for v in ds.videos:
        per = identity.get("per_video", {}).get(v.id, {}).get("per_track", {})
        for a in v.annotations:
            t = per.get(a["id"], {})
            rows.append(
                {
                    "video_id": v.id,
                    "video": v.file_names[0].split("/")[0] if v.file_names else str(v.id),
                    "annotation_id": a["id"],
                    "category": names[a["category_id"]],
                    "frames": t.get("frames", 0),
                    "matched_frames": t.get("matched_frames", 0),
                    "result_tracks": t.get("result_tracks", 0),
                    "id_switches": t.get("id_switches", 0),
                    "fragmentations": t.get("fragmentations", 0),
                }
            )
    return rows


def parse_metrics(spec: str) -> list[str]:
    names = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise CrossVISError(
            "--metrics", f"unknown metric {bad[0] if bad else spec!r} (choose from {', '.join(METRICS)})"
        )
    return names


def per_video_rows(evaluator: Evaluator, dts: dict, identity: dict, hota: dict | None) -> list[dict]:
    """One row per video: AP (the official protocol on that video alone; -1 when it has no GT), identity
    switches and fragmentations (our diagnostics), and TrackEval's HOTA/AssA/IDF1/IDSW when computed."""
    ds = evaluator.dataset
    names = {v.id: (v.file_names[0].split("/")[0] if v.file_names else str(v.id)) for v in ds.videos}
    rows = []
    for v in ds.videos:
        view = SimpleNamespace(videos=[v], category_ids=ds.category_ids, categories=ds.categories)
        r = _evaluate(view, {v.id: evaluator.gt_tracks.get(v.id, [])}, {v.id: dts.get(v.id, [])}, False)  # type: ignore[arg-type]
        ident = identity.get("per_video", {}).get(v.id, {})
        row = {
            "video_id": v.id,
            "video": names[v.id],
            "frames": v.length,
            "gt_tracks": len(evaluator.gt_tracks.get(v.id, [])),
            "result_tracks": len(dts.get(v.id, [])),
            "AP": r.stats["AP"],
            "AP50": r.stats["AP50"],
            "AP75": r.stats["AP75"],
            "id_switches": ident.get("id_switches", 0),
            "fragmentations": ident.get("fragmentations", 0),
        }
        if hota is not None:
            h = hota["per_video"][v.id]
            row.update(HOTA=h["HOTA"], AssA=h["AssA"], IDF1=h["IDF1"], IDSW=int(h["IDSW"]))
        rows.append(row)
    return rows


def format_per_video(rows: list[dict]) -> str:
    has_hota = "HOTA" in rows[0]
    head = f"{'video':>24s} {'frames':>6s} {'GT':>4s} {'res':>4s} {'AP':>6s} {'AP50':>6s} {'IDsw':>5s} {'frag':>5s}"
    if has_hota:
        head += f" {'HOTA':>6s} {'AssA':>6s} {'IDF1':>6s} {'IDSW':>5s}"
    lines = [
        "per video (AP: this video alone; IDsw/frag: mask-IoU diagnostics; HOTA..IDSW: TrackEval):",
        head,
    ]

    def pct(x: float) -> str:
        return f"{100 * x:6.2f}" if x >= 0 else f"{'-':>6s}"

    for r in rows:
        line = (
            f"{r['video'][-24:]:>24s} {r['frames']:6d} {r['gt_tracks']:4d} {r['result_tracks']:4d} "
            f"{pct(r['AP'])} {pct(r['AP50'])} {r['id_switches']:5d} {r['fragmentations']:5d}"
        )
        if has_hota:
            line += f" {pct(r['HOTA'])} {pct(r['AssA'])} {pct(r['IDF1'])} {r['IDSW']:5d}"
        lines.append(line)
    return "\n".join(lines)


def evaluate_report(
    annotations: str | os.PathLike | dict | YTVISDataset,
    results: str | os.PathLike | list,
    *,
    metrics: list[str] | tuple[str, ...] = ("ytvis",),
    per_video: bool = False,
    per_track: bool = False,
    score_threshold: float = 0.0,
) -> Report:
    """``metrics`` ("ytvis": official AP + identity diagnostics; "hota": TrackEval HOTA/CLEAR/Identity) and,
    with ``per_video``, one row per video; with ``per_track``, one row per GT track. The results are loaded and checked once."""
    ev = Evaluator(annotations)
    dts = load_results(results, ev.dataset)
    rep = Report()
    need_ytvis = "ytvis" in metrics or per_video or per_track
    if need_ytvis:
        result = _evaluate(ev.dataset, ev.gt_tracks, dts, True)
        rep.ytvis = result if "ytvis" in metrics else None
    if "hota" in metrics:
        rep.hota = hota_from_tracks(ev, dts, score_threshold=score_threshold)
    if per_video:
        rep.per_video = per_video_rows(ev, dts, result.identity, rep.hota)
    if per_track:
        rep.per_track = per_track_rows(ev.dataset, result.identity)
    return rep
