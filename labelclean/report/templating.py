"""The Jinja2 templates and static assets shared by the report page and the review app.

Templates live in ``templates/`` and the CSS/JavaScript in ``assets/`` beside this module,
shipped as package data. Autoescaping is on for every template: class names and paths are
user data. JSON for a ``<script>`` block goes through :func:`script_json`, which cannot end
the element it sits in.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
ASSETS = HERE / "assets"
COLORS = {"CS": "#2b8a3e", "CH": "#74b816", "NS": "#e8590c", "NHR": "#7048e8", "NHI": "#c92a2a"}
OTHER_COLOR = "#868e96"
ASSET_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def script_json(obj: Any) -> str:
    """JSON that cannot end or confuse the ``<script>`` element it sits in."""
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def color(cluster: str) -> str:
    """The colour of a cluster (grey for names outside the five)."""
    return COLORS.get(cluster, OTHER_COLOR)


def asset_names() -> list[str]:
    """The files the review app may serve under ``/assets/`` (nothing else is reachable)."""
    return sorted(p.name for p in ASSETS.iterdir() if p.suffix in ASSET_TYPES)


@functools.cache
def asset(name: str) -> str:
    """The text of one asset file."""
    if name not in asset_names():
        raise KeyError(f"no asset {name!r}")
    return (ASSETS / name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def environment() -> Any:
    """The Jinja2 environment (autoescaping, strict undefined, the shared filters)."""
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["script_json"] = lambda obj: Markup(script_json(obj))
    env.filters["pct"] = lambda v, d=1: "-" if v != v else f"{v:.{d}%}"  # NaN -> "-"
    env.filters["num"] = lambda v, d=2: "-" if v is None or v != v else f"{v:.{d}f}"
    env.globals["asset"] = lambda name: Markup(asset(name))
    env.globals["color"] = color
    env.globals["cluster_css"] = Markup(
        "".join(
            f".c-{c}{{color:{v}}}.chip-{c}{{background:{v}}}.bar-{c}{{background:{v}}}"
            for c, v in COLORS.items()
        )
    )
    return env


def render(template: str, **context: Any) -> str:
    """Render one template with ``context``."""
    return environment().get_template(template).render(**context)
