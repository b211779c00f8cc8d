"""The crowd part of a report at a glance: annotators ranked, and the images the crowd split.

Pure functions on the report's frame and the annotators table (shared by the terminal and
the page's "Annotators" section), and a rich renderer for ``labelclean report``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from labelclean.report.heat import heat_table
from labelclean.report.parquet import Report

if TYPE_CHECKING:
    from rich.console import Console

    from labelclean.report.thumbs import Thumbnails

#: Annotators whose confusion and doubtful votes the page shows; above, the most and least
#: trusted halves (the table above them lists everyone).
MAX_ANNOTATOR_DETAILS = 40
DOUBTFUL_SHOWN = 6


@dataclass
class CrowdSummary:
    """Headline figures of a crowd report (see :func:`crowd_summary`)."""

    n_votes: int  #: votes V
    n_annotators: int  #: annotators A
    split: int  #: images whose votes disagree
    changed: int  #: images whose final label is not the consensus (relabel)
    network_weight: float | None  #: beta, how far the votes let the network count
    annotators: pd.DataFrame | None  #: the annotators table, most trusted first
    split_images: pd.DataFrame  #: the most split images: path, votes, consensus, final


def vote_text(votes: Any) -> str:
    """``ann:cat bob:cat cy:dog`` for one image's votes."""
    return " ".join(f"{v['annotator']}:{v['label']}" for v in votes)


def vote_tally(votes: Any) -> str:
    """``cat 2, dog 1`` for one image's votes: most voted first, then by name."""
    counts = pd.Series([v["label"] for v in votes], dtype=object).value_counts()
    pairs = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return ", ".join(f"{label} {k}" for label, k in pairs)


def split_images(frame: pd.DataFrame, *, top: int = 10) -> pd.DataFrame:
    """The images where the crowd split, least agreement first, relabeled ones first on ties.

    Columns: ``row`` (position in ``frame``), ``path``, ``agreement``, ``votes`` (as text),
    ``tally`` (votes per label), ``consensus`` (the given label), ``final`` (the clean label,
    empty when unlabeled), ``action``.
    """
    split = frame[frame["agreement"] < 1]
    order = np.lexsort(
        (
            split["path"].to_numpy(),
            split["action"].to_numpy() == "keep",
            split["agreement"].to_numpy(),
        )
    )
    rows = split.iloc[order[:top]]
    return pd.DataFrame(
        {
            "row": np.flatnonzero(frame["agreement"].to_numpy() < 1)[order[:top]],
            "path": rows["path"].to_numpy(),
            "agreement": rows["agreement"].to_numpy(),
            "votes": [vote_text(v) for v in rows["votes"]],
            "tally": [vote_tally(v) for v in rows["votes"]],
            "consensus": rows["given_label"].to_numpy(),
            "final": rows["clean_label"].fillna("").to_numpy(),
            "action": rows["action"].to_numpy(),
        }
    )


def vote_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per vote: ``row`` (of the frame), ``path, annotator, vote, p_right, final``.

    ``final`` is the image's clean label, "" where unlabeled.
    """
    lengths = frame["votes"].map(len).to_numpy()
    flat = [v for votes in frame["votes"] for v in votes]
    rows = np.repeat(np.arange(len(frame)), lengths)
    return pd.DataFrame(
        {
            "row": rows,
            "path": frame["path"].to_numpy()[rows],
            "annotator": [v["annotator"] for v in flat],
            "vote": [v["label"] for v in flat],
            "p_right": np.asarray([v["p_right"] for v in flat], dtype=np.float32),
            "final": frame["clean_label"].fillna("").to_numpy()[rows],
        }
    )


def annotator_confusion(
    votes: pd.DataFrame, annotator: str, class_names: list[str]
) -> tuple[dict[str, Any], str]:
    """Final label (rows) x the annotator's vote (columns) over their labeled images.

    Returns the heatmap macro's context and its note (see
    :func:`~labelclean.report.heat.heat_table`).
    """
    mine = votes[(votes["annotator"] == annotator) & (votes["final"] != "")]
    return heat_table(mine["final"], mine["vote"], class_names, row_title="final", col_title="vote")


def doubtful_votes(votes: pd.DataFrame, annotator: str, *, top: int = 10) -> pd.DataFrame:
    """The annotator's votes least likely right (lowest ``p_right``) first."""
    mine = votes[votes["annotator"] == annotator]
    order = np.lexsort((mine["path"].to_numpy(), mine["p_right"].to_numpy()))
    return mine.iloc[order[:top]].reset_index(drop=True)


def annotator_details(
    frame: pd.DataFrame,
    annotators: pd.DataFrame,
    class_names: list[str],
    *,
    thumbs: Thumbnails,
    max_details: int = MAX_ANNOTATOR_DETAILS,
    top: int = DOUBTFUL_SHOWN,
) -> tuple[list[dict[str, Any]], str]:
    """Each ranked annotator's confusion heatmap and most doubtful votes, for the page.

    With more than ``max_details`` annotators only the most and the least trusted halves are
    detailed; the note says so (empty otherwise).
    """
    ranked = list(enumerate(annotators["annotator"].astype(str), start=1))
    note = ""
    if len(ranked) > max_details:
        half = max(max_details // 2, 1)
        ranked = ranked[:half] + ranked[-half:]
        note = f"annotator details: the {half} most and {half} least trusted of {len(annotators)}"
    votes = vote_rows(frame)
    groups = dict(iter(votes.groupby("annotator", sort=False)))
    out = []
    for rank, name in ranked:
        mine = groups.get(name, votes.iloc[:0])
        heat, heat_note = annotator_confusion(mine, name, class_names)
        doubtful = [
            {
                "path": str(r["path"]),
                "row": int(r["row"]),
                "vote": r["vote"],
                "final": r["final"] or None,
                "p_right": float(r["p_right"]),
                "src": thumbs.uri(str(r["path"])),
            }
            for r in doubtful_votes(mine, name, top=top).to_dict("records")
        ]
        out.append(
            {
                "rank": rank,
                "annotator": name,
                "heat": heat,
                "heat_note": heat_note,
                "doubtful": doubtful,
            }
        )
    return out, note


def annotator_records(annotators: pd.DataFrame) -> list[dict[str, Any]]:
    """The annotators table as the page's rows: rank, figures, and the pair as words."""
    out = []
    for rank, r in enumerate(annotators.to_dict("records"), start=1):
        confused = isinstance(r["confused_true"], str)
        out.append(
            {
                "rank": rank,
                "annotator": str(r["annotator"]),
                "n_votes": int(r["n_votes"]),
                "estimated_accuracy": float(r["estimated_accuracy"]),
                "agreement": None if pd.isna(r["agreement"]) else float(r["agreement"]),
                "confused_true": r["confused_true"] if confused else None,
                "confused_voted": r["confused_voted"] if confused else None,
                "confused_share": float(r["confused_share"]),
            }
        )
    return out


def crowd_summary(
    report: Report, annotators: pd.DataFrame | None, *, top: int = 10
) -> CrowdSummary | None:
    """The crowd figures of ``report``, or None when it holds no votes."""
    frame = report.frame
    if "votes" not in frame:
        return None
    crowd = report.metadata.get("crowd", {})
    return CrowdSummary(
        n_votes=int(frame["n_votes"].sum()),
        n_annotators=int(crowd.get("n_annotators", 0)),
        split=int((frame["agreement"] < 1).sum()),
        changed=int((frame["action"] == "relabel").sum()),
        network_weight=crowd.get("network_weight"),
        annotators=annotators,
        split_images=split_images(frame, top=top),
    )


def render_crowd(summary: CrowdSummary, *, top: int = 10, console: Console | None = None) -> None:
    """Print the "Annotators" section: ranked annotators and the split images.

    Annotator ids, class names and paths are user data: they are escaped.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    n = max(len(summary.split_images), 1)
    weight = "n/a" if summary.network_weight is None else f"{summary.network_weight:.2f}"
    console.print(
        f"[bold]Annotators[/]: {summary.n_votes} votes by {summary.n_annotators} annotators; "
        f"the crowd split on {summary.split} images; the final label differs from the "
        f"consensus on {summary.changed} (network weight {weight})"
    )
    if summary.annotators is None:
        console.print("no annotators table beside the report")
    else:
        t = Table(title="annotators, most trusted first (top and bottom)")
        for col in ("rank", "annotator", "votes", "est. accuracy", "agreement", "confuses most"):
            t.add_column(col, justify="left" if col in ("annotator", "confuses most") else "right")
        table = summary.annotators
        shown = table if len(table) <= 2 * top else pd.concat([table.head(top), table.tail(top)])
        for rank, r in zip(shown.index + 1, shown.to_dict("records")):
            pair = (
                f"{escape(str(r['confused_true']))} -> {escape(str(r['confused_voted']))} "
                f"({r['confused_share']:.0%})"
                if isinstance(r["confused_true"], str)
                else "-"
            )
            agree = "-" if pd.isna(r["agreement"]) else f"{r['agreement']:.1%}"
            t.add_row(
                str(rank),
                escape(str(r["annotator"])),
                str(r["n_votes"]),
                f"{r['estimated_accuracy']:.1%}",
                agree,
                pair,
            )
        console.print(t)
    if len(summary.split_images):
        s = Table(title=f"where the crowd split (least agreement first, {n} shown)")
        for col in ("path", "agreement", "votes", "consensus", "final"):
            s.add_column(col, justify="right" if col == "agreement" else "left")
        for r in summary.split_images.to_dict("records"):
            s.add_row(
                escape(str(r["path"])),
                f"{r['agreement']:.0%}",
                escape(r["votes"]),
                escape(str(r["consensus"])),
                escape(str(r["final"]) or "(unlabeled)"),
            )
        console.print(s)
