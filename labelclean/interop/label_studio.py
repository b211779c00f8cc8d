"""Label Studio round trip: import tasks with the audit's suggestion, decisions from its export.

Tasks follow Label Studio's JSON import format: one object per image with a ``data`` object
(the fields the labeling config refers to as ``$name``) and a ``predictions`` list whose
``result`` holds one ``choices`` region, ``{"from_name": "label", "to_name": "image",
"type": "choices", "value": {"choices": [<suggested class>]}}`` with the model's confidence as
``score``; Label Studio shows it as a pre-annotation. The suggestion is the audit's decision
(:func:`labelclean.report.schema.suggested_label`: the clean label, or the audit's guess for
an unlabeled image), so an annotator who submits the pre-annotation agrees with the audit;
the network's own guess is a data field, ``network_guess``, shown as evidence. A crowd
report's tasks carry the votes (``votes``, ``tally``, ``agreement``). Images are referenced
the way its local storage serves files, ``/data/local-files/?d=<path relative to
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT>``. The labeling config written beside the tasks has
an ``Image`` no taller than :data:`IMAGE_MAX_HEIGHT` of the window (so the choices below it
stay on screen), a single-choice ``Choices`` named ``label`` (the classes) and a ``Choices``
named ``review`` with the one value ``drop``.

An export (Label Studio's JSON, JSON-MIN where the data fields and the choices are flat keys,
or CSV, one row per task with the same flat columns) becomes decisions: the class chosen in a
task's last non-cancelled annotation is ``accept`` when it is the suggestion, ``keep`` when it
is the given label, ``relabel`` otherwise; ``drop`` chosen under ``review`` is ``drop``. Tasks
nobody annotated decide nothing; a task of any other shape is refused naming the file and the
task. Every task carries the report's fingerprint in ``data.labelclean_report``, so an export
of tasks made for another report is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse
from xml.sax.saxutils import quoteattr

import numpy as np

from labelclean._io import read_json
from labelclean._version import __version__
from labelclean.data.manifest import class_finder
from labelclean.report.parquet import Report
from labelclean.review.decisions import Decision, DecisionError, suggested_labels

LOCAL_FILES = "/data/local-files/?d="
LABEL, IMAGE, REVIEW = "label", "image", "review"
_QUEUE = ("NS", "NHR", "NHI", "CH", "CS")
#: The image's largest share of the window's height: the class choices below it stay on
#: screen however tall the image (Label Studio's default fits only its width, 750 px).
IMAGE_MAX_HEIGHT = "60vh"
#: The actions of the images ``--only-flagged`` exports: those the audit changed.
FLAGGED = ("relabel", "unlabel")


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
        f'  <Image name="{IMAGE}" value="$image" maxWidth="100%" '
        f'maxHeight="{IMAGE_MAX_HEIGHT}"/>\n'
        '  <Text name="info" value="$info"/>\n'
        f'  <Choices name="{LABEL}" toName="{IMAGE}" choice="single" showInLine="true">\n'
        f"{choices}\n  </Choices>\n"
        f'  <Choices name="{REVIEW}" toName="{IMAGE}" choice="single">\n'
        '    <Choice value="drop"/>\n  </Choices>\n'
        "</View>\n"
    )


def export_tasks(
    report: Report, *, document_root: Path, fingerprint: str, only_flagged: bool = False
) -> list[dict[str, Any]]:
    """One import task per image, flagged clusters first, the audit's suggestion pre-annotated.

    ``only_flagged``: only the images the audit relabeled or unlabeled (:data:`FLAGGED`),
    the ones a person is needed for.
    """
    f = report.frame
    root, doc = report.image_root, document_root.resolve()
    rank = {c: i for i, c in enumerate(_QUEUE)}
    cols = {
        c: f[c].astype(str).tolist()
        for c in ("path", "given_label", "pseudo_label", "cluster", "action")
    }
    suggestion = report.suggested_labels.astype(str).tolist()
    conf_given = f["conf_given"].to_numpy(np.float64).round(4).tolist()
    conf_pseudo = f["conf_pseudo"].to_numpy(np.float64).round(4).tolist()
    index = f["index"].to_numpy(np.int64).tolist()
    crowd = "votes" in f.columns
    if crowd:
        from labelclean.report.crowd import vote_tally, vote_text

        votes = [vote_text(v) for v in f["votes"]]
        tally = [vote_tally(v) for v in f["votes"]]
        agreement = f["agreement"].to_numpy(np.float64).round(4).tolist()
    rows = [i for i in range(len(f)) if not only_flagged or cols["action"][i] in FLAGGED]
    order = sorted(rows, key=lambda i: (rank.get(cols["cluster"][i], len(rank)), i))
    tasks = []
    for i in order:
        path, given, suggested = cols["path"][i], cols["given_label"][i], suggestion[i]
        cluster, action, guess = cols["cluster"][i], cols["action"][i], cols["pseudo_label"][i]
        info = f"given {given}, suggested {suggested} (audit: {action}; {cluster})"
        info += f"; network's guess {guess}"
        data: dict[str, Any] = {
            IMAGE: image_url((root / path).resolve(), doc),
            "path": path,
            "given_label": given,
            "suggested_label": suggested,
            "network_guess": guess,
            "cluster": cluster,
            "action": action,
            "conf_given": conf_given[i],
            "conf_pseudo": conf_pseudo[i],
            "labelclean_report": fingerprint,
        }
        if crowd:
            data.update(votes=votes[i], tally=tally[i], agreement=agreement[i])
            info += f"; crowd: {tally[i]}"
        data["info"] = info
        result = {
            "id": f"s{index[i]}",
            "from_name": LABEL,
            "to_name": IMAGE,
            "type": "choices",
            "value": {"choices": [suggested]},
        }
        prediction: dict[str, Any] = {"model_version": f"labelclean {__version__}"}
        # how sure the audit's network is of the suggested label, where it has that figure
        if suggested == given or suggested == guess:
            prediction["score"] = conf_given[i] if suggested == given else conf_pseudo[i]
        prediction["result"] = [result]
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


def _choices(value: Any, where: str, name: str) -> list[str]:
    """The chosen values of one ``choices`` value (a list of strings), or a DecisionError."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DecisionError(
            f"{where}: the choices of {name!r} must be a list of class names, "
            f"found {json.dumps(value)[:80]}"
        )
    return value


def _choice(results: Any, where: str) -> tuple[str | None, bool]:
    """``(chosen class, dropped)`` from an annotation's result regions."""
    if not isinstance(results, list):
        raise DecisionError(
            f"{where}: an annotation's result must be a list of regions, "
            f"found {json.dumps(results)[:80]}"
        )
    label, dropped = None, False
    for r in results:
        if not isinstance(r, dict) or r.get("type", "choices") != "choices":
            continue
        value = r.get("value")
        if value is not None and not isinstance(value, dict):
            raise DecisionError(
                f"{where}: a result's value must be an object with its choices, "
                f"found {json.dumps(value)[:80]}"
            )
        name = str(r.get("from_name"))
        values = _choices((value or {}).get("choices"), where, name)
        if r.get("from_name") == REVIEW:
            dropped = dropped or "drop" in values
        elif values:
            label = values[0]
    return label, dropped


def _flat(raw: Any, where: str, name: str) -> list[str]:
    """JSON-MIN / CSV: one choice is a string, several ``{"choices": [...]}``."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str) and raw.startswith("{"):  # CSV: the JSON of several choices
        try:
            raw = json.loads(raw)
        except ValueError:
            pass
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, dict):
        return _choices(raw.get("choices"), where, name)
    raise DecisionError(
        f'{where}: {name!r} must be a class name or {{"choices": [...]}}, '
        f"found {json.dumps(raw)[:80]}"
    )


def _annotation(task: dict[str, Any], where: str) -> tuple[str | None, bool, str] | None:
    """The last non-cancelled annotation of a task as ``(label, dropped, time)``, or None."""
    if "annotations" in task:
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise DecisionError(
                f"{where}: annotations must be a list, found {json.dumps(annotations)[:80]}"
            )
        odd = [k for k, a in enumerate(annotations, start=1) if not isinstance(a, dict)]
        if odd:
            raise DecisionError(f"{where}: annotation {odd[0]} is not a JSON object")
        done = [a for a in annotations if not a.get("was_cancelled")]
        if not done:
            return None
        last = max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
        label, dropped = _choice(last.get("result") or [], where)
        return label, dropped, str(last.get("updated_at") or last.get("created_at") or "")
    chosen = _flat(task.get(LABEL), where, LABEL)
    dropped = "drop" in _flat(task.get(REVIEW), where, REVIEW)
    if not chosen and not dropped:
        return None
    return (chosen[0] if chosen else None), dropped, str(task.get("updated_at") or "")


def read_label_studio_export(
    path: str | os.PathLike[str], report: Report
) -> tuple[list[Decision], str | None]:
    """Decisions (``line`` = task number, from 1) and the fingerprint the tasks carried."""
    path = Path(path)
    tasks = read_json(path, DecisionError, expected="a Label Studio JSON export")
    if not isinstance(tasks, list):
        raise DecisionError(f"{path}: a Label Studio export is a JSON list of tasks")
    return _decisions(path, list(enumerate(tasks, start=1)), report, unit="task")


def read_label_studio_csv(
    path: Path, rows: list[tuple[int, dict[str, str]]], report: Report
) -> tuple[list[Decision], str | None]:
    """Label Studio's CSV export (``rows``: each line number and its cells by column name)."""
    return _decisions(path, [(line, dict(row)) for line, row in rows], report, unit="line")


def _decisions(
    path: Path, tasks: list[tuple[int, Any]], report: Report, *, unit: str
) -> tuple[list[Decision], str | None]:
    """Decisions from numbered tasks (JSON, JSON-MIN, CSV rows) and the carried fingerprint."""
    paths = set(report.frame["path"].astype(str))
    labels = suggested_labels(report)
    find = class_finder(report.class_names)
    out, fingerprints = [], set()
    for k, task in tasks:
        where = f"{path} {unit} {k}"
        if not isinstance(task, dict):
            raise DecisionError(f"{where}: not a JSON object")
        data = task.get("data") if isinstance(task.get("data"), dict) else task
        if isinstance(data.get("labelclean_report"), str) and data["labelclean_report"]:
            fingerprints.add(data["labelclean_report"])
        got = _annotation(task, where)
        if got is None:
            continue
        image = _path_of(task, paths)
        if image is None:
            raise DecisionError(f"{where}: its image is not an image of the report")
        label, dropped, time = got
        if dropped:
            out.append(Decision(image, "drop", None, time, k))
        elif label is not None:
            label = find(label) or label  # the class it names, as the report spells it
            given, suggested = labels.get(image, (None, None))
            kind = "accept" if label == suggested else "keep" if label == given else "relabel"
            out.append(Decision(image, kind, label, time, k))
    if len(fingerprints) > 1:
        raise DecisionError(
            f"{path}: its tasks were made for {len(fingerprints)} different reports"
        )
    return out, next(iter(fingerprints), None)
