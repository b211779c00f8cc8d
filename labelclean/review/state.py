"""What the review app knows: the queue of samples, the decisions so far, the images.

The page addresses samples by report row number only, never by path, so it can reach
exactly the images the report names, and an image is opened only as a regular file inside
the report's image folder (a link swapped in for it is not followed out of there). Every
decision goes to the decisions file at once (re-read and merged under a lock, replaced
atomically), so closing the browser, killing the server or a second server loses nothing.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from labelclean.data.manifest import IMAGE_SUFFIXES
from labelclean.report.crowd import vote_tally, vote_text
from labelclean.report.parquet import Report
from labelclean.report.summary import CLUSTER_MEANING, guard_counts
from labelclean.report.thumbs import Thumbnails
from labelclean.review.decisions import (
    DECISIONS,
    Decision,
    DecisionError,
    check_decision,
    load_decisions,
    now,
    record_decision,
    suggested_labels,
    writable_decisions_path,
)

logger = logging.getLogger(__name__)

#: Reviewed first, in this order (any other non-CS cluster after them); CS on demand.
QUEUE_ORDER = ("NS", "NHR", "NHI", "CH")
ON_DEMAND = "CS"
CARD_SIZE = 256


class ReviewState:
    """The report, its decisions file and the queue, shared by the server's threads."""

    def __init__(self, report: Report, decisions_path: Path, *, fingerprint: str) -> None:
        self.report, self.fingerprint = report, fingerprint
        self.path = writable_decisions_path(decisions_path)  # a link: where it leads
        f = report.frame
        self.paths = f["path"].astype(str).tolist()
        self.row_of = {p: i for i, p in enumerate(self.paths)}
        self.classes = report.class_names
        #: Whether the report records which guard moved a sample (older ones do not).
        self.has_guard = guard_counts(f, report.metadata) is not None
        self._labels = suggested_labels(report)
        #: The audit's decision, offered on every card; the network's guess is only evidence.
        self.suggested = report.suggested_labels.astype(str).to_numpy()
        self._lock = threading.Lock()
        self.decisions: dict[str, Decision] = {}
        if self.path.exists():
            from labelclean.review.exports import read_other_csv

            if read_other_csv(self.path, report) is not None:  # it would be rewritten, lost
                raise DecisionError(
                    f"{self.path}: a report page or Label Studio export, not a decisions file "
                    "of the review, which rewrites its file; `labelclean apply` reads it as "
                    "decisions; give the review another --decisions"
                )
            self.decisions = load_decisions(self.path, report, fingerprint=fingerprint).by_path
        #: The image folder as it was when the server started: images must be inside it.
        self.root = os.path.realpath(report.image_root)
        self.thumbs = Thumbnails(report.image_root, CARD_SIZE, opener=self._read_image)
        clusters = f["cluster"].astype(str).to_numpy()
        rank = {c: k for k, c in enumerate(QUEUE_ORDER)}
        others = sorted(set(clusters) - set(QUEUE_ORDER) - {ON_DEMAND})
        rank.update({c: len(QUEUE_ORDER) + k for k, c in enumerate(others)})
        rank[ON_DEMAND] = len(rank) + 1
        key = np.array([rank[c] for c in clusters])
        order = np.lexsort((f["conf_given"].to_numpy(), key))  # surest wrong labels first
        on_demand = clusters[order] == ON_DEMAND
        self.queue, self.more = order[~on_demand], order[on_demand]
        self.cluster_names = [c for c in (*QUEUE_ORDER, *others, ON_DEMAND) if c in set(clusters)]

    def meta(self) -> dict[str, Any]:
        """Classes, clusters and counts the page needs before any row."""
        return {
            "classes": self.classes,
            "clusters": self.cluster_names,
            "meaning": {c: CLUSTER_MEANING.get(c, "") for c in self.cluster_names},
            "queue_size": len(self.queue),
            "more_size": len(self.more),
            "more_cluster": ON_DEMAND,
            "has_guard": self.has_guard,
            "has_votes": "votes" in self.report.frame.columns,
            "decisions_file": str(self.path),
        }

    def rows(self, part: str) -> dict[str, Any]:
        """The rows of the queue (``part="queue"``) or of CS (``"more"``), column by column."""
        rows = self.queue if part == "queue" else self.more
        f = self.report.frame.iloc[rows]
        code = {c: k for k, c in enumerate(self.classes)}
        ccode = {c: k for k, c in enumerate(self.cluster_names)}
        out: dict[str, Any] = {
            "id": [int(i) for i in rows],
            "path": f["path"].astype(str).tolist(),
            "given": [code[g] for g in f["given_label"].astype(str)],
            "suggested": [code[s] for s in self.suggested[rows]],
            "network": [code[s] for s in f["pseudo_label"].astype(str)],
            "cluster": [ccode[c] for c in f["cluster"].astype(str)],
            "action": f["action"].astype(str).tolist(),
            "conf_given": np.round(f["conf_given"].to_numpy(np.float64), 3).tolist(),
            "conf_pseudo": np.round(f["conf_pseudo"].to_numpy(np.float64), 3).tolist(),
        }
        if self.has_guard:
            out["guard"] = [None if g is None or g != g else str(g) for g in f["guard"]]
        if "votes" in f.columns:  # a crowd report: how the crowd voted on each image
            out["n_votes"] = f["n_votes"].astype(int).tolist()
            out["agreement"] = np.round(f["agreement"].to_numpy(np.float64), 3).tolist()
            out["votes"] = [vote_text(v) for v in f["votes"]]
            out["tally"] = [vote_tally(v) for v in f["votes"]]
        ids = set(out["id"])
        with self._lock:
            self._reload()
            out["decisions"] = {
                str(self.row_of[p]): self._public(d)
                for p, d in self.decisions.items()
                if self.row_of[p] in ids
            }
        return out

    def traces(self, row: int) -> dict[str, Any]:
        """The per-epoch confidences of one sample (for its sparkline)."""
        r = self.report.frame.iloc[row]
        return {
            "given": np.round(np.asarray(r["trace_given"], np.float64), 3).tolist(),
            "pseudo": np.round(np.asarray(r["trace_pseudo"], np.float64), 3).tolist(),
        }

    def decide(self, row: int, decision: str | None, label: str | None) -> dict[str, Any]:
        """Record (or with ``decision=None`` forget) the decision on one row in the file.

        The file is re-read and merged under a lock (:func:`record_decision`), so decisions
        another server, tab or a hand edit put there meanwhile are kept, and learnt.
        """
        path = self.paths[row]
        d = None
        if decision is not None:
            d = Decision(path, decision, label, now())
            d = check_decision(d, "decision", labels=self._labels, classes=set(self.classes))
        with self._lock:
            self.decisions = record_decision(  # first: a decision not saved is not taken
                self.path,
                path,
                d,
                fingerprint=self.fingerprint,
                report_name=self.report.path.name if self.report.path else "report",
                labels=self._labels,
                classes=set(self.classes),
            )
            decided = len(self.decisions)
        return {"id": row, "decision": None if d is None else self._public(d), "decided": decided}

    def _reload(self) -> None:
        """The decisions as the file has them now (another server's too); the caller locks."""
        if not self.path.exists():
            return
        try:
            got = load_decisions(self.path, self.report, fingerprint=self.fingerprint)
        except DecisionError as err:  # a hand edit half done: keep what we know, say why
            logger.warning("cannot re-read the decisions: %s", err)
        else:
            self.decisions = got.by_path

    def thumbnail(self, row: int) -> tuple[bytes, str] | None:
        """The card-sized image of one row, or None when it cannot be read."""
        got = self.thumbs.encoded(self.paths[row])
        return (got[0], got[1]) if got else None

    def original(self, row: int) -> tuple[bytes, str] | None:
        """The image file of one row as it is on disk (image types only)."""
        rel = self.paths[row]
        if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
            return None
        try:
            data = self._read_image(rel)
        except OSError:
            return None
        return data, mimetypes.guess_type(rel)[0] or "application/octet-stream"

    def _read_image(self, rel: str) -> bytes:
        """The bytes of ``root / rel`` if it is a regular image file inside the image folder.

        It is opened as the audit opens images (:func:`labelclean.data.decode.open_image_file`:
        a regular file of a size an image can have, a FIFO refused before any read could
        block), and where the opened file really is is checked after opening: a link that
        stays inside the image folder is followed (the audit followed it too), but a link
        swapped in for an image, or for a folder on its way, cannot make the server read a
        file outside it.

        Raises:
            OSError: It is not such a file (or cannot be read).
        """
        from labelclean.data.decode import BadImage, open_image_file

        try:
            with open_image_file(Path(self.root) / rel) as fh:
                where = _opened_path(fh.fileno()) or os.path.realpath(os.path.join(self.root, rel))
                if os.path.commonpath([where, self.root]) != self.root:
                    raise OSError(f"{rel}: outside the image folder ({where})")
                return fh.read()
        except BadImage as err:
            raise OSError(f"{rel}: {err.reason} ({err.detail})") from None

    @staticmethod
    def _public(d: Decision) -> dict[str, Any]:
        return {"decision": d.decision, "label": d.label, "time": d.time}


def _opened_path(fd: int) -> str | None:
    """Where an open file is, from the kernel (Linux), or None where it cannot say."""
    try:
        return os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def parse_decision(payload: Any, n_rows: int) -> tuple[int, str | None, str | None]:
    """``(row, decision, label)`` from a request body, or a DecisionError saying what is wrong."""
    if not isinstance(payload, dict):
        raise DecisionError("the request body must be a JSON object")
    row = payload.get("id")
    if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < n_rows:
        raise DecisionError(f"id must be a row of the report (0..{n_rows - 1})")
    decision = payload.get("decision")
    if decision is not None and decision not in DECISIONS:
        raise DecisionError(f"decision must be one of {', '.join(DECISIONS)} or null")
    label = payload.get("label")
    if label is not None and not isinstance(label, str):
        raise DecisionError("label must be a string")
    return row, decision, label
