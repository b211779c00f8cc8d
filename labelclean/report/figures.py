"""The page's matplotlib figures: the paper's figure 2 (joint confidence) and figure 1 (traces).

Drawn with the Agg backend at twice the display resolution (``SCALE``) and embedded as PNG
data URIs with their display size, so they stay sharp on high-density screens and offline.
User strings reach matplotlib through :func:`mpl_text`: a ``$`` would start mathtext.
"""

from __future__ import annotations

import base64
import io
import struct
from typing import Any

import numpy as np
import pandas as pd

from labelclean.report.summary import CLUSTER_ORDER, CLUSTER_SHORT
from labelclean.report.templating import color as _color
from labelclean.report.thumbs import Thumbnails

GIVEN_COLOR, PSEUDO_COLOR = "#1c7ed6", "#2f9e44"  # the paper's figure 1: blue given, green other
DPI, SCALE = 100, 2


def mpl_text(value: Any) -> str:
    """A user string safe for matplotlib text: ``$`` would otherwise start mathtext."""
    return str(value).replace("$", r"\$")


_mpl = mpl_text


def _cut(value: Any, width: int = 14) -> str:
    """A class name cut to ``width`` characters (``...`` marks the cut): long names fit a title."""
    text = str(value)
    return mpl_text(text if len(text) <= width else text[: width - 1] + "\u2026")


def png(fig: Any, *, tight: bool = True) -> dict[str, Any]:
    """``{"src": data URI, "width", "height"}`` of a figure drawn at SCALE x its display size."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="png",
        dpi=DPI * SCALE,
        bbox_inches="tight" if tight else None,  # tight draws twice; the traces lay out alone
        metadata={"Software": None},
    )
    plt.close(fig)
    data = buf.getvalue()
    width, height = struct.unpack(">II", data[16:24])  # the PNG header's IHDR size
    return {
        "src": "data:image/png;base64," + base64.b64encode(data).decode("ascii"),
        "width": round(width / SCALE),
        "height": round(height / SCALE),
    }


def scatter(
    frame: pd.DataFrame, metadata: dict[str, Any], *, max_points: int
) -> tuple[dict[str, Any], str]:
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
            label=f"{_mpl(c)} {CLUSTER_SHORT.get(c, '')}  {k} ({k / max(n, 1):.0%})",
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
                    # above the points, with a white halo: a component's spread stays visible
                    # however many samples it covers
                    ellipse = Ellipse(
                        (a, m), w, h, angle=angle, fill=False, ec=color, lw=1.6, ls="--", zorder=4
                    )
                    ellipse.set_path_effects(
                        [patheffects.withStroke(linewidth=3.2, foreground="white")]
                    )
                    ax.add_patch(ellipse)
                ax.scatter([a], [m], marker="X", s=110, c=color, edgecolors="black", zorder=5)
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
    ax.set_ylabel("mean confidence of the model's most frequent prediction  (m)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    legend = ax.legend(loc="lower right", fontsize=8, markerscale=2.5 if size < 10 else 1.2)
    for handle in legend.legend_handles:
        handle.set_alpha(1)
    ax.set_title("Joint confidence by cluster (X: mixture means, dashed: 2 sigma)", fontsize=10)
    note = f"{len(sample)} of {n} samples drawn at random" if len(sample) < n else ""
    return png(fig), note


def _typical(part: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` samples nearest the cluster's median joint confidence: its typical members."""
    center = part[["conf_given", "conf_pseudo"]].median()
    dist = ((part[["conf_given", "conf_pseudo"]] - center) ** 2).sum(axis=1)
    order = np.lexsort((-part["cluster_prob"].to_numpy(), dist.to_numpy()))
    return part.iloc[order[:k]]


def traces(
    frame: pd.DataFrame, thumbs: Thumbnails, *, per_cluster: int = 3
) -> dict[str, Any] | None:
    """Figure 1: per cluster, typical images and their confidence over epochs."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    present = [c for c in CLUSTER_ORDER if (frame["cluster"] == c).any()]
    present += sorted(set(frame["cluster"]) - set(present))
    picks = {c: _typical(frame[frame["cluster"] == c], per_cluster) for c in present}
    if not any(len(r) for p in picks.values() for r in p["trace_given"]):
        return None
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
                f"given {_cut(row['given_label'])} / model {_cut(row['pseudo_label'])}",
                fontsize=8,
            )
            if i == rows - 1:
                ax.set_xlabel("epoch", fontsize=8)
    handles = [
        Line2D([], [], color=GIVEN_COLOR, lw=2.6, label="confidence of the given label"),
        Line2D(
            [],
            [],
            color=PSEUDO_COLOR,
            lw=1.4,
            ls="--",
            label="of the model's most frequent prediction",
        ),
    ]
    fig.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False
    )
    return png(fig, tight=False)
