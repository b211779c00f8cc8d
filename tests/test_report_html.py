"""The HTML report page and the summary it shows, on a realistic report over real digit images."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labelclean.errors import OutputExistsError
from labelclean.report.html import write_html_report
from labelclean.report.parquet import Report, build_report_table, read_report, write_report
from labelclean.report.sections import TABLE_COLUMNS
from labelclean.report.summary import confusion, render_terminal, summarize

# role -> (count, given trace(t), pseudo trace(t)) with t in [0, 1]: the shapes of the paper's
# figure 1, so the mean confidences land where its figure 2 puts the clusters.
ROLES = {
    "CS": (40, lambda t: 1 - 0.85 * np.exp(-t * 9), lambda t: 1 - 0.85 * np.exp(-t * 9)),
    "CH": (14, lambda t: 0.1 + 0.7 * t, lambda t: 0.1 + 0.7 * t),
    "NS": (12, lambda t: 0.08 + 0.12 * t**3, lambda t: 0.2 + 0.75 * (1 - np.exp(-t * 4))),
    "NHR": (7, lambda t: 0.3 + 0.05 * np.sin(9 * t), lambda t: 0.45 + 0.05 * np.cos(7 * t)),
    "NHI": (7, lambda t: 0.08 + 0.03 * t, lambda t: 0.22 + 0.05 * np.sin(5 * t)),
}
N = sum(r[0] for r in ROLES.values())  # 80


def make_digits_report(
    folder: Path, *, class_names=None, epochs: int = 10, odd_path: str | None = None, guard: bool = False
) -> Path:
    """Write N real digit PNGs and a report.parquet over them with known clusters and actions.

    Rows are ordered by role (CS, CH, NS, NHR, NHI); NS rows are relabeled given=(truth+1)%10 ->
    truth, NHR/NHI rows are unlabeled, CS/CH rows keep their (true) label. With ``guard``, the
    report records the guard as an audit does: the first 4 CH rows were moved there by the
    flag budget (column ``guard`` and metadata ``guard_note``); without, it predates the guard.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    names = list(class_names) if class_names is not None else [str(c) for c in range(10)]
    root = folder / "images"
    root.mkdir(parents=True)
    paths = []
    for i in range(N):
        rel = f"d{i:03d}.png" if not (odd_path and i == 0) else odd_path
        Image.fromarray((digits.images[i] / 16 * 255).astype(np.uint8)).save(root / rel)
        paths.append(rel)
    truth = digits.target[:N].astype(np.int64)
    rng = np.random.default_rng(0)
    roles = np.concatenate([[r] * k for r, (k, _, _) in ROLES.items()])
    t = np.linspace(0, 1, epochs)
    tg = np.stack([ROLES[r][1](t) for r in roles]) + rng.normal(0, 0.02, (N, epochs))
    tp = np.stack([ROLES[r][2](t) for r in roles]) + rng.normal(0, 0.02, (N, epochs))
    tg, tp = tg.clip(0, 1), tp.clip(0, 1)
    given = truth.copy()
    pseudo = truth.copy()
    noisy = np.isin(roles, ["NS", "NHI"])
    given[noisy] = (truth[noisy] + 1) % 10
    nhi = roles == "NHI"
    pseudo[nhi] = (truth[nhi] + 3) % 10
    action = np.select(
        [np.isin(roles, ["CS", "CH"]), roles == "NS"], ["keep", "relabel"], "unlabel"
    )
    clean = np.select([action == "keep", action == "relabel"], [given, pseudo], -1)
    tp = np.where((pseudo == given)[:, None], tg, tp)  # my == ay: the same label, the same trace
    joint = np.stack([tg.mean(1), tp.mean(1)], 1)
    table = build_report_table(
        {
            "index": np.arange(N),
            "path": paths,
            "given_label": given,
            "cluster": roles,
            "action": action,
            "clean_label": clean,
            "pseudo_label": pseudo,
            "conf_given": joint[:, 0],
            "conf_pseudo": joint[:, 1],
            "cluster_prob": rng.uniform(0.6, 1, N),
            "admitted_epoch": np.select([action == "keep", action == "relabel"], [3, 5], -1),
            "trace_given": tg,
            "trace_pseudo": tp,
            **({"guard": np.where(np.isin(np.arange(N) - ROLES["CS"][0], range(4)), "budget", None)} if guard else {}),
        },
        class_names=names,
    )
    gmm = {
        "weights": [float((roles == r).mean()) for r in ROLES],
        "means": [joint[roles == r].mean(0).tolist() for r in ROLES],
        "covariances": [(np.cov(joint[roles == r].T) + 1e-4 * np.eye(2)).tolist() for r in ROLES],
    }
    metadata = {
        "tool_version": "0.0.0-test",
        "image_root": str(root.resolve()),
        "class_names": names,
        "config": {"components": 5, "note": "<b>config</b>"},
        "seed": 0,
        "epochs": epochs,
        "device": "cpu",
        "mode": "train",
        "wall_time_s": 12.5,
        "model": "small_cnn",
        "gmm": gmm,
        "cluster_names": list(ROLES),
        **({"guard_note": "guard: budget kept 4 flagged samples with their labels (CH)"} if guard else {}),
    }
    return write_report(folder / "report.parquet", table, metadata, overwrite=False)


class Page(HTMLParser):
    """Tag balance, ids, image sources, links and script blocks of a page."""

    VOID = {"img", "br", "meta", "input", "link", "hr", "source", "wbr"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack, self.ids, self.imgs, self.urls, self.scripts = [], set(), [], [], {}
        self.text_chunks, self._script = [], None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            assert attrs["id"] not in self.ids, f"duplicate id {attrs['id']}"
            self.ids.add(attrs["id"])
        if tag == "img":
            self.imgs.append(attrs.get("src") or "")
        for key in ("src", "href", "action", "data", "poster"):
            if key in attrs:
                self.urls.append((tag, key, attrs[key] or ""))
        if tag == "script":
            self._script = attrs.get("id", f"inline{len(self.scripts)}")
            self.scripts[self._script] = ""
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>, open: {self.stack[-4:]}"
        self.stack.pop()
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script:
            self.scripts[self._script] += data
        else:
            self.text_chunks.append(data)


SECTIONS = {"summary", "scatter", "traces", "relabeled", "unlabeled", "classes", "samples"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_digits_report(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def page(digits, tmp_path_factory):
    out = write_html_report(read_report(digits), tmp_path_factory.mktemp("page") / "report.html")
    return out, out.read_text(encoding="utf-8")


def test_summary_of_the_digits_report(digits):
    s = summarize(read_report(digits))
    assert s.n == N and s.n_classes == 10
    assert s.clusters == {"CS": 40, "CH": 14, "NS": 12, "NHR": 7, "NHI": 7}
    assert s.actions == {"keep": 54, "relabel": 12, "unlabel": 14}
    assert s.estimated_noise == pytest.approx(26 / 80)


def test_summary_numbers_on_a_hand_made_report():
    rows = [  # given, cluster, action, clean
        ("a", "CS", "keep", "a"),
        ("a", "CH", "keep", "a"),
        ("a", "NS", "relabel", "b"),
        ("a", "NS", "relabel", "b"),
        ("b", "NS", "relabel", "c"),
        ("b", "NHR", "unlabel", None),
        ("c", "NHI", "unlabel", None),
        ("c", "CS", "keep", "c"),
        ("c", "CS", "keep", "c"),
        ("b", "CS", "keep", "b"),
    ]
    frame = pd.DataFrame(rows, columns=["given_label", "cluster", "action", "clean_label"])
    frame["pseudo_label"] = frame["clean_label"].fillna("a")
    rep = Report(frame=frame, metadata={"class_names": ["a", "b", "c", "d"], "image_root": "/"})
    s = summarize(rep)
    assert s.clusters == {"CS": 4, "CH": 1, "NS": 3, "NHR": 1, "NHI": 1}
    assert s.actions == {"keep": 5, "relabel": 3, "unlabel": 2}
    assert s.estimated_noise == 0.5
    pc = s.per_class.set_index("class")
    assert pc["size"].to_dict() == {"a": 4, "b": 3, "c": 3, "d": 0}
    assert pc["flagged"].to_dict() == {"a": 2, "b": 2, "c": 1, "d": 0}
    assert pc["relabeled_out"].to_dict() == {"a": 2, "b": 1, "c": 0, "d": 0}
    assert pc["relabeled_in"].to_dict() == {"a": 0, "b": 2, "c": 1, "d": 0}
    assert pc["unlabeled"].to_dict() == {"a": 0, "b": 1, "c": 1, "d": 0}
    assert pc.loc["a", "noise_estimate"] == 0.5 and np.isnan(pc.loc["d", "noise_estimate"])
    assert s.most_relabeled["class"].tolist() == ["a", "b"]
    assert s.top_flips.values.tolist() == [["a", "b", 2], ["b", "c", 1]]
    cm = confusion(rep)
    assert cm.loc["a", "a"] == 2 and cm.loc["a", "b"] == 2 and cm.loc["b", "c"] == 1
    assert cm.to_numpy().sum() == 8  # unlabeled rows are not in it
    from rich.console import Console

    console = Console(file=StringIO(), width=120)
    frame.loc[0, "given_label"] = "[red]x[/red]"  # rich markup in a class name prints as is
    render_terminal(
        summarize(Report(frame, {"class_names": ["[red]x[/red]", "a", "b", "c"]})), console=console
    )
    out = console.file.getvalue()
    assert "estimated noise 50.0%" in out and "a    " in out and "top given -> clean flips" in out


def test_page_parses_has_every_section_and_embeds_its_images(page):
    path, text = page
    p = Page(text)
    assert p.stack == [], f"unclosed tags {p.stack}"
    assert SECTIONS | {"export", "rows", "thumbs", "heat", "table-info"} <= p.ids
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    # 2 figures + 12 relabeled tiles + 7 NHR + 7 NHI tiles + the table's first page of 50 rows
    assert len(p.imgs) == 2 + 12 + 7 + 7 + 50
    assert all(
        src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in p.imgs
    )
    rows = json.loads(p.scripts["rows"])
    thumbs = json.loads(p.scripts["thumbs"])
    assert len(rows) == N and set(thumbs) == {r["path"] for r in rows}
    assert all(u.startswith("data:image/") for u in thumbs.values())
    assert path.stat().st_size < 900_000


def test_page_makes_no_network_request(page):
    _, text = page
    p = Page(text)
    for tag, key, url in p.urls:
        assert url.startswith(("data:", "#")), f"<{tag} {key}={url[:60]}>"
    lowered = text.lower()
    for needle in ("http://", "https://", "//cdn", "<link", "@import", "<iframe", "<object"):
        assert needle not in lowered, needle
    assert not re.search(r"(?<![a-z])url\(", lowered)  # no CSS url(...) (createObjectURL is fine)
    # the table's data is embedded, and so are its thumbnails
    assert "fetch(" not in text and "XMLHttpRequest" not in text


def test_table_lists_the_most_suspicious_first(page):
    rows = json.loads(Page(page[1]).scripts["rows"])
    actions = [r["action"] for r in rows]
    assert set(actions[:26]) == {"relabel", "unlabel"} and set(actions[26:]) == {"keep"}
    keep = [r["conf_given"] for r in rows[26:]]
    assert keep == sorted(keep)
    unl = [r for r in rows if r["action"] == "unlabel"]
    assert all(r["clean_label"] is None for r in unl)


def test_page_escapes_class_names_and_paths(tmp_path):
    evil = "<script>alert(1)</script>"
    names = [evil, "b&c", 'quote"d'] + [str(c) for c in range(3, 10)]
    digits = make_digits_report(tmp_path, class_names=names, odd_path='x"<b>y.png')
    text = write_html_report(read_report(digits), tmp_path / "r.html").read_text()
    p = Page(text)
    assert p.stack == []
    assert set(p.scripts) == {"rows", "thumbs", "columns", "table-info", "inline4"}  # no injected script
    assert evil not in text and "<b>y" not in text and "<b>config" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "b&amp;c" in text
    rows = json.loads(p.scripts["rows"])  # the data reaches the script intact
    assert {r["given_label"] for r in rows} >= {evil, "b&c", 'quote"d'}
    assert 'x"<b>y.png' in {r["path"] for r in rows}


def test_missing_images_show_a_placeholder_and_a_note(tmp_path):
    digits = make_digits_report(tmp_path)
    rep = read_report(digits)
    gone = rep.frame.loc[rep.frame["action"] == "relabel", "path"].iloc[0]
    (rep.image_root / gone).unlink()
    text = write_html_report(rep, tmp_path / "r.html").read_text()
    p = Page(text)
    assert len(p.imgs) == 2 + 12 + 7 + 7 - 1 + 50 - 1  # its tile and its table thumbnail
    assert text.count(">missing image</div>") == 1
    assert "1 image(s) could not be read" in text and gone in text
    assert gone not in json.loads(p.scripts["thumbs"])


def test_page_says_what_it_sampled(digits, tmp_path):
    text = write_html_report(
        read_report(digits), tmp_path / "r.html", max_grid=3, table_rows=10, max_scatter=20
    ).read_text()
    p = Page(text)
    assert "Sampled to keep this page light" in text
    assert "20 of 80 samples drawn at random" in text
    assert "relabeled grid: first 3 of 12" in text and "unlabeled NHR grid: first 3 of 7" in text
    assert "table: every flagged sample and the 10 most suspicious of 54 kept ones" in text
    assert len(json.loads(p.scripts["rows"])) == 26 + 10 and len(p.imgs) == 2 + 3 * 3 + 36


def test_many_classes_cap_the_heatmap_and_say_so(tmp_path):
    names = [str(c) for c in range(10)] + [f"extra{c}" for c in range(35)]
    digits = make_digits_report(tmp_path, class_names=names)
    text = write_html_report(read_report(digits), tmp_path / "r.html").read_text()
    assert "heatmap: the 30 classes with the most changes of 45" in text
    assert len(Page(text).ids & {"heat"}) == 1 and text.count('<th scope="row">') == 30


def test_refuses_to_overwrite(digits, tmp_path):
    out = tmp_path / "r.html"
    out.write_text("keep me")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_html_report(read_report(digits), out)
    assert out.read_text() == "keep me"
    write_html_report(read_report(digits), out, overwrite=True)
    assert out.read_text().startswith("<!DOCTYPE html>")


PROBE = """<pre id="probe-csv"></pre><script>
(function () {
  const $ = id => document.getElementById(id);
  const RealBlob = window.Blob;
  window.Blob = function (parts, opts) { $('probe-csv').textContent = parts.join(''); return new RealBlob(parts, opts); };
  HTMLAnchorElement.prototype.click = function () {};
  $('f-cluster').value = 'NS'; $('f-cluster').dispatchEvent(new Event('input'));
  document.querySelector('th[data-col="conf_pseudo"]').click();
  document.querySelector('th[data-col="conf_pseudo"]').click();  // descending
  $('export').click();
})();
</script></body>"""


def _chromium_dom(path: Path, profile: Path) -> str:
    return subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs a headless chromium")
def test_script_filters_sorts_pages_and_exports_in_a_real_browser(page, digits, tmp_path):
    path, text = page
    dom = _chromium_dom(path, tmp_path / "profile")
    body = re.search(r'<tbody id="tbody">(.*?)</tbody>', dom, re.S).group(1)
    assert body.count("<tr>") == 50  # first page of the 80 rows
    assert "rows 1-50 of 80 (page 1 of 2)" in dom and "Export 80 rows as CSV" in dom
    # filter to NS, sort by pseudo confidence (descending), export: the CSV holds exactly those rows
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE), encoding="utf-8")
    dom = _chromium_dom(probe, tmp_path / "profile2")
    assert "rows 1-12 of 12 (page 1 of 1)" in dom
    csv = re.search(r'<pre id="probe-csv">(.*?)</pre>', dom, re.S).group(1)
    got = pd.read_csv(
        StringIO(csv), keep_default_na=False, dtype={"given_label": str, "clean_label": str}
    )
    # the export has the table's columns, in its order, and an empty one to fill in
    assert list(got.columns) == [*TABLE_COLUMNS, "new_label"]
    assert len(got) == 12 and set(got["cluster"]) == {"NS"} and set(got["action"]) == {"relabel"}
    assert got["conf_pseudo"].tolist() == sorted(got["conf_pseudo"], reverse=True)
    frame = read_report(digits).frame.set_index("index")
    assert (
        got["given_label"].to_numpy() == frame.loc[got["index"], "given_label"].to_numpy()
    ).all()


def test_first_page_of_the_table_is_plain_html(page):
    """Without JavaScript the table still shows its first page, most suspicious first."""
    _, text = page
    body = re.search(r'<tbody id="tbody">(.*?)</tbody>', text, re.S).group(1)
    assert body.count("<tr>") == 50
    first = json.loads(Page(text).scripts["rows"])[0]
    assert f'<td class="text path">{first["path"]}</td>' in body
    assert "Without JavaScript: the first 50 of 80 rows" in text


def test_given_and_suggested_are_words_not_only_colours(page):
    _, text = page
    tiles = re.findall(r'<figcaption>(.*?)</figcaption>', text, re.S)
    assert len(tiles) == 12 + 14
    for caption in tiles:
        plain = re.sub(r"<[^>]+>", " ", caption)
        assert "given" in plain and ("now" in plain or "suggested" in plain)


def test_figures_are_drawn_at_twice_their_display_size(page):
    import base64
    import struct

    _, text = page
    figs = re.findall(r'<img class="fig" src="data:image/png;base64,([^"]+)" width="(\d+)" height="(\d+)"', text)
    assert len(figs) == 2
    for data, w, h in figs:
        pw, ph = struct.unpack(">II", base64.b64decode(data)[16:24])
        assert abs(pw - 2 * int(w)) <= 1 and abs(ph - 2 * int(h)) <= 1


def test_scatter_draws_every_mixture_ellipse(digits, monkeypatch):
    from matplotlib.patches import Ellipse

    from labelclean.report import figures

    seen = []
    real = figures.png
    monkeypatch.setattr(figures, "png", lambda fig, **kw: (seen.append(fig), real(fig, **kw))[1])
    rep = read_report(digits)
    figures.scatter(rep.frame, rep.metadata, max_points=20)  # sampled points, all components
    ellipses = [p for p in seen[0].axes[0].patches if isinstance(p, Ellipse)]
    assert len(ellipses) == 5 and all(e.get_zorder() > 1 for e in ellipses)


def test_templates_and_assets_are_package_data():
    import tomllib

    from labelclean.report.templating import ASSETS, TEMPLATES, asset_names

    pyproject = Path(__file__).parent.parent / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["labelclean"]
    shipped = [p for p in TEMPLATES.rglob("*.j2")] + [ASSETS / n for n in asset_names()]
    import labelclean

    root = Path(labelclean.__file__).parent
    for file in shipped:
        rel = file.relative_to(root)
        assert any(rel.match(p) for p in patterns), f"{rel} is not package data"


def test_css_cluster_colours_match_the_figures():
    from labelclean.report.templating import COLORS, asset

    css = asset("common.css")
    for name, value in COLORS.items():
        assert f".chip-{name}{{background:{value}}}" in css and f".c-{name}{{color:{value}}}" in css


CUT_PROBE = """<script>
(function () {
  const $ = id => document.getElementById(id);
  $('f-action').value = 'relabel'; $('f-action').dispatchEvent(new Event('input'));
  document.body.dataset.relabel = $('cut').hidden ? 'hidden' : 'shown';
  $('f-action').value = 'keep'; $('f-action').dispatchEvent(new Event('input'));
  document.body.dataset.keep = $('cut').hidden ? 'hidden' : 'shown';
  $('f-action').value = ''; $('f-action').dispatchEvent(new Event('input'));
  document.querySelector('#heat td.pick[data-given="4"][data-other="3"]').click();
  document.body.dataset.pair = $('count').textContent;
})();
</script></body>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs a headless chromium")
def test_page_says_so_where_a_filter_reaches_the_sampled_kept_rows(digits, tmp_path):
    text = write_html_report(read_report(digits), tmp_path / "r.html", table_rows=10).read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", CUT_PROBE), encoding="utf-8")
    dom = _chromium_dom(probe, tmp_path / "profile")
    assert 'data-relabel="hidden"' in dom  # only flagged rows: the page has them all
    assert 'data-keep="shown"' in dom  # kept rows: sampled, and the page says so
    # the heatmap cell given 4 -> clean 3 lists exactly those 4 relabeled samples
    frame = read_report(digits).frame
    n = int(((frame["given_label"] == "4") & (frame["clean_label"] == "3")).sum())
    assert f'data-pair="rows 1-{n} of {n} (page 1 of 1)"' in dom


def test_page_shows_what_the_guard_moved_and_the_warnings_when_the_report_records_them(tmp_path):
    """Issue 14.15: a guard column in the table and counts in the summary; none for older reports."""
    report = read_report(make_digits_report(tmp_path / "new", guard=True))
    report.metadata["warnings"] = ["predictions collapsed onto <1> class"]
    text = write_html_report(report, tmp_path / "new.html").read_text(encoding="utf-8")
    p = Page(text)
    rows = json.loads(p.scripts["rows"])
    assert "guard" in json.loads(p.scripts["columns"])
    assert sorted(r["path"] for r in rows if r["guard"] == "budget") == [f"d{i:03d}.png" for i in range(40, 44)]
    assert all(r["guard"] is None for r in rows if r["path"] not in {f"d{i:03d}.png" for i in range(40, 44)})
    moves = re.search(r'<div id="guard-moves">(.*?)</div>', text, re.S).group(1)
    assert re.search(r"<td class=\"text\">budget</td><td>4</td><td>5\.0%</td>", moves)
    assert "<td class=\"text\">class_floor</td><td>0</td>" in moves and "guard: budget kept 4" in moves
    assert "<b>warning:</b> predictions collapsed onto &lt;1&gt; class" in text
    old = write_html_report(read_report(make_digits_report(tmp_path / "old")), tmp_path / "old.html")
    old_text = old.read_text(encoding="utf-8")
    assert "guard" not in json.loads(Page(old_text).scripts["columns"]) and "warning:" not in old_text
    assert "Not recorded: a report from an earlier labelclean version." in old_text


# Issue 39.5: a report that says what to do.


def _legend(text: str) -> dict[str, tuple[int, int, int]]:
    """The summary's cluster legend: code -> (kept, relabeled, unlabeled) as the page shows it."""
    part = re.search(r'<div id="legend">(.*?)</div>', text, re.S).group(1)
    rows = re.findall(r"<b>(\w+)</b>[^<]*</td><td>\d+</td><td>[^<]*</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", part)
    return {code: tuple(map(int, k)) for code, *k in rows}


def _visible(text: str) -> str:
    """The page's text a reader sees: no scripts, styles, tooltips or the settings dump."""
    text = re.sub(r"<(script|style|pre)\b.*?</\1>", " ", text, flags=re.S)
    import html

    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def test_legend_counts_what_happened_not_a_fixed_cluster_rule(digits, tmp_path):
    """Kept NHI rows and unlabeled NS rows: the legend says so, never "NHI: unlabeled"."""
    rep = read_report(digits)
    f = rep.frame
    nhi, ns = f.index[f["cluster"] == "NHI"], f.index[f["cluster"] == "NS"][:3]
    f.loc[nhi[:5], "action"] = "keep"
    f.loc[nhi[:5], "clean_label"] = f.loc[nhi[:5], "given_label"]
    f.loc[ns, "action"], f.loc[ns, "clean_label"] = "unlabel", None
    text = write_html_report(rep, tmp_path / "r.html").read_text(encoding="utf-8")
    want = pd.crosstab(f["cluster"], f["action"]).reindex(columns=["keep", "relabel", "unlabel"], fill_value=0)
    assert _legend(text) == {c: tuple(int(v) for v in want.loc[c]) for c in ["CS", "CH", "NS", "NHR", "NHI"]}
    assert _legend(text)["NHI"] == (5, 0, 2) and _legend(text)["NS"] == (0, 9, 3)
    seen = _visible(text)
    assert not re.search(r"NHI[^.;]{0,60}: unlabeled|NS[^.;]{0,60}: relabeled", seen)
    # the scatter's guide counts the same
    guide = re.search(r'<div class="guide">(.*?)</div>', text, re.S).group(1)
    assert "Here: 5 kept, 2 unlabeled." in guide and "Here: 9 relabeled, 3 unlabeled." in guide
    # and so does the terminal's cluster table
    from rich.console import Console

    console = Console(record=True, width=200)
    render_terminal(summarize(rep), console=console)
    out = console.export_text()
    assert "here 5 kept, 2 unlabeled" in out and "here 9 relabeled, 3 unlabeled" in out


def test_page_says_first_how_many_look_wrong_and_the_exact_next_commands(tmp_path):
    folder = tmp_path / "my audit"  # a path that needs quoting in a shell
    path = make_digits_report(folder)
    text = write_html_report(read_report(path), tmp_path / "r.html").read_text(encoding="utf-8")
    todo = _visible(re.search(r'<div class="todo" id="todo">(.*?)</div>', text, re.S).group(1))
    assert "26 of 80 labels (32.5%) look wrong." in todo
    assert "The audit fixed 12 by relabeling them and could not decide on 14: those need a person" in todo
    assert "(14 to decide, 12 fixes to check)" in todo
    rep, dec = f"'{path}'", f"'{folder / 'report.decisions.csv'}'"
    assert f"labelclean review {rep}" in todo
    assert f"labelclean apply {rep} {dec} --out final.csv" in todo
    assert f"labelclean finetune {rep} --decisions {dec} --out model/" in todo
    # first thing in the page, before any figure or table
    assert text.index('id="todo"') < min(text.index("<img"), text.index("<table"))
    # plain words, not the method's jargon, in what a reader sees
    seen = _visible(text)
    for jargon in ("max-repeating", "pseudo label", " T ", "out of T,", "estimated noise"):
        assert jargon not in seen, jargon
    for code, name in (("CS", "clean, learnt early"), ("NS", "likely wrong"), ("NHI", "unclear, given label unlikely")):
        assert re.search(rf"<b>{code}</b> {name}", text), code
    header = re.search(r"<thead><tr><th></th>(.*?)</tr></thead>", text).group(1)
    assert ">network&#39;s guess</th>" in header and 'data-col="pseudo_label"' in header


def test_a_report_where_nothing_looks_wrong_says_so(digits, tmp_path, monkeypatch):
    from labelclean.report import html, sections

    monkeypatch.setattr(html, "SECTIONS", sections.SECTIONS[:1])  # the summary alone: fast
    rep = read_report(digits)
    f = rep.frame
    f["action"], f["clean_label"] = "keep", f["given_label"]
    text = write_html_report(rep, tmp_path / "r.html").read_text(encoding="utf-8")
    todo = _visible(re.search(r'<div class="todo" id="todo">(.*?)</div>', text, re.S).group(1))
    assert "No label looks wrong to the audit: it kept all 80." in todo and "labelclean review" in todo
    # only unlabeled, one relabel, a guard that kept disputed labels: the sentence follows
    f.loc[:1, "action"], f.loc[:1, "clean_label"] = "unlabel", None
    f["guard"] = None
    f.loc[5:7, "guard"] = "partly_disputed"
    rep.metadata["guard_note"] = "guard: ..."
    todo = _visible(re.search(r'<div class="todo" id="todo">(.*?)</div>', write_html_report(rep, tmp_path / "r2.html").read_text(), re.S).group(1))
    assert "2 of 80 labels (2.5%) look wrong. The audit relabeled none and could not decide on 2: those need a person" in todo
    assert "3 kept labels are disputed by the model and worth a look too." in todo
    assert "decide in the browser (2 to decide):" in todo
    f.loc[2, "action"], f.loc[2, "clean_label"] = "relabel", "9"
    todo = _visible(re.search(r'<div class="todo" id="todo">(.*?)</div>', write_html_report(rep, tmp_path / "r3.html").read_text(), re.S).group(1))
    assert "The audit fixed 1 by relabeling it and could not decide on 2" in todo
    assert "(2 to decide, 1 fix to check)" in todo


def test_given_label_is_coloured_by_what_the_audit_did(page):
    _, text = page
    body = re.search(r'<tbody id="tbody">(.*?)</tbody>', text, re.S).group(1)
    rows = json.loads(Page(text).scripts["rows"])[:50]
    got = re.findall(r'<td class="text given given-(\w+)">', body)
    assert got == [r["action"] for r in rows] and {"keep", "relabel", "unlabel"} <= set(got)
    from labelclean.report.templating import asset

    css = asset("report.css")
    assert ".given-keep{color:#212529}" in css and ".given-relabel{text-decoration:line-through}" in css
    js = asset("report.js")
    assert "d.className += ' given-' + r.action" in js  # the pages the script draws, too


def test_tiles_carry_a_larger_copy_within_a_byte_budget(tmp_path, monkeypatch):
    from PIL import Image

    from labelclean.report import html, sections

    grids = [s for s in sections.SECTIONS if s.id in ("relabeled", "unlabeled")]
    monkeypatch.setattr(html, "SECTIONS", grids)  # the tiles alone: no figure to draw
    path = make_digits_report(tmp_path)
    rep = read_report(path)
    rng = np.random.default_rng(0)
    for rel in rep.frame["path"]:  # photo-sized images: the 64 px tiles are shrunk copies
        Image.fromarray(rng.integers(0, 255, (200, 160, 3), dtype=np.uint8)).save(rep.image_root / rel)
    text = write_html_report(rep, tmp_path / "r.html").read_text(encoding="utf-8")
    fulls = re.findall(r'<img src="data:[^"]+" width="\d+" height="\d+" alt="[^"]*" data-path="[^"]*" data-full="(data:image/[^"]+)"', text)
    assert len(fulls) == 12 + 14  # every relabeled and unlabeled tile
    import base64
    import io

    big = Image.open(io.BytesIO(base64.b64decode(fulls[0].split(",", 1)[1])))
    assert max(big.size) == 200  # never enlarged past the source, here under ZOOM_SIZE
    monkeypatch.setattr(html, "ZOOM_BUDGET", 100_000)
    text = write_html_report(rep, tmp_path / "r2.html").read_text(encoding="utf-8")
    kept = text.count("data-full=")
    assert 0 < kept < 26
    assert f"large views: {26 - kept} images open at thumbnail size" in text
    # sources no larger than their tile (the digits) need no copy: the page enlarges the tile
    assert "data-full=" not in write_html_report(read_report(make_digits_report(tmp_path / "d")), tmp_path / "d.html").read_text()
