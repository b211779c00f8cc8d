"""One self-contained HTML page per report: the paper's figures 1-3 for any dataset.

Everything is inlined -- figures drawn by matplotlib (Agg) as PNG data URIs, thumbnails as
data URIs, one small script for sorting, filtering, paging and the CSV export of the current
selection -- so the file opens offline and makes no network request. Large reports stay
light: the scatter is sampled, the grids and the sample table are capped, and the page says
what it left out. Every string that comes from the data (paths, class names, config) is
escaped: class names and paths are user data.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelclean._io import atomic_write_text, check_writable
from labelclean._progress import Progress
from labelclean._progress import report as report_progress
from labelclean.errors import ConfigError
from labelclean.report.parquet import Report
from labelclean.report.summary import (
    CLUSTER_MEANING,
    CLUSTER_ORDER,
    Summary,
    confusion,
    summarize,
)

logger = logging.getLogger(__name__)

COLORS = {"CS": "#2b8a3e", "CH": "#74b816", "NS": "#e8590c", "NHR": "#7048e8", "NHI": "#c92a2a"}
GIVEN_COLOR, PSEUDO_COLOR = "#1c7ed6", "#2f9e44"  # the paper's figure 1: blue given, green other
TABLE_COLUMNS = (
    "index",
    "path",
    "given_label",
    "clean_label",
    "pseudo_label",
    "cluster",
    "action",
    "conf_given",
    "conf_pseudo",
    "cluster_prob",
)
TABLE_THUMB = 40
UNLABEL_ORDER = ("NHR", "NHI", "NS", "CH", "CS")
UNLABEL_REASON = {
    "NHR": "noisy, hard, relevant label: too ambiguous to keep or fix",
    "NHI": "noisy, hard, irrelevant label: too ambiguous to keep or fix",
    "NS": "noisy, but the new label was not confident enough to use",
    "CH": "in a clean cluster, but the model's most frequent label disagrees (refinement)",
    "CS": "in a clean cluster, but the model's most frequent label disagrees (refinement)",
}
HEATMAP_MAX_CLASSES = 30
_STEPS = 7
_NUMERIC = ("index", "conf_given", "conf_pseudo", "cluster_prob")
_TEXT = ' class="text"'


def _e(value: Any) -> str:
    """HTML-escape any value (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def _mpl(value: Any) -> str:
    """A user string safe for matplotlib text: ``$`` would otherwise start mathtext."""
    return str(value).replace("$", r"\$")


def _color(cluster: str) -> str:
    return COLORS.get(cluster, "#868e96")


def _js(obj: Any) -> str:
    """JSON that cannot end or confuse the <script> element it sits in."""
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _png(fig: Any, *, tight: bool = True) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="png",
        dpi=100,
        bbox_inches="tight" if tight else None,  # tight draws twice; the traces lay out alone
        metadata={"Software": None},
    )
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _Thumbs:
    """Thumbnails read once from ``root / path``; unreadable paths are remembered, not raised.

    Images are only ever shrunk: a source smaller than the tile (digits, CIFAR) is embedded
    at its own size and the browser enlarges it crisply (``image-rendering: pixelated``),
    which keeps a 500-row table of CIFAR thumbnails under a megabyte. Few-colour images
    are stored as PNG (exact), photos as JPEG.
    """

    def __init__(self, root: Path, size: int, missing: dict[str, str]) -> None:
        self.root, self.size, self.missing = root, size, missing
        self._cache: dict[str, tuple[str, int, int] | None] = {}

    def image(self, rel: str) -> Any:
        """The image shrunk to fit ``size``, as RGB PIL image, or None (reason in ``missing``)."""
        from PIL import Image

        try:
            with Image.open(self.root / rel) as img:
                img.draft("RGB", (self.size, self.size))  # JPEG: decode at reduced size
                img = img.convert("RGB")
                img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
                return img
        except Exception as err:  # noqa: BLE001 - missing/broken images show a placeholder
            self.missing.setdefault(rel, f"{type(err).__name__}: {err}")
            return None

    def get(self, rel: str) -> tuple[str, int, int] | None:
        """``(data URI, display width, display height)`` fitting ``size``, or None."""
        if rel not in self._cache:
            img = self.image(rel)
            if img is None:
                self._cache[rel] = None
            else:
                buf = io.BytesIO()
                if img.getcolors(256) is not None:  # digits, icons: PNG is exact and tiny
                    img.save(buf, format="PNG", optimize=True)
                    kind = "png"
                else:
                    img.save(buf, format="JPEG", quality=85)
                    kind = "jpeg"
                uri = f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode()
                scale = self.size / max(img.size)
                w, h = round(img.width * scale), round(img.height * scale)
                self._cache[rel] = (uri, w, h)
        return self._cache[rel]

    def uri(self, rel: str) -> str | None:
        """A data URI of the thumbnail, or None when the image cannot be read."""
        got = self.get(rel)
        return got[0] if got else None


def _scatter(frame: pd.DataFrame, metadata: dict[str, Any], *, max_points: int) -> tuple[str, str]:
    """Figure 2: joint confidence coloured by cluster, GMM means (and 2-sigma ellipses)."""
    import matplotlib.pyplot as plt
    from matplotlib import patheffects
    from matplotlib.patches import Ellipse

    n = len(frame)
    sample = frame.sample(max_points, random_state=0) if n > max_points else frame
    fig, ax = plt.subplots(figsize=(7.2, 6.2))
    ax.plot([0, 1], [0, 1], color="#adb5bd", lw=0.8, ls=":", zorder=0)
    size = 14 if len(sample) <= 2000 else 4
    names = [c for c in CLUSTER_ORDER if c in set(frame["cluster"])]
    names += sorted(set(frame["cluster"]) - set(names))
    for c in names:
        part = sample[sample["cluster"] == c]
        k = int((frame["cluster"] == c).sum())
        ax.scatter(
            part["conf_given"],
            part["conf_pseudo"],
            s=size,
            alpha=0.55,
            c=_color(c),
            linewidths=0,
            label=f"{_mpl(c)}  {k} ({k / max(n, 1):.0%})",
        )
    gmm, components = metadata.get("gmm"), list(metadata.get("cluster_names") or [])
    means = np.asarray(gmm.get("means", []), dtype=float) if isinstance(gmm, dict) else None
    if means is not None and means.ndim == 2 and len(components) == len(means):
        covs = np.asarray(gmm.get("covariances", []), dtype=float)
        for k, name in enumerate(components):
            color = _color(name)
            if means.shape[1] == 2:
                a, m = means[k]
                if covs.shape == (len(means), 2, 2):
                    vals, vecs = np.linalg.eigh(covs[k])
                    angle = float(np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])))
                    w, h = 4 * np.sqrt(np.clip(vals[::-1], 0, None))  # 2 sigma each side
                    ax.add_patch(
                        Ellipse((a, m), w, h, angle=angle, fill=False, ec=color, lw=1.2, ls="--")
                    )
                ax.scatter([a], [m], marker="X", s=170, c=color, edgecolors="black", zorder=5)
                ax.annotate(
                    _mpl(name),
                    (a, m),
                    path_effects=[patheffects.withStroke(linewidth=3, foreground="white")],
                    xytext=(7, 7),
                    textcoords="offset points",
                    weight="bold",
                    color=color,
                    zorder=6,
                )
            elif means.shape[1] == 1:  # loss-only ablation: components split on a alone
                ax.axvline(means[k, 0], color=color, ls="--", lw=1.2)
    ax.set_xlabel("mean confidence of the given label  (a)")
    ax.set_ylabel("mean confidence of the max-repeating pseudo label  (m)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    legend = ax.legend(loc="lower right", fontsize=8, markerscale=2.5 if size < 10 else 1.2)
    for handle in legend.legend_handles:
        handle.set_alpha(1)
    ax.set_title("Joint confidence by cluster (X: mixture means, dashed: 2 sigma)", fontsize=10)
    note = f"{len(sample)} of {n} samples drawn at random" if len(sample) < n else ""
    return _png(fig), note


def _typical(part: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` samples nearest the cluster's median joint confidence: its typical members."""
    center = part[["conf_given", "conf_pseudo"]].median()
    dist = ((part[["conf_given", "conf_pseudo"]] - center) ** 2).sum(axis=1)
    order = np.lexsort((-part["cluster_prob"].to_numpy(), dist.to_numpy()))
    return part.iloc[order[:k]]


def _traces(frame: pd.DataFrame, thumbs: _Thumbs, *, per_cluster: int = 3) -> str:
    """Figure 1: per cluster, typical images and their confidence over epochs."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    present = [c for c in CLUSTER_ORDER if (frame["cluster"] == c).any()]
    present += sorted(set(frame["cluster"]) - set(present))
    picks = {c: _typical(frame[frame["cluster"] == c], per_cluster) for c in present}
    if not any(len(r) for p in picks.values() for r in p["trace_given"]):
        return ""
    rows = len(present)
    fig = plt.figure(figsize=(4.3 * per_cluster, 1.75 * rows + 0.5))
    grid = fig.add_gridspec(
        rows,
        2 * per_cluster,
        width_ratios=[1, 2.5] * per_cluster,
        wspace=0.3,
        hspace=0.75,
        top=1 - 0.55 / (1.75 * rows + 0.5),  # just below the legend
        left=0.045,
        right=0.99,
        bottom=0.55 / (1.75 * rows + 0.5),
    )
    for i, c in enumerate(present):
        for j in range(per_cluster):
            ax_img = fig.add_subplot(grid[i, 2 * j])
            ax_img.set_axis_off()
            if j == 0:
                ax_img.text(
                    -0.35,
                    0.5,
                    _mpl(c),
                    transform=ax_img.transAxes,
                    rotation=90,
                    va="center",
                    ha="center",
                    weight="bold",
                    fontsize=12,
                    color=_color(c),
                )
            if j >= len(picks[c]):
                continue
            row = picks[c].iloc[j]
            img = thumbs.image(str(row["path"]))
            if img is None:
                ax_img.text(0.5, 0.5, "missing\nimage", ha="center", va="center", fontsize=7)
            else:
                ax_img.imshow(np.asarray(img), interpolation="nearest")
            ax = fig.add_subplot(grid[i, 2 * j + 1])
            given, pseudo = np.asarray(row["trace_given"]), np.asarray(row["trace_pseudo"])
            # the given-label curve is drawn wider underneath: where my == ay both coincide
            ax.plot(np.arange(len(given)), given, color=GIVEN_COLOR, lw=2.6, alpha=0.85)
            ax.plot(np.arange(len(pseudo)), pseudo, color=PSEUDO_COLOR, lw=1.4, ls="--")
            ax.set_ylim(-0.03, 1.03)
            ax.set_yticks([0, 0.5, 1])
            ax.tick_params(labelsize=7)
            ax.set_title(
                f"given {_mpl(row['given_label'])} / pseudo {_mpl(row['pseudo_label'])}",
                fontsize=8,
            )
            if i == rows - 1:
                ax.set_xlabel("epoch", fontsize=8)
    handles = [
        Line2D([], [], color=GIVEN_COLOR, lw=2.6, label="confidence of the given label"),
        Line2D([], [], color=PSEUDO_COLOR, lw=1.4, ls="--", label="of the max-repeating label"),
    ]
    fig.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False
    )
    return _png(fig, tight=False)


def _heatmap(report: Report, summary: Summary) -> tuple[str, str]:
    """Given -> clean counts as a heatmap; many classes -> those with the most relabels."""
    import matplotlib.pyplot as plt

    names = report.class_names
    note = ""
    if len(names) > HEATMAP_MAX_CLASSES:
        pc = summary.per_class
        activity = (pc["relabeled_out"] + pc["relabeled_in"]).to_numpy()
        keep = np.sort(np.argsort(-activity, kind="stable")[:HEATMAP_MAX_CLASSES])
        names = [names[i] for i in keep if i < len(names)]
        note = f"the {len(names)} classes with the most relabels of {len(report.class_names)}"
    table = confusion(report, classes=names)
    k = len(table)
    side = min(2.0 + 0.42 * k, 13.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    counts = table.to_numpy()
    values = np.log1p(counts)
    im = ax.imshow(values, cmap="Blues", vmin=0)
    labels = [_mpl(c) for c in table.columns]
    ax.set_xticks(range(k), labels, rotation=90, fontsize=7 if k > 12 else 9)
    ax.set_yticks(range(k), [_mpl(c) for c in table.index], fontsize=7 if k > 12 else 9)
    ax.set_xlabel("clean label")
    ax.set_ylabel("given label")
    if k <= 20:
        top = values.max() if values.size else 0
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7 if k > 12 else 8,
                        color="white" if values[i, j] > top / 2 else "black",
                    )
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("log(1 + samples)")
    ax.set_title("given -> clean label, kept and relabeled samples", fontsize=10)
    return _png(fig), note


def _tile(row: pd.Series, thumbs: _Thumbs, top: str, bottom: str) -> str:
    got = thumbs.get(str(row["path"]))
    size = thumbs.size
    img = (
        f'<img src="{got[0]}" width="{got[1]}" height="{got[2]}" alt="{_e(row["path"])}">'
        if got
        else f'<div class="missing" style="width:{size}px;height:{size}px">missing image</div>'
    )
    return (
        f'<figure class="tile" title="{_e(row["path"])} (row {int(row["index"])}): given '
        f'{_e(row["given_label"])}, model {_e(row["pseudo_label"])}">'
        f'<div class="cap-top">{top}</div>{img}<figcaption>{bottom}</figcaption></figure>'
    )


def _grid(
    rows: pd.DataFrame, thumbs: _Thumbs, caption: Callable[[pd.Series], tuple[str, str]]
) -> str:
    tiles = [_tile(r, thumbs, *caption(r)) for _, r in rows.iterrows()]
    return '<div class="grid">' + "".join(tiles) + "</div>"


def _relabel_caption(r: pd.Series) -> tuple[str, str]:
    return (
        f'<span class="bad">{_e(r["given_label"])}</span>',
        f'<span class="good">{_e(r["clean_label"])}</span>'
        f'<span class="muted">{float(r["conf_pseudo"]):.2f} (was {float(r["conf_given"]):.2f})'
        "</span>",
    )


def _unlabel_caption(r: pd.Series) -> tuple[str, str]:
    return (
        f'<span class="bad">{_e(r["given_label"])}?</span>',
        f'<span class="muted">model: {_e(r["pseudo_label"])}</span>'
        f'<span class="muted">{float(r["conf_pseudo"]):.2f} (given {float(r["conf_given"]):.2f})'
        "</span>",
    )


def _capped(n_total: int, n_shown: int) -> str:
    return (
        f'<p class="note">Showing the first {n_shown} of {n_total}.</p>'
        if n_shown < n_total
        else ""
    )


def _suspicious(frame: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The ``limit`` most suspicious rows: flagged first, then model disagreement, then low a."""
    order = np.lexsort(
        (
            frame["conf_given"].to_numpy(),
            (frame["pseudo_label"] == frame["given_label"]).to_numpy(),
            (frame["action"] == "keep").to_numpy(),
        )
    )
    return frame.iloc[order[:limit]]


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    out = rows[list(TABLE_COLUMNS)].astype(object).where(rows[list(TABLE_COLUMNS)].notna(), None)
    out["index"] = rows["index"].astype(np.int64).tolist()
    for col in ("conf_given", "conf_pseudo", "cluster_prob"):
        values = rows[col].to_numpy(dtype=np.float64)
        out[col] = [round(float(v), 4) if np.isfinite(v) else None for v in values]
    return out.to_dict("records")


def _table_rows(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f'<td data-v="{v!r}">{"-" if not np.isfinite(v) else f"{v:.1%}"}</td>'
        return f'<td data-v="{_e(v)}">{_e(v)}</td>'

    return "".join(
        "<tr>"
        + "".join(
            f'<td class="text">{_e(r[c])}</td>' if c == "class" else cell(r[c]) for c in columns
        )
        + "</tr>"
        for r in records
    )


_SCRIPT = r"""
(function () {
  'use strict';
  const $ = id => document.getElementById(id);
  const cmp = (x, y) => (x === y ? 0 : x === null ? 1 : y === null ? -1 : x < y ? -1 : 1);
  // Static tables: click a header to sort by it (numbers by value, text by text).
  document.querySelectorAll('table.sortable').forEach(table => {
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach((th, i) => th.addEventListener('click', () => {
      const asc = th.dataset.dir !== 'asc';
      heads.forEach(h => delete h.dataset.dir);
      th.dataset.dir = asc ? 'asc' : 'desc';
      const key = row => { const c = row.cells[i]; const v = c.dataset.v ?? c.textContent;
        const x = Number(v); return v !== '' && !isNaN(x) ? x : v.toLowerCase(); };
      const body = table.tBodies[0];
      Array.from(body.rows).sort((a, b) => cmp(key(a), key(b)) * (asc ? 1 : -1))
        .forEach(r => body.appendChild(r));
    }));
  });
  // The sample table: filter, sort, page, export.
  const data = JSON.parse($('rows').textContent);
  const thumbs = JSON.parse($('thumbs').textContent);
  const cols = JSON.parse($('columns').textContent);
  const per = 50;
  let sortCol = null, asc = true, page = 0;
  function visible() {
    const text = $('f-text').value.toLowerCase(), cl = $('f-cluster').value;
    const ac = $('f-action').value, cls = $('f-class').value, by = $('f-conf').value;
    const lo = parseFloat($('f-min').value), hi = parseFloat($('f-max').value);
    const rows = data.filter(r => (!cl || r.cluster === cl) && (!ac || r.action === ac)
      && (!cls || r.given_label === cls || r.clean_label === cls || r.pseudo_label === cls)
      && (isNaN(lo) || r[by] >= lo) && (isNaN(hi) || r[by] <= hi)
      && (!text || r.path.toLowerCase().includes(text)));
    if (sortCol) rows.sort((a, b) => cmp(a[sortCol], b[sortCol]) * (asc ? 1 : -1));
    return rows;
  }
  function cell(v) {
    const td = document.createElement('td');
    td.textContent = v === null ? '' : typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : v;
    return td;
  }
  function draw() {
    const rows = visible(), body = $('tbody');
    const pages = Math.max(1, Math.ceil(rows.length / per));
    page = Math.min(page, pages - 1);
    body.replaceChildren();
    for (const r of rows.slice(page * per, (page + 1) * per)) {
      const tr = document.createElement('tr'), td = document.createElement('td');
      if (thumbs[r.path]) { const im = document.createElement('img'); im.src = thumbs[r.path]; td.appendChild(im); }
      else { td.textContent = '-'; td.title = 'image missing'; }
      tr.appendChild(td);
      for (const c of cols) {
        const d = cell(r[c]);
        if (typeof r[c] !== 'number') d.className = 'text';
        if (c === 'cluster') d.className += ' c-' + r[c];
        if (c === 'path') { d.className += ' path'; d.title = r[c]; }
        tr.appendChild(d);
      }
      body.appendChild(tr);
    }
    const first = rows.length ? page * per + 1 : 0, last = Math.min(rows.length, (page + 1) * per);
    $('count').textContent = `rows ${first}-${last} of ${rows.length} (page ${page + 1} of ${pages})`;
    $('count2').textContent = $('count').textContent;
    $('prev').disabled = $('prev2').disabled = page === 0;
    $('next').disabled = $('next2').disabled = page >= pages - 1;
    $('export').textContent = `Export ${rows.length} rows as CSV`;
    document.querySelectorAll('#samples th[data-col]').forEach(th => {
      th.dataset.dir = th.dataset.col === sortCol ? (asc ? 'asc' : 'desc') : ''; });
  }
  document.querySelectorAll('#samples th[data-col]').forEach(th => th.addEventListener('click', () => {
    const c = th.dataset.col; asc = sortCol === c ? !asc : true; sortCol = c; draw(); }));
  ['f-text', 'f-cluster', 'f-action', 'f-class', 'f-conf', 'f-min', 'f-max'].forEach(id =>
    $(id).addEventListener('input', () => { page = 0; draw(); }));
  ['prev', 'prev2'].forEach(id => $(id).addEventListener('click', () => { page -= 1; draw(); }));
  ['next', 'next2'].forEach(id => $(id).addEventListener('click', () => { page += 1; draw(); }));
  $('export').addEventListener('click', () => {
    const esc = v => { v = v === null || v === undefined ? '' : String(v);
      return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; };
    const head = cols.concat(['new_label']);
    const lines = [head.join(',')].concat(visible().map(r => head.map(c => esc(r[c])).join(',')));
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([lines.join('\n') + '\n'], {type: 'text/csv'}));
    a.download = 'labelclean-selection.csv';
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });
  draw();
})();
"""

_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1240px;color:#212529;padding:0 20px 40px;line-height:1.4}
header{padding:18px 0 6px}h1{margin:0 0 4px;font-size:26px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #dee2e6;padding:6px 0;z-index:2;font-size:14px}
nav a{margin-right:14px;color:#1864ab;text-decoration:none}nav a:hover{text-decoration:underline}
h2{border-bottom:1px solid #dee2e6;padding-bottom:4px;margin-top:34px;scroll-margin-top:40px}
h3{margin:18px 0 6px;font-size:16px}
.muted{color:#6c757d}.note{color:#6c757d;font-size:13px;margin:4px 0}
.warn{background:#fff4e6;border:1px solid #ffc078;border-radius:6px;padding:8px 12px;font-size:14px}
.sampled{background:#f1f3f5;border-radius:6px;padding:8px 12px;font-size:14px}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin:10px 0}
.card{border:1px solid #dee2e6;border-radius:8px;padding:8px 14px;min-width:104px}
.card b{display:block;font-size:22px}.card span{font-size:13px;color:#6c757d}
.row{display:flex;gap:36px;flex-wrap:wrap;align-items:flex-start}
table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #e9ecef;padding:3px 9px;text-align:right;white-space:nowrap}
td.text,th.text{text-align:left}
th{background:#f8f9fa;position:sticky;top:33px;font-weight:600}
table.sortable th,#samples th[data-col]{cursor:pointer;user-select:none}
th[data-dir=asc]::after{content:" \\25B2";font-size:10px}th[data-dir=desc]::after{content:" \\25BC";font-size:10px}
.scroll{max-height:460px;overflow:auto;border:1px solid #e9ecef}
.scroll th{top:0}
.chip{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.tile{margin:0;width:112px;text-align:center;font-size:12px;line-height:1.25}
.tile img,.tile .missing{display:block;margin:2px auto;border:1px solid #ced4da;image-rendering:pixelated}
.missing{background:repeating-linear-gradient(45deg,#f1f3f5,#f1f3f5 6px,#e9ecef 6px,#e9ecef 12px);color:#868e96;display:flex;align-items:center;justify-content:center;font-size:11px}
.bad{color:#c92a2a;font-weight:600}.good{color:#2b8a3e;font-weight:600}
.cap-top,figcaption span{display:block;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.filters{display:flex;gap:8px;flex-wrap:wrap;align-items:center;margin:10px 0;font-size:14px}
.filters input,.filters select,.filters button,.pager button{padding:3px 6px;font-size:14px}
#samples td img{display:block;width:40px;height:40px;object-fit:contain;image-rendering:pixelated}
#samples td.text,#samples th.text{text-align:left}#samples td.path{max-width:340px;overflow:hidden;text-overflow:ellipsis}
.pager{display:flex;gap:10px;align-items:center;margin:6px 0}
img.fig{max-width:100%;height:auto}
.heat{flex:1 1 440px;min-width:440px;max-width:720px}
.guide{max-width:400px;font-size:14px}.guide ul{padding-left:18px}.guide li{margin:6px 0}
pre{background:#f8f9fa;padding:10px;font-size:12px;overflow:auto;max-height:320px}
"""


def write_html_report(
    report: Report,
    path: str | Path,
    *,
    overwrite: bool = False,
    max_scatter: int = 20_000,
    max_grid: int = 60,
    table_rows: int = 500,
    thumb_size: int = 64,
    progress: Progress | None = None,
) -> Path:
    """Write the report as one self-contained HTML page (atomically).

    Args:
        report: A report read by :func:`~labelclean.report.parquet.read_report`.
        path: Where to write the page.
        overwrite: Replace an existing file; otherwise an existing ``path`` is an error.
        max_scatter: Points drawn in the joint-confidence scatter (a random sample above).
        max_grid: Images per grid (relabeled; each unlabeled cluster).
        table_rows: Rows of the sample table (the most suspicious ones); paged in the page.
        thumb_size: Thumbnail side in pixels in the grids.
        progress: Optional ``progress(task, done, total)`` callback.

    Returns:
        ``path``.

    Example:
        >>> write_html_report(read_report("report.parquet"), "report.html")  # doctest: +SKIP
    """
    for flag, value in (
        ("--max-scatter", max_scatter),
        ("--max-grid", max_grid),
        ("--table-rows", table_rows),
        ("--thumb-size", thumb_size),
    ):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    path = check_writable(path, overwrite=overwrite, flag="--html")
    import matplotlib

    matplotlib.use("Agg")
    frame, md = report.frame, report.metadata
    root = report.image_root
    missing: dict[str, str] = {}
    thumbs = _Thumbs(root, thumb_size, missing)
    small_thumbs = _Thumbs(root, TABLE_THUMB, missing)
    summary = summarize(report)
    report_progress(progress, "html report", 1, _STEPS)

    scatter, scatter_note = _scatter(frame, md, max_points=max_scatter)
    report_progress(progress, "html report", 2, _STEPS)
    traces = _traces(frame, _Thumbs(root, 96, missing)) if len(frame) else ""
    report_progress(progress, "html report", 3, _STEPS)

    relabeled = frame[frame["action"] == "relabel"].sort_values(
        "conf_pseudo", ascending=False, kind="stable"
    )
    grid_relabel = (
        _grid(relabeled.head(max_grid), thumbs, _relabel_caption)
        + _capped(len(relabeled), min(max_grid, len(relabeled)))
        if len(relabeled)
        else '<p class="note">No sample was relabeled.</p>'
    )
    unlabeled = frame[frame["action"] == "unlabel"]
    unlabel_parts = []
    groups = [c for c in UNLABEL_ORDER if (unlabeled["cluster"] == c).any()]
    groups += sorted(set(unlabeled["cluster"]) - set(groups))
    for c in groups:
        part = unlabeled[unlabeled["cluster"] == c].sort_values("conf_given", kind="stable")
        unlabel_parts.append(
            f'<h3><span class="chip" style="background:{_color(c)}"></span>{_e(c)}: '
            f"{len(part)} unlabeled <span class='muted'>({_e(UNLABEL_REASON.get(c, ''))})"
            "</span></h3>"
            + _grid(part.head(max_grid), thumbs, _unlabel_caption)
            + _capped(len(part), min(max_grid, len(part)))
        )
    grid_unlabel = "".join(unlabel_parts) or '<p class="note">No sample was unlabeled.</p>'
    report_progress(progress, "html report", 4, _STEPS)

    heat, heat_note = _heatmap(report, summary)
    report_progress(progress, "html report", 5, _STEPS)

    suspicious = _suspicious(frame, table_rows)
    records = _records(suspicious)
    table_thumbs = {p: u for p in dict.fromkeys(suspicious["path"]) if (u := small_thumbs.uri(p))}
    report_progress(progress, "html report", 6, _STEPS)

    sampled = []
    if scatter_note:
        sampled.append(f"scatter: {scatter_note}")
    if len(relabeled) > max_grid:
        sampled.append(f"relabeled grid: first {max_grid} of {len(relabeled)}")
    for c in groups:
        k = int((unlabeled["cluster"] == c).sum())
        if k > max_grid:
            sampled.append(f"unlabeled {c} grid: first {max_grid} of {k}")
    if len(frame) > table_rows:
        sampled.append(f"table: the {table_rows} most suspicious of {len(frame)} samples")
    if heat_note:
        sampled.append(f"heatmap: {heat_note}")
    sampled_html = (
        '<p class="sampled"><b>Sampled to keep this page light:</b> '
        + _e("; ".join(sampled))
        + ".</p>"
        if sampled
        else ""
    )
    missing_html = ""
    if missing:
        first, why = next(iter(missing.items()))
        missing_html = (
            f'<p class="warn"><b>{len(missing)} image(s) could not be read</b> from '
            f"{_e(root)} and show as grey tiles; the first: {_e(first)} ({_e(why)}). Check "
            "that the images are still where the audit found them.</p>"
        )

    n = max(summary.n, 1)
    cards = "".join(
        f'<div class="card"><span>{_e(k)}</span><b>{_e(v)}</b></div>'
        for k, v in [
            ("samples", summary.n),
            ("classes", summary.n_classes),
            ("estimated noise", f"{summary.estimated_noise:.1%}"),
        ]
        + [(a, f"{k} ({k / n:.0%})") for a, k in summary.actions.items()]
    )
    cluster_rows = "".join(
        f'<tr><td class="text"><span class="chip" style="background:{_color(c)}"></span>{_e(c)}'
        f'</td><td>{k}</td><td>{k / n:.1%}</td><td class="text">'
        f"{_e(CLUSTER_MEANING.get(c, ''))}</td></tr>"
        for c, k in summary.clusters.items()
    )
    flips = (
        "".join(
            f'<tr><td class="text bad">{_e(r["given"])}</td><td class="text good">'
            f"{_e(r['clean'])}</td><td>{int(r['count'])}</td></tr>"
            for r in summary.top_flips.to_dict("records")
        )
        or '<tr><td class="text" colspan="3">none</td></tr>'
    )
    most = (
        "".join(
            f'<tr><td class="text">{_e(r["class"])}</td><td>{int(r["relabeled_out"])}</td>'
            f"<td>{int(r['relabeled_in'])}</td><td>{int(r['size'])}</td></tr>"
            for r in summary.most_relabeled.head(5).to_dict("records")
        )
        or '<tr><td class="text" colspan="4">none</td></tr>'
    )
    per_class_cols = ["class", "size", "flagged", "noise_estimate"]
    per_class_cols += ["relabeled_out", "relabeled_in", "unlabeled"]
    per_class = _table_rows(summary.per_class.to_dict("records"), per_class_cols)
    cluster_options = "".join(
        f'<option value="{_e(c)}">{_e(c)}</option>' for c in summary.clusters if summary.clusters[c]
    )
    class_options = "".join(f'<option value="{_e(c)}">{_e(c)}</option>' for c in report.class_names)
    run_facts = ", ".join(
        f"{k} {_e(md[k])}"
        for k in ("model", "epochs", "mode", "device", "seed")
        if md.get(k) is not None
    )
    wall = md.get("wall_time_s")
    if isinstance(wall, int | float):
        run_facts += f", {wall:.0f} s"
    config = _e(json.dumps(md.get("config", {}), indent=1, sort_keys=True, default=str))
    guide = "".join(
        f'<li><span class="chip" style="background:{_color(c)}"></span><b>{c}</b> {text}</li>'
        for c, text in (
            ("CS", "top right: the model agrees with the label from early on; kept."),
            ("CH", "lower on the diagonal: agrees, but learnt it late; kept."),
            ("NS", "top left: the model is sure of another label; relabeled to it."),
            ("NHR", "unsure of any label, the given one plausible; unlabeled."),
            ("NHI", "unsure, the given label unlikely; unlabeled."),
        )
    )
    table_head = "".join(
        f'<th data-col="{c}"{"" if c in _NUMERIC else _TEXT}>{c.replace("_", " ")}</th>'
        for c in TABLE_COLUMNS
    )
    cluster_css = "".join(f"td.c-{c}{{color:{v};font-weight:600}}" for c, v in COLORS.items())
    title = _e(report.path.name if report.path else "report")
    traces_html = (
        f'<img class="fig" src="{traces}" alt="confidence over epochs of typical samples">'
        if traces
        else '<p class="note">This report has no per-epoch traces.</p>'
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>labelclean report: {title}</title>
<style>{_STYLE}{cluster_css}</style></head><body>
<header><h1>labelclean report</h1>
<div class="muted">{_e(report.path or "")} &middot; images in {_e(root)} &middot; {run_facts} &middot; labelclean {_e(md.get("tool_version", "?"))}</div>
</header>
<nav><a href="#summary">Summary</a><a href="#scatter">Joint confidence</a><a href="#traces">Traces</a><a href="#relabeled">Relabeled</a><a href="#unlabeled">Unlabeled</a><a href="#classes">Classes</a><a href="#samples">Samples</a></nav>
{sampled_html}{missing_html}
<section id="summary"><h2>Summary</h2>
<div class="cards">{cards}</div>
<p class="note">Estimated noise = samples the audit relabeled or unlabeled, over all samples.</p>
<div class="row">
<div><h3>Clusters</h3><table><thead><tr><th class="text">cluster</th><th>samples</th><th>share</th><th class="text">meaning</th></tr></thead><tbody>{cluster_rows}</tbody></table></div>
<div><h3>Top given &rarr; clean flips</h3><table><thead><tr><th class="text">given</th><th class="text">clean</th><th>count</th></tr></thead><tbody>{flips}</tbody></table></div>
<div><h3>Classes with the most relabels</h3><table><thead><tr><th class="text">class</th><th>out</th><th>in</th><th>size</th></tr></thead><tbody>{most}</tbody></table></div>
</div>
<details><summary class="note">Audit settings</summary><pre>{config}</pre></details>
</section>
<section id="scatter"><h2>Joint confidence (the paper's figure 2)</h2>
<p class="note">Each point is a sample: x the mean confidence of its given label over the epochs, y that of its most frequent prediction. On the dotted diagonal the model agrees with the given label.{(" " + _e(scatter_note.capitalize()) + ".") if scatter_note else ""}</p>
<div class="row"><img class="fig" src="{scatter}" alt="joint confidence scatter coloured by cluster" style="max-width:720px">
<div class="guide"><h3>Reading it</h3><ul>{guide}</ul>
<p class="note">X marks the means of the mixture fitted at the last clustering, and the dashed ellipses its spread; a point's colour is the cluster the audit finally put it in.</p></div></div></section>
<section id="traces"><h2>Confidence over epochs, typical samples (figure 1)</h2>
<p class="note">Per cluster, the samples nearest its median joint confidence. Solid blue: confidence of the given label; dashed green: of the max-repeating pseudo label.</p>
{traces_html}</section>
<section id="relabeled"><h2>Relabeled samples (figure 3): given &rarr; clean</h2>
<p class="note">Red above: the given label; green below: the label the audit uses instead, with its mean confidence vs that of the given label. Most confident first. {len(relabeled)} relabeled in all.</p>
{grid_relabel}</section>
<section id="unlabeled"><h2>Unlabeled samples</h2>
<p class="note">The audit dropped these labels as too ambiguous to keep or fix (mostly NHR and NHI); lowest given-label confidence first. {len(unlabeled)} unlabeled in all.</p>
{grid_unlabel}</section>
<section id="classes"><h2>Per class</h2>
<p class="note">Click a header to sort. Noise estimate = flagged / size, by given label. Relabeled in = samples relabeled to this class.</p>
<div class="row"><div class="scroll"><table class="sortable"><thead><tr><th class="text">class</th><th>size</th><th>flagged</th><th>noise estimate</th><th>relabeled out</th><th>relabeled in</th><th>unlabeled</th></tr></thead><tbody>{per_class}</tbody></table></div>
<div class="heat"><img class="fig" src="{heat}" alt="given to clean label heatmap">{f'<p class="note">Heatmap: {_e(heat_note)}.</p>' if heat_note else ""}</div></div>
</section>
<section id="samples"><h2>Most suspicious samples</h2>
<p class="note">{len(records)} of {summary.n} samples: relabeled and unlabeled first, then those the model disagrees with, then the lowest given-label confidence. Filter, click a header to sort, and export the selection (all pages) as CSV for re-annotation; the CSV has an empty <code>new_label</code> column to fill in.</p>
<div class="filters">
<input id="f-text" placeholder="path contains" size="16">
<select id="f-cluster"><option value="">any cluster</option>{cluster_options}</select>
<select id="f-action"><option value="">any action</option><option value="keep">keep</option><option value="relabel">relabel</option><option value="unlabel">unlabel</option></select>
<select id="f-class"><option value="">any class</option>{class_options}</select>
<select id="f-conf"><option value="conf_given">conf. of given label</option><option value="conf_pseudo">conf. of pseudo label</option></select>
from <input id="f-min" type="number" step="0.05" min="0" max="1" value="0" style="width:64px">
to <input id="f-max" type="number" step="0.05" min="0" max="1" value="1" style="width:64px">
<button id="export" type="button">Export as CSV</button></div>
<div class="pager"><button id="prev" type="button">&larr; prev</button><span id="count" class="muted"></span><button id="next" type="button">next &rarr;</button></div>
<table><thead><tr><th></th>{table_head}</tr></thead><tbody id="tbody"></tbody></table>
<div class="pager"><button id="prev2" type="button">&larr; prev</button><span id="count2" class="muted"></span><button id="next2" type="button">next &rarr;</button></div>
</section>
<script type="application/json" id="rows">{_js(records)}</script>
<script type="application/json" id="thumbs">{_js(table_thumbs)}</script>
<script type="application/json" id="columns">{_js(list(TABLE_COLUMNS))}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
    out = atomic_write_text(path, page, overwrite=overwrite, flag="--html")
    if missing:
        logger.warning("%d image(s) under %s could not be read for the page", len(missing), root)
    report_progress(progress, "html report", _STEPS, _STEPS)
    return out
