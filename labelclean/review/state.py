"""What the review app knows: the queue of samples, the decisions so far, the images.

The queue is in the order of value (:func:`review_order`): what the audit flagged, then what
it kept although something disputes the label, then the rest, the most doubtful given label
first in each part.

The page addresses samples by report row number only, never by path, so it can reach
exactly the images the report names, and an image is opened only as a regular file inside
the report's image folder (a link swapped in for it is not followed out of there). Every
decision goes to the decisions file at once (re-read and merged under a lock, replaced
atomically; a bulk in one such write, whole or not at all), so closing the browser, killing
the server or a second server loses nothing.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelclean.data.manifest import IMAGE_SUFFIXES
from labelclean.fgcm.clustering import CLUSTER_NAMES
from labelclean.report.crowd import vote_tally, vote_text
from labelclean.report.parquet import Report
from labelclean.report.summary import CLUSTER_MEANING, DISPUTED_GUARDS, guard_counts
from labelclean.report.thumbs import Thumbnails
from labelclean.review.decisions import (
    DECISIONS,
    Decision,
    DecisionError,
    check_decision,
    load_decisions,
    now,
    record_decisions,
    suggested_labels,
    writable_decisions_path,
)

logger = logging.getLogger(__name__)

#: The queue's parts, in order: what the audit flagged, what it kept although something
#: disputes the label, the rest (:func:`queue_parts`).
PARTS = ("flagged", "disputed", "rest")
#: Kept, undisputed samples of this cluster come on demand, after the queue.
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
        self.part = queue_parts(f)
        self.queue, self.more = review_order(f, self.part)
        present = set(clusters)
        self.cluster_names = [c for c in CLUSTER_NAMES if c in present]
        self.cluster_names += sorted(present - set(CLUSTER_NAMES))

    def meta(self) -> dict[str, Any]:
        """Classes, clusters and counts the page needs before any row."""
        return {
            "classes": self.classes,
            "keys": class_keys(self.classes),
            "clusters": self.cluster_names,
            "meaning": {c: CLUSTER_MEANING.get(c, "") for c in self.cluster_names},
            "queue_size": len(self.queue),
            "more_size": len(self.more),
            "more_cluster": ON_DEMAND,
            "parts": list(PARTS),
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
            "part": self.part[rows].tolist(),
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
        """Record (or with ``decision=None`` forget) the decision on one row in the file."""
        got = self.decide_many([(row, decision, label)])
        return {"id": row, "decision": got["decisions"][str(row)], "decided": got["decided"]}

    def decide_many(self, items: Sequence[tuple[int, str | None, str | None]]) -> dict[str, Any]:
        """Record ``(row, decision, label)`` changes, in order, all at once or none.

        Every change is checked first (a bad one is a DecisionError naming its place in the
        list), then the file is re-read and merged under a lock in one write
        (:func:`record_decisions`), so decisions another server, tab or a hand edit put there
        meanwhile are kept, and learnt. Returns each named row's decision now (None: none) and
        how many images are decided.
        """
        changes = []
        for k, (row, decision, label) in enumerate(items):
            path = self.paths[row]
            d = None
            if decision is not None:
                where = "decision" if len(items) == 1 else f"decision {k + 1} of {len(items)}"
                d = check_decision(
                    Decision(path, decision, label, now()),
                    where,
                    labels=self._labels,
                    classes=set(self.classes),
                )
            changes.append((path, d))
        with self._lock:
            self.decisions = record_decisions(  # first: a decision not saved is not taken
                self.path,
                changes,
                fingerprint=self.fingerprint,
                report_name=self.report.path.name if self.report.path else "report",
                labels=self._labels,
                classes=set(self.classes),
            )
            now_ = {row: self.decisions.get(self.paths[row]) for row, _, _ in items}
            decided = len(self.decisions)
        return {
            "decisions": {str(r): None if d is None else self._public(d) for r, d in now_.items()},
            "decided": decided,
        }

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


def class_keys(classes: Sequence[str]) -> list[str | None]:
    """The key that picks each class on a card (None: none, the ``/`` search finds it).

    Where every class is one distinct digit the key is the class's name (on digits, 3 is
    "3"); else the first nine classes are 1-9 and the tenth is 0, as on a keyboard's row.
    """
    if all(len(c) == 1 and c in "0123456789" for c in classes) and len(set(classes)) == len(
        classes
    ):
        return list(classes)
    return [str(i + 1) if i < 9 else "0" if i == 9 else None for i in range(len(classes))]


def queue_parts(frame: pd.DataFrame) -> np.ndarray:
    """``[N]`` the part of the queue of each sample: an index into :data:`PARTS`.

    ``flagged`` (0): the audit relabeled or unlabeled it. ``disputed`` (1): the audit kept the
    given label although something speaks against it: the network's guess is another class, a
    guard kept it against the model (:data:`DISPUTED_GUARDS`), or the crowd split (a crowd
    report's ``agreement`` below 1). ``rest`` (2): kept, undisputed.
    """
    action = frame["action"].astype(str)
    disputed = frame["pseudo_label"].astype(str) != frame["given_label"].astype(str)
    if "guard" in frame.columns:
        disputed |= frame["guard"].isin(DISPUTED_GUARDS)
    if "agreement" in frame.columns:
        disputed |= (frame["n_votes"] > 0) & (frame["agreement"] < 1)
    flagged = action.isin(["relabel", "unlabel"]).to_numpy()
    return np.where(flagged, 0, np.where((action == "keep").to_numpy() & disputed, 1, 2))


def doubt(frame: pd.DataFrame) -> np.ndarray:
    """``[N]`` how likely the given label is wrong, 0-1: what orders each part of the queue.

    One minus the network's confidence in the given label (``conf_given``, its mean over the
    audit's epochs); on a crowd report, for images with votes, the mean of that and the share
    of votes against the given label (``1 - agreement``), so an image the crowd and the
    network both doubt comes before one only one of them doubts.
    """
    out = 1.0 - frame["conf_given"].to_numpy(np.float64)
    if "agreement" in frame.columns:
        voted = frame["n_votes"].to_numpy() > 0
        crowd = 1.0 - frame["agreement"].to_numpy(np.float64)
        out = np.where(voted, (out + crowd) / 2, out)
    return out


def review_order(
    frame: pd.DataFrame, parts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(queue, on demand)``: report rows in the order a reviewer should see them.

    The order of value: the flagged images, then the kept ones something disputes, then the
    rest (:func:`queue_parts`); within each part, the most doubtful given label first
    (:func:`doubt`; ties: the network surer of its guess first, then report order). The
    kept, undisputed images of :data:`ON_DEMAND` (the confident clean ones, most of a
    dataset) come on demand, in the same order.
    """
    parts = queue_parts(frame) if parts is None else parts
    sure = frame["conf_pseudo"].to_numpy(np.float64)
    order = np.lexsort((np.arange(len(frame)), -sure, -doubt(frame), parts))
    later = (parts[order] == PARTS.index("rest")) & (
        frame["cluster"].astype(str).to_numpy()[order] == ON_DEMAND
    )
    return order[~later], order[later]


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


def parse_decisions(payload: Any, n_rows: int) -> list[tuple[int, str | None, str | None]]:
    """The changes of a bulk request (``{"decisions": [{id, decision, label}, ...]}``).

    A bad item is a DecisionError naming its place in the list: the whole bulk is refused.
    """
    items = payload.get("decisions") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise DecisionError('the request body must be {"decisions": [{"id": ..., ...}, ...]}')
    out = []
    for k, item in enumerate(items):
        try:
            out.append(parse_decision(item, n_rows))
        except DecisionError as err:
            raise DecisionError(f"decision {k + 1} of {len(items)}: {err}") from None
    return out
