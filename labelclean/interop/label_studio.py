"""Label Studio round trip: import tasks with the audit's suggestion, decisions from its export.

Tasks follow Label Studio's JSON import format: one object per image with a ``data`` object
(the fields the labeling config refers to as ``$name``) and a ``predictions`` list whose
``result`` holds one ``choices`` region, ``{"from_name": "label", "to_name": "image",
"type": "choices", "value": {"choices": [<suggested class>]}}`` with the model's confidence as
``score``; Label Studio shows it as a pre-annotation. Images are referenced the way its local
storage serves files, ``/data/local-files/?d=<path relative to
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT>``. The labeling config written beside the tasks has
an ``Image``, a single-choice ``Choices`` named ``label`` (the classes) and a ``Choices``
named ``review`` with the one value ``drop``.

An export (Label Studio's JSON, or JSON-MIN where the data fields and the choices are flat
keys) becomes decisions: the class chosen in a task's last non-cancelled annotation is
``accept`` when it is the suggestion, ``keep`` when it is the given label, ``relabel``
otherwise; ``drop`` chosen under ``review`` is ``drop``. Tasks nobody annotated decide
nothing. Every task carries the report's fingerprint in ``data.labelclean_report``, so an
export of tasks made for another report is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse
from xml.sax.saxutils import quoteattr

import numpy as np

from labelclean._io import read_json
from labelclean._version import __version__
from labelclean.report.parquet import Report
from labelclean.review.decisions import Decision, DecisionError

LOCAL_FILES = "/data/local-files/?d="
LABEL, IMAGE, REVIEW = "label", "image", "review"
_QUEUE = ("NS", "NHR", "NHI", "CH", "CS")


def image_url(path: Path, document_root: Path) -> str:
    """The local-storage URL of ``path``, relative to Label Studio's document root."""
    try:
        rel = path.relative_to(document_root)
    except ValueError:
        raise DecisionError(
            f"--document-root {document_root}: the image {path} is not inside it; pick the "
            "folder you give Label Studio as LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
        ) from None
    return LOCAL_FILES + quote(rel.as_posix(), safe="/")


def label_config(class_names: list[str]) -> str:
    """A labeling config for the tasks: the image, one class to choose, and a drop choice."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in class_names)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE}" value="$image"/>\n'
        '  <Text name="info" value="$info"/>\n'
        f'  <Choices name="{LABEL}" toName="{IMAGE}" choice="single" showInLine="true">\n'
        f"{choices}\n  </Choices>\n"
        f'  <Choices name="{REVIEW}" toName="{IMAGE}" choice="single">\n'
        '    <Choice value="drop"/>\n  </Choices>\n'
        "</View>\n"
    )


def export_tasks(report: Report, *, document_root: Path, fingerprint: str) -> list[dict[str, Any]]:
    """One import task per image, flagged clusters first, the suggestion pre-annotated."""
    f = report.frame
    root, doc = report.image_root, document_root.resolve()
    rank = {c: i for i, c in enumerate(_QUEUE)}
    cols = {
        c: f[c].astype(str).tolist()
        for c in ("path", "given_label", "pseudo_label", "cluster", "action")
    }
    conf_given = f["conf_given"].to_numpy(np.float64).round(4).tolist()
    conf_pseudo = f["conf_pseudo"].to_numpy(np.float64).round(4).tolist()
    index = f["index"].to_numpy(np.int64).tolist()
    order = sorted(range(len(f)), key=lambda i: (rank.get(cols["cluster"][i], len(rank)), i))
    tasks = []
    for i in order:
        path, given, suggested = cols["path"][i], cols["given_label"][i], cols["pseudo_label"][i]
        cluster, action = cols["cluster"][i], cols["action"][i]
        data = {
            IMAGE: image_url((root / path).resolve(), doc),
            "path": path,
            "given_label": given,
            "suggested_label": suggested,
            "cluster": cluster,
            "action": action,
            "conf_given": conf_given[i],
            "conf_pseudo": conf_pseudo[i],
            "info": f"given {given}, suggested {suggested} ({cluster}, audit: {action})",
            "labelclean_report": fingerprint,
        }
        result = {
            "id": f"s{index[i]}",
            "from_name": LABEL,
            "to_name": IMAGE,
            "type": "choices",
            "value": {"choices": [suggested]},
        }
        prediction = {
            "model_version": f"labelclean {__version__}",
            "score": conf_pseudo[i],
            "result": [result],
        }
        tasks.append({"data": data, "predictions": [prediction]})
    return tasks


def _path_of(task: dict[str, Any], paths: set[str]) -> str | None:
    """The report path a task is about: ``data.path``, else matched from the image URL."""
    data = task.get("data") if isinstance(task.get("data"), dict) else task
    if isinstance(data.get("path"), str):
        return data["path"]
    url = data.get(IMAGE)
    if not isinstance(url, str):
        return None
    parsed = urlparse(url)
    target = parse_qs(parsed.query).get("d", [unquote(parsed.path)])[0]
    parts = target.split("/")
    for k in range(len(parts)):  # the longest suffix of the URL's path that the report names
        candidate = "/".join(parts[k:])
        if candidate in paths:
            return candidate
    return None


def _choice(results: list[Any]) -> tuple[str | None, bool]:
    """``(chosen class, dropped)`` from an annotation's result regions."""
    label, dropped = None, False
    for r in results:
        if not isinstance(r, dict) or r.get("type", "choices") != "choices":
            continue
        values = (r.get("value") or {}).get("choices") or []
        if r.get("from_name") == REVIEW:
            dropped = dropped or "drop" in values
        elif values:
            label = str(values[0])
    return label, dropped


def _annotation(task: dict[str, Any]) -> tuple[str | None, bool, str] | None:
    """The last non-cancelled annotation of a task as ``(label, dropped, time)``, or None."""
    if "annotations" in task:
        done = [
            a
            for a in task.get("annotations") or []
            if isinstance(a, dict) and not a.get("was_cancelled")
        ]
        if not done:
            return None
        last = max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
        label, dropped = _choice(last.get("result") or [])
        return label, dropped, str(last.get("updated_at") or last.get("created_at") or "")
    raw = task.get(LABEL)  # JSON-MIN: a single choice is a string, several {"choices": [...]}
    if isinstance(raw, dict):
        raw = (raw.get("choices") or [None])[0]
    review = task.get(REVIEW)
    dropped = review == "drop" or (
        isinstance(review, dict) and "drop" in (review.get("choices") or [])
    )
    if raw is None and not dropped:
        return None
    return (str(raw) if raw is not None else None), dropped, str(task.get("updated_at") or "")


def read_label_studio_export(
    path: str | os.PathLike[str], report: Report
) -> tuple[list[Decision], str | None]:
    """Decisions (``line`` = task number, from 1) and the fingerprint the tasks carried."""
    path = Path(path)
    tasks = read_json(path, DecisionError, expected="a Label Studio JSON export")
    if not isinstance(tasks, list):
        raise DecisionError(f"{path}: a Label Studio export is a JSON list of tasks")
    frame = report.frame
    paths = set(frame["path"].astype(str))
    given = dict(zip(frame["path"].astype(str), frame["given_label"].astype(str)))
    suggested = dict(zip(frame["path"].astype(str), frame["pseudo_label"].astype(str)))
    out, fingerprints = [], set()
    for k, task in enumerate(tasks, start=1):
        if not isinstance(task, dict):
            raise DecisionError(f"{path} task {k}: not a JSON object")
        data = task.get("data") if isinstance(task.get("data"), dict) else task
        if isinstance(data.get("labelclean_report"), str):
            fingerprints.add(data["labelclean_report"])
        got = _annotation(task)
        if got is None:
            continue
        where = _path_of(task, paths)
        if where is None:
            raise DecisionError(f"{path} task {k}: its image is not an image of the report")
        label, dropped, time = got
        if dropped:
            out.append(Decision(where, "drop", None, time, k))
        elif label is not None:
            kind = (
                "accept"
                if label == suggested.get(where)
                else "keep"
                if label == given.get(where)
                else "relabel"
            )
            out.append(Decision(where, kind, label, time, k))
    if len(fingerprints) > 1:
        raise DecisionError(
            f"{path}: its tasks were made for {len(fingerprints)} different reports"
        )
    return out, next(iter(fingerprints), None)
