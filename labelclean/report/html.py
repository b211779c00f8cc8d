"""One self-contained HTML page per report: the paper's figures 1-3 for any dataset.

Everything is inlined (figures as PNG data URIs drawn by matplotlib, thumbnails as data
URIs, a small script for sorting, filtering, paging and CSV export), so the file opens
offline and makes no network request. Large reports stay light: the scatter is sampled,
grids and the table are capped, and the page says what it sampled.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelclean._io import atomic_write_text
from labelclean._progress import Progress
from labelclean._progress import report as report_progress
from labelclean.report.parquet import Report
from labelclean.report.summary import CLUSTER_MEANING, CLUSTER_ORDER, confusion, summarize

COLORS = {"CS": "#2b8a3e", "CH": "#74b816", "NS": "#e8590c", "NHR": "#7048e8", "NHI": "#c92a2a"}
_e = html.escape


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(root: Path, rel: str, size: int) -> str | None:
    """A PNG data URI of the image, or None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(root / rel) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            if max(img.size) < size:  # small images (digits, CIFAR): enlarge crisply
                scale = size // max(img.size)
                img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
    except Exception:  # noqa: BLE001 - a missing or broken image shows a placeholder
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _scatter(frame: pd.DataFrame, metadata: dict[str, Any], max_points: int) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    sample = frame.sample(max_points, random_state=0) if len(frame) > max_points else frame
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    for c in CLUSTER_ORDER:
        part = sample[sample["cluster"] == c]
        ax.scatter(
            part["conf_given"],
            part["conf_pseudo"],
            s=6,
            alpha=0.5,
            c=COLORS[c],
            label=f"{c} ({(frame['cluster'] == c).sum()})",
        )
    gmm, names = metadata.get("gmm"), metadata.get("cluster_names") or []
    if gmm and len(np.asarray(gmm["means"]).shape) == 2 and np.asarray(gmm["means"]).shape[1] == 2:
        for (a, m), name in zip(gmm["means"], names):
            ax.scatter([a], [m], marker="X", s=160, c=COLORS.get(name, "k"), edgecolors="black")
            ax.annotate(name, (a, m), xytext=(6, 6), textcoords="offset points", weight="bold")
    ax.set_xlabel("mean confidence of the given label")
    ax.set_ylabel("mean confidence of the max-repeating pseudo label")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Joint confidence by cluster (X = component means)")
    note = f"{len(sample)} of {len(frame)} samples drawn" if len(sample) < len(frame) else ""
    return _png(fig), note


def _traces(frame: pd.DataFrame, per_cluster: int = 3) -> str:
    import matplotlib.pyplot as plt

    present = [c for c in CLUSTER_ORDER if (frame["cluster"] == c).any()]
    fig, axes = plt.subplots(
        1,
        max(len(present), 1),
        figsize=(3.2 * max(len(present), 1), 2.8),
        sharey=True,
        squeeze=False,
    )
    for ax, c in zip(axes[0], present):
        part = frame[frame["cluster"] == c]
        # typical samples: those nearest the cluster's median joint confidence
        center = part[["conf_given", "conf_pseudo"]].median()
        dist = ((part[["conf_given", "conf_pseudo"]] - center) ** 2).sum(axis=1)
        for k, (_, row) in enumerate(part.loc[dist.nsmallest(per_cluster).index].iterrows()):
            ax.plot(
                row["trace_given"], color="#1c7ed6", alpha=0.8, label="given" if k == 0 else None
            )
            ax.plot(
                row["trace_pseudo"],
                color="#2f9e44",
                alpha=0.8,
                ls="--",
                label="pseudo" if k == 0 else None,
            )
        ax.set_title(f"{c}: {CLUSTER_MEANING[c].split(':')[0]}", fontsize=9)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("confidence")
    axes[0][0].legend(fontsize=8)
    return _png(fig)


def _heatmap(table: pd.DataFrame) -> str:
    import matplotlib.pyplot as plt

    k = len(table)
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.45 * k, 12), min(1.0 + 0.4 * k, 11)))
    values = np.log1p(table.to_numpy())
    ax.imshow(values, cmap="Blues")
    ax.set_xticks(range(k), [str(c) for c in table.columns], rotation=90, fontsize=7)
    ax.set_yticks(range(k), [str(c) for c in table.index], fontsize=7)
    ax.set_xlabel("clean label")
    ax.set_ylabel("given label")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if table.iat[i, j]:
                    ax.text(
                        j,
                        i,
                        str(table.iat[i, j]),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if values[i, j] > values.max() / 2 else "black",
                    )
    ax.set_title("given -> clean (log colour scale)")
    return _png(fig)


def _grid(rows: pd.DataFrame, root: Path, size: int, caption: Any) -> str:
    tiles = []
    for _, r in rows.iterrows():
        src = _thumb(root, r["path"], size)
        img = (
            f'<img src="{src}" width="{size}" height="{size}" alt="">'
            if src
            else f'<div class="missing" style="width:{size}px;height:{size}px">missing</div>'
        )
        tiles.append(
            f'<figure title="{_e(str(r["path"]))}">{img}<figcaption>{caption(r)}'
            "</figcaption></figure>"
        )
    return '<div class="grid">' + "".join(tiles) + "</div>"


_SCRIPT = """
(function(){
  const data = JSON.parse(document.getElementById('rows').textContent);
  const thumbs = JSON.parse(document.getElementById('thumbs').textContent);
  const cols = ['path','given_label','clean_label','pseudo_label','cluster','action','conf_given','conf_pseudo'];
  let sortCol = 'conf_given', asc = true, page = 0; const per = 50;
  const q = id => document.getElementById(id);
  function visible(){
    const text = q('f-text').value.toLowerCase(), cl = q('f-cluster').value, ac = q('f-action').value;
    const lo = parseFloat(q('f-min').value || '0'), hi = parseFloat(q('f-max').value || '1');
    let rows = data.filter(r => (!cl || r.cluster === cl) && (!ac || r.action === ac)
      && r.conf_given >= lo && r.conf_given <= hi
      && (!text || (r.path + ' ' + r.given_label + ' ' + (r.clean_label||'') + ' ' + r.pseudo_label).toLowerCase().includes(text)));
    rows.sort((a, b) => { const x = a[sortCol], y = b[sortCol];
      return (x === y ? 0 : (x === null ? 1 : y === null ? -1 : (x < y ? -1 : 1))) * (asc ? 1 : -1); });
    return rows;
  }
  function cell(v){ const d = document.createElement('td'); d.textContent = v === null ? '' :
      (typeof v === 'number' ? v.toFixed(3) : v); return d; }
  function draw(){
    const rows = visible(), body = q('tbody'); body.replaceChildren();
    const pages = Math.max(1, Math.ceil(rows.length / per)); page = Math.min(page, pages - 1);
    for (const r of rows.slice(page * per, page * per + per)) {
      const tr = document.createElement('tr'); const td = document.createElement('td');
      if (thumbs[r.path]) { const im = document.createElement('img'); im.src = thumbs[r.path]; im.width = 40; td.appendChild(im); }
      tr.appendChild(td); for (const c of cols) tr.appendChild(cell(r[c])); body.appendChild(tr);
    }
    q('count').textContent = rows.length + ' rows, page ' + (page + 1) + ' of ' + pages;
  }
  document.querySelectorAll('th[data-col]').forEach(th => th.addEventListener('click', () => {
    const c = th.dataset.col; asc = sortCol === c ? !asc : true; sortCol = c; draw(); }));
  ['f-text','f-cluster','f-action','f-min','f-max'].forEach(id => q(id).addEventListener('input', () => { page = 0; draw(); }));
  q('prev').addEventListener('click', () => { page = Math.max(0, page - 1); draw(); });
  q('next').addEventListener('click', () => { page += 1; draw(); });
  q('export').addEventListener('click', () => {
    const esc = v => { v = v === null ? '' : String(v); return /[",\\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; };
    const lines = [cols.join(',')].concat(visible().map(r => cols.map(c => esc(r[c])).join(',')));
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([lines.join('\\n') + '\\n'], {type: 'text/csv'}));
    a.download = 'labelclean-selection.csv'; document.body.appendChild(a); a.click(); a.remove();
  });
  draw();
})();
"""

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:22px}.muted{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:right}
th{background:#f6f6f6;position:sticky;top:0}th[data-col]{cursor:pointer}td:nth-child(2){text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;width:96px;text-align:center;font-size:11px}
.grid img{image-rendering:pixelated;border:1px solid #ccc}.missing{background:#eee;color:#999;display:flex;align-items:center;justify-content:center;font-size:10px}
.filters{display:flex;gap:8px;flex-wrap:wrap;margin:8px 0}.filters input,.filters select{padding:3px}
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
    """Write the report page to ``path`` (atomically; refuses to replace without overwrite)."""
    import matplotlib

    matplotlib.use("Agg")
    frame, md = report.frame, report.metadata
    root = report.image_root
    summary = summarize(report)
    report_progress(progress, "html report", 1, 6)
    scatter, scatter_note = _scatter(frame, md, max_scatter)
    report_progress(progress, "html report", 2, 6)
    traces = _traces(frame) if frame["trace_given"].map(len).max() > 0 else ""
    report_progress(progress, "html report", 3, 6)
    relabeled = frame[frame["action"] == "relabel"].sort_values("conf_pseudo", ascending=False)
    unlabeled = frame[frame["action"] == "unlabel"].sort_values("conf_given")
    grid_relabel = _grid(
        relabeled.head(max_grid),
        root,
        thumb_size,
        lambda r: (
            f"{_e(str(r['given_label']))} &rarr; <b>{_e(str(r['clean_label']))}</b>"
            f"<br>{r['conf_pseudo']:.2f}"
        ),
    )
    grid_unlabel = _grid(
        unlabeled.head(max_grid),
        root,
        thumb_size,
        lambda r: f"{_e(str(r['cluster']))}: {_e(str(r['given_label']))}?<br>{r['conf_given']:.2f}",
    )
    report_progress(progress, "html report", 4, 6)
    heat = _heatmap(confusion(report))
    suspicious = (
        frame.assign(_flag=frame["action"] != "keep")
        .sort_values(["_flag", "conf_given"], ascending=[False, True])
        .head(table_rows)
    )
    cols = [
        "path",
        "given_label",
        "clean_label",
        "pseudo_label",
        "cluster",
        "action",
        "conf_given",
        "conf_pseudo",
    ]
    records = suspicious[cols].astype(object).where(suspicious[cols].notna(), None)
    records = records.assign(
        conf_given=suspicious["conf_given"].round(4).astype(float),
        conf_pseudo=suspicious["conf_pseudo"].round(4).astype(float),
    )
    thumbs = {p: t for p in suspicious["path"] if (t := _thumb(root, p, 40))}
    report_progress(progress, "html report", 5, 6)

    def js(obj: Any) -> str:  # JSON safe inside <script>: no "</" sequence can close the tag
        return json.dumps(obj).replace("</", "<\\/")

    cards = "".join(
        f'<div class="card"><span class="muted">{_e(k)}</span><b>{v}</b></div>'
        for k, v in [("samples", summary.n), ("estimated noise", f"{summary.estimated_noise:.1%}")]
        + [(a, n) for a, n in summary.actions.items()]
        + [(c, n) for c, n in summary.clusters.items()]
    )
    per_class = "".join(
        f"<tr><td>{_e(str(r['class']))}</td><td>{r['size']}</td><td>{r['flagged']}</td>"
        f"<td>{r['noise_estimate']:.1%}</td><td>{r['relabeled_out']}</td>"
        f"<td>{r['relabeled_in']}</td></tr>"
        for r in summary.per_class.to_dict("records")
    )
    flips = "".join(
        f"<tr><td>{_e(str(r['given']))}</td><td>{_e(str(r['clean']))}</td><td>{r['count']}</td></tr>"
        for r in summary.top_flips.to_dict("records")
    )
    options = "".join(f'<option value="{c}">{c}</option>' for c in CLUSTER_ORDER)
    sampled = []
    if scatter_note:
        sampled.append(f"scatter: {scatter_note}")
    for name, part in (("relabeled", relabeled), ("unlabeled", unlabeled)):
        if len(part) > max_grid:
            sampled.append(f"{name} grid: first {max_grid} of {len(part)}")
    if len(frame) > table_rows:
        sampled.append(f"table: the {table_rows} most suspicious of {len(frame)} samples")
    sampled_note = (
        ("<p class='muted'>Sampled to keep this page light: " + _e("; ".join(sampled)) + ".</p>")
        if sampled
        else ""
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>labelclean report: {_e(str(report.path.name if report.path else "report"))}</title>
<style>{_STYLE}</style></head><body>
<h1>labelclean report</h1>
<p class="muted">{_e(str(report.path or ""))} &middot; images in {_e(str(root))} &middot; model
{_e(str(md.get("model", "?")))}, {_e(str(md.get("epochs", "?")))} epochs, mode
{_e(str(md.get("mode", "?")))}, labelclean {_e(str(md.get("tool_version", "?")))}</p>
{sampled_note}
<section id="summary"><h2>Summary</h2><div class="cards">{cards}</div>
<h3>Top given &rarr; clean flips</h3><table><tr><th>given</th><th>clean</th><th>count</th></tr>{flips}</table>
</section>
<section id="scatter"><h2>Joint confidence (the paper's figure 2)</h2>
<img src="{scatter}" alt="joint confidence scatter" style="max-width:100%"></section>
<section id="traces"><h2>Confidence over epochs, typical samples (figure 1)</h2>
{f'<img src="{traces}" alt="confidence traces" style="max-width:100%">' if traces else "<p>No traces recorded.</p>"}
<p class="muted">Solid: confidence of the given label; dashed: of the max-repeating pseudo label.</p></section>
<section id="relabeled"><h2>Relabeled samples (figure 3): given &rarr; clean</h2>{grid_relabel}</section>
<section id="unlabeled"><h2>Unlabeled samples (NHR / NHI)</h2>{grid_unlabel}</section>
<section id="classes"><h2>Per class</h2>
<table><tr><th>class</th><th>size</th><th>flagged</th><th>noise estimate</th><th>relabeled out</th><th>relabeled in</th></tr>{per_class}</table>
<img src="{heat}" alt="given to clean confusion" style="max-width:100%;margin-top:12px"></section>
<section id="samples"><h2>Most suspicious samples</h2>
<div class="filters"><input id="f-text" placeholder="filter path or class">
<select id="f-cluster"><option value="">any cluster</option>{options}</select>
<select id="f-action"><option value="">any action</option><option>keep</option><option>relabel</option><option>unlabel</option></select>
conf. of given label <input id="f-min" type="number" step="0.05" min="0" max="1" value="0" style="width:60px">
to <input id="f-max" type="number" step="0.05" min="0" max="1" value="1" style="width:60px">
<button id="export">Export selection as CSV</button></div>
<div><button id="prev">&larr;</button> <span id="count" class="muted"></span> <button id="next">&rarr;</button></div>
<table><thead><tr><th></th>{"".join(f'<th data-col="{c}">{c}</th>' for c in cols)}</tr></thead><tbody id="tbody"></tbody></table>
</section>
<script type="application/json" id="rows">{js(records.to_dict("records"))}</script>
<script type="application/json" id="thumbs">{js(thumbs)}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
    out = atomic_write_text(path, page, overwrite=overwrite)
    report_progress(progress, "html report", 6, 6)
    return out
