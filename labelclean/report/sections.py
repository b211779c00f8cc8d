"""The report page's sections: each is a template plus a function that builds its context.

To add a section (e.g. "Annotators"): write ``templates/sections/<id>.html.j2`` (it sees its
context as ``c``), write ``build_<id>(page: PageData) -> dict | None`` here (None leaves
the section out, e.g. when the report has no such data; append to ``page.sampled`` whatever
it left out), and add one :class:`Section` line to :data:`SECTIONS`. The navigation bar
follows the list.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from labelclean.report import figures
from labelclean.report.heat import heat_table
from labelclean.report.parquet import Report, suggested_label
from labelclean.report.summary import (
    CLUSTER_MEANING,
    CLUSTER_SHORT,
    GUARD_MEANING,
    Summary,
    next_commands,
    outcome_text,
)
from labelclean.report.thumbs import Thumbnails

TABLE_COLUMNS = (
    "index",
    "path",
    "given_label",
    "suggested_label",
    "clean_label",
    "pseudo_label",
    "cluster",
    "action",
    "conf_given",
    "conf_pseudo",
    "cluster_prob",
)
NUMERIC = ("index", "conf_given", "conf_pseudo", "cluster_prob")
PER_PAGE = 50
#: Table rows with an embedded thumbnail (the most suspicious first); the rest show "-".
MAX_TABLE_THUMBS = 5000
UNLABEL_ORDER = ("NHR", "NHI", "NS", "CH", "CS")
UNLABEL_REASON = {
    "NHR": "too ambiguous to keep or fix",
    "NHI": "too ambiguous to keep or fix",
    "NS": "the model prefers another label, but was not sure enough of it to relabel",
    "CH": "in a clean cluster, but the model's most frequent prediction disagrees",
    "CS": "in a clean cluster, but the model's most frequent prediction disagrees",
}
#: Where each cluster sits in the scatter; what its samples got is counted per report.
GUIDE = (
    ("CS", "top right: the model agreed with the label from early on"),
    ("CH", "lower on the diagonal: the model agreed, but learnt it late"),
    ("NS", "top left: the model is sure of another label"),
    ("NHR", "middle: the model is unsure of any label, the given one plausible"),
    ("NHI", "bottom left: the model is unsure, the given label unlikely"),
)
#: Plain names of the sample table's columns, and what each means (a tooltip); the CSV
#: export keeps the column names.
COLUMN_TITLES = {
    "index": ("row", "the row of the manifest"),
    "given_label": ("given label", "the label the data came with"),
    "suggested_label": (
        "suggested label",
        "what review and apply propose: the audit's label where it kept or relabeled, "
        "its best guess where it unlabeled",
    ),
    "clean_label": (
        "audit's label",
        "the label the audit uses: the given one if kept, the new one "
        "if relabeled, none if unlabeled",
    ),
    "pseudo_label": (
        "network's guess",
        "the class the network predicted most often over the "
        "epochs (the paper's max-repeating pseudo label)",
    ),
    "cluster": ("cluster", "where the sample sits in the joint confidence (see the legend)"),
    "action": ("audit", "what the audit did: keep, relabel or unlabel"),
    "conf_given": (
        "conf. given",
        "the network's mean confidence in the given label over the epochs",
    ),
    "conf_pseudo": ("conf. guess", "the network's mean confidence in its guess over the epochs"),
    "cluster_prob": ("cluster prob.", "how surely the sample belongs to its cluster"),
    "guard": ("guard", "which of the audit's guards moved the sample, if any"),
}


@dataclass
class PageData:
    """Everything a section builder may use; ``sampled`` collects what the page left out."""

    report: Report
    summary: Summary
    max_scatter: int
    max_grid: int
    table_rows: int
    thumbs: Thumbnails  #: grid-sized thumbnails
    table_thumbs: Thumbnails  #: table-sized thumbnails
    missing: dict[str, str]  #: unreadable image -> reason
    sampled: list[str] = field(default_factory=list)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The report's rows, with ``suggested_label`` (the one label the page proposes)."""
        return self.report.frame.assign(suggested_label=suggested_label(self.report.frame))


@dataclass(frozen=True)
class Section:
    """One section of the page: its anchor, its name in the navigation, template, builder."""

    id: str
    title: str
    build: Callable[[PageData], dict[str, Any] | None]

    @property
    def template(self) -> str:
        """``sections/<id>.html.j2``."""
        return f"sections/{self.id}.html.j2"


def _present(clusters: pd.Series, order: tuple[str, ...]) -> list[str]:
    names = [c for c in order if (clusters == c).any()]
    return names + sorted(set(clusters) - set(names))


def build_summary(page: PageData) -> dict[str, Any]:
    """What to do next, headline cards, warnings, the cluster legend, guards, flips, settings.

    ``todo`` opens the page: how many labels look wrong, were fixed, need a person, and the
    exact commands to run next. The legend counts each cluster's actions in this report.

    ``guard`` is None for a report written before the guard was recorded (nothing to show).
    """
    s, n = page.summary, max(page.summary.n, 1)
    md = page.report.metadata
    flagged = s.actions["relabel"] + s.actions["unlabel"]
    cards = [
        ("samples", s.n),
        ("classes", s.n_classes),
        ("look wrong", f"{flagged} ({s.estimated_noise:.1%})"),
        ("fixed (relabeled)", f"{s.actions['relabel']} ({s.actions['relabel'] / n:.0%})"),
        ("need a person (unlabeled)", f"{s.actions['unlabel']} ({s.actions['unlabel'] / n:.0%})"),
        ("kept", f"{s.actions['keep']} ({s.actions['keep'] / n:.0%})"),
    ]
    return {
        "cards": cards,
        "todo": {
            "n": s.n,
            "flagged": flagged,
            "share": s.estimated_noise,
            "relabeled": s.actions["relabel"],
            "unlabeled": s.actions["unlabel"],
            "disputed": s.disputed,
            "commands": next_commands(page.report.path),
        },
        "warnings": [str(w) for w in md.get("warnings") or []],
        "clusters": [
            {
                "code": c,
                "name": CLUSTER_SHORT.get(c, c),
                "meaning": CLUSTER_MEANING.get(c, ""),
                "n": k,
                "share": k / n,
                **s.cluster_actions.get(c, {}),
            }
            for c, k in s.clusters.items()
        ],
        "guard": None
        if s.guard is None
        else [(g, k, k / n, GUARD_MEANING.get(g, "")) for g, k in s.guard.items()],
        "guard_note": str(md.get("guard_note") or ""),
        "flips": s.top_flips.to_dict("records"),
        "most": s.most_relabeled.head(5).to_dict("records"),
        "config": json.dumps(
            page.report.metadata.get("config", {}), indent=1, sort_keys=True, default=str
        ),
    }


def build_scatter(page: PageData) -> dict[str, Any]:
    """Figure 2: the joint confidences coloured by cluster, with the mixture."""
    fig, note = figures.scatter(page.frame, page.report.metadata, max_points=page.max_scatter)
    if note:
        page.sampled.append(f"scatter: {note}")
    semi = page.report.metadata.get("semi") or {}  # labelclean.fgcm.semi
    guide = [
        (c, CLUSTER_SHORT.get(c, c), text, outcome_text(page.summary.cluster_actions.get(c, {})))
        for c, text in GUIDE
    ]
    return {"fig": fig, "note": note, "guide": guide, "semi_changed": semi.get("changed", 0)}


def build_traces(page: PageData) -> dict[str, Any]:
    """Figure 1: typical samples of each cluster and their confidence over epochs."""
    thumbs = Thumbnails(page.report.image_root, 96, page.missing)
    rows = [(c, CLUSTER_SHORT.get(c, c)) for c, k in page.summary.clusters.items() if k]
    return {"fig": figures.traces(page.frame, thumbs) if len(page.frame) else None, "rows": rows}


def _tile(row: pd.Series, thumbs: Thumbnails) -> dict[str, Any]:
    got = thumbs.get(str(row["path"]))
    return {
        "path": str(row["path"]),
        "index": int(row["index"]),
        "given": row["given_label"],
        "clean": row["clean_label"] if isinstance(row["clean_label"], str) else None,
        "suggested": row["suggested_label"],  #: the audit's decision (suggested_label)
        "pseudo": row["pseudo_label"],  #: the network's guess: evidence only
        "conf_given": float(row["conf_given"]),
        "conf_pseudo": float(row["conf_pseudo"]),
        "src": got[0] if got else None,
        "width": got[1] if got else thumbs.size,
        "height": got[2] if got else thumbs.size,
    }


def build_relabeled(page: PageData) -> dict[str, Any]:
    """Figure 3: relabeled images, given -> clean, most confident first."""
    rows = page.frame[page.frame["action"] == "relabel"]
    rows = rows.sort_values("conf_pseudo", ascending=False, kind="stable")
    if len(rows) > page.max_grid:
        page.sampled.append(f"relabeled grid: first {page.max_grid} of {len(rows)}")
    tiles = [_tile(r, page.thumbs) for _, r in rows.head(page.max_grid).iterrows()]
    return {"tiles": tiles, "total": len(rows), "size": page.thumbs.size}


def build_unlabeled(page: PageData) -> dict[str, Any]:
    """Unlabeled images per cluster, lowest given-label confidence first."""
    rows = page.frame[page.frame["action"] == "unlabel"]
    groups = []
    for c in _present(rows["cluster"], UNLABEL_ORDER):
        part = rows[rows["cluster"] == c].sort_values("conf_given", kind="stable")
        if len(part) > page.max_grid:
            page.sampled.append(f"unlabeled {c} grid: first {page.max_grid} of {len(part)}")
        tiles = [_tile(r, page.thumbs) for _, r in part.head(page.max_grid).iterrows()]
        groups.append(
            {
                "cluster": c,
                "name": CLUSTER_SHORT.get(c, c),
                "reason": UNLABEL_REASON.get(c, ""),
                "tiles": tiles,
                "total": len(part),
            }
        )
    return {"groups": groups, "total": len(rows), "size": page.thumbs.size}


def build_classes(page: PageData) -> dict[str, Any]:
    """The per-class table and the given -> clean heatmap of the labeled samples."""
    f = page.frame[page.frame["action"] != "unlabel"]
    heat, note = heat_table(f["given_label"], f["clean_label"], page.report.class_names)
    if note:
        page.sampled.append(f"heatmap: {note}")
    return {"per_class": page.summary.per_class.to_dict("records"), "heat": heat, "heat_note": note}


def suspicious_order(frame: pd.DataFrame) -> np.ndarray:
    """Row positions, most suspicious first: flagged, then model disagreement, then low a."""
    return np.lexsort(
        (
            frame["conf_given"].to_numpy(),
            (frame["pseudo_label"] == frame["given_label"]).to_numpy(),
            (frame["action"] == "keep").to_numpy(),
        )
    )


def _records(rows: pd.DataFrame, cols: list[str]) -> list[dict[str, Any]]:
    out = rows[cols].astype(object).where(rows[cols].notna(), None)
    out["index"] = rows["index"].astype(np.int64).tolist()
    for col in ("conf_given", "conf_pseudo", "cluster_prob"):
        values = rows[col].to_numpy(dtype=np.float64)
        out[col] = [round(float(v), 4) if np.isfinite(v) else None for v in values]
    return out.to_dict("records")


def build_samples(page: PageData) -> dict[str, Any]:
    """Every flagged sample and the most suspicious kept ones, with the first page as HTML.

    The ``guard`` column (which guard moved a sample) is shown when the report records it.
    """
    f = page.frame
    columns = [*TABLE_COLUMNS, *(["guard"] if page.summary.guard is not None else [])]
    order = suspicious_order(f)
    kept = f["action"].to_numpy()[order] == "keep"
    chosen = np.concatenate([order[~kept], order[kept][: page.table_rows]])
    rows = f.iloc[chosen]
    kept_total, kept_shown = int(kept.sum()), int(min(kept.sum(), page.table_rows))
    if kept_shown < kept_total:
        page.sampled.append(
            f"table: every flagged sample and the {kept_shown} most suspicious of "
            f"{kept_total} kept ones"
        )
    paths = list(dict.fromkeys(rows["path"].astype(str)))
    if len(paths) > MAX_TABLE_THUMBS:
        page.sampled.append(f"table thumbnails: the first {MAX_TABLE_THUMBS} of {len(paths)} rows")
    thumbs = {p: u for p in paths[:MAX_TABLE_THUMBS] if (u := page.table_thumbs.uri(p))}
    records = _records(rows, columns)
    return {
        "records": records,
        "first_page": records[:PER_PAGE],
        "thumbs": thumbs,
        "columns": columns,
        "numeric": NUMERIC,
        "flagged": int((~kept).sum()),
        "kept_total": kept_total,
        "kept_shown": kept_shown,
        "n": len(f),
        "per_page": PER_PAGE,
        "clusters": [c for c, k in page.summary.clusters.items() if k],
        "cluster_names": {c: CLUSTER_SHORT.get(c, c) for c in page.summary.clusters},
        "titles": COLUMN_TITLES,
        "classes": page.report.class_names,
    }


def build_annotators(page: PageData) -> dict[str, Any] | None:
    """Crowd reports: annotators ranked, each one's confusion and doubtful votes; split images."""
    if "votes" not in page.frame:
        return None
    from labelclean.report.annotators import annotators_path, read_annotators
    from labelclean.report.crowd import annotator_details, annotator_records, crowd_summary

    rep = page.report
    table = read_annotators(rep.path, rep.metadata) if rep.path is not None else None
    summary = crowd_summary(rep, table, top=page.max_grid)
    assert summary is not None  # the report has votes
    if summary.split > len(summary.split_images):
        page.sampled.append(f"split images: first {len(summary.split_images)} of {summary.split}")
    tiles = [
        {**_tile(page.frame.iloc[int(r["row"])], page.thumbs), **r}
        for r in summary.split_images.to_dict("records")
    ]
    details, note = ([], "")
    if table is not None:
        details, note = annotator_details(
            page.frame, table, rep.class_names, thumbs=page.table_thumbs
        )
    if note:
        page.sampled.append(note)
    return {
        "s": summary,
        "table_file": annotators_path(rep.path).name if rep.path is not None else None,
        "annotators": annotator_records(table) if table is not None else None,
        "detailed": {d["rank"] for d in details},
        "details": details,
        "tiles": tiles,
        "size": page.thumbs.size,
    }


SECTIONS: list[Section] = [
    Section("summary", "Summary", build_summary),
    Section("annotators", "Annotators", build_annotators),
    Section("scatter", "Joint confidence", build_scatter),
    Section("traces", "Traces", build_traces),
    Section("relabeled", "Relabeled", build_relabeled),
    Section("unlabeled", "Unlabeled", build_unlabeled),
    Section("classes", "Classes", build_classes),
    Section("samples", "Samples", build_samples),
]
