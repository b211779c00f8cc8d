"""The review in headless Chromium: keys never skip a card, the grid and its bulk, the filters,
a heatmap cell accepted whole, undo of a bulk, the layout at 1,280 px with long class names.

The server runs in this process (so a test can make its saves slow or its disk full); the
page is driven as a user drives it. Skipped, as test_review_browser is, without Chromium.
"""

import errno
import os
import threading
import time

import pandas as pd
import pytest
from test_report_html import make_digits_report
from test_review_browser import CHROMIUM, DRIVER, FLAGS, wait_for
from test_review_suggestion import disputed_report

from labelclean.report.parquet import read_report
from labelclean.review.decisions import load_decisions, report_fingerprint
from labelclean.review.server import ReviewServer
from labelclean.review.state import ReviewState

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)
LONG = ["airplane_with_a_very_long_name_indeed", "automobile", "bird", "cat", "deer", "dog",
        "frog", "horse", "parachute_and_paraglider", "truck_and_trailer_long"]


class App:
    """A review server on a report, a browser on it, and what the decisions file says."""

    def __init__(self, report, profile, width=1400):
        from selenium.webdriver.chrome.service import Service

        self.report = report
        self.frame = read_report(report).frame
        self.state = ReviewState(read_report(report), report.with_suffix(".decisions.csv"),
                                 fingerprint=report_fingerprint(report))
        self.server = ReviewServer(self.state, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        options = webdriver.ChromeOptions()
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={width},1000")
        options.binary_location = CHROMIUM
        self.driver = webdriver.Chrome(options=options, service=Service(DRIVER))
        self.driver.get(self.server.url)
        wait_for(self.driver, lambda d: self.text("path"))

    def close(self):
        self.driver.quit()
        self.server.shutdown()
        self.server.server_close()

    def text(self, id_):
        return "".join(e.text for e in self.driver.find_elements("id", id_))

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def decisions(self):
        """path -> (decision, label) as the file has them now."""
        if not self.state.path.exists():
            return {}
        got = load_decisions(self.state.path, read_report(self.report),
                             fingerprint=report_fingerprint(self.report)).by_path
        return {p: (d.decision, d.label) for p, d in got.items()}

    def rows(self):
        """The file's data rows (not comments, not the header)."""
        if not self.state.path.exists():
            return []
        return pd.read_csv(self.state.path, comment="#", dtype=str, keep_default_na=False).values.tolist()

    def settled(self):
        """Every decision taken in the page has been saved."""
        wait_for(self.driver, lambda d: self.text("saved").startswith("saved to") or "NOT SAVED" in self.text("saved"))

    def select(self, id_, value):
        from selenium.webdriver.support.ui import Select

        Select(self.driver.find_element("id", id_)).select_by_value(value)

    def matching(self):
        return int(self.text("matching").split()[0])

    def queue(self):
        """The report rows of the queue, in its order."""
        return [int(i) for i in self.state.queue]


@pytest.fixture
def app(tmp_path):
    made = []

    def start(report=None, width=1400):
        a = App(report or disputed_report(tmp_path), tmp_path / f"profile{len(made)}", width)
        made.append(a)
        return a

    yield start
    for a in made:
        a.close()


def slow_saves(monkeypatch, seconds):
    """Each write of the decisions file takes ``seconds`` (a slow disk, a busy machine)."""
    import labelclean.review.decisions as decisions_module

    real = decisions_module.atomic_write_text

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(decisions_module, "atomic_write_text", slow)


def test_30_keys_30_ms_apart_make_30_decisions_none_skipped(app, monkeypatch):
    """Faster than the save round trip (120 ms here): each key decides the card it was
    pressed on, in order, and the 30 cards are the first 30 of the queue."""
    slow_saves(monkeypatch, 0.12)
    a = app()
    keys = ["a", "k", "d", "a", "k"] * 6
    a.js("""const keys = arguments[0]; let i = 0;
      const t = setInterval(() => { document.dispatchEvent(new KeyboardEvent('keydown', {key: keys[i], bubbles: true}));
        if (++i === keys.length) clearInterval(t); }, 30);""", keys)
    wait_for(a.driver, lambda d: len(a.decisions()) >= 30 or "decided 30 /" in a.text("progress"), timeout=30)
    a.settled()
    got = a.decisions()
    queue = [a.state.paths[i] for i in a.queue()[:30]]
    f = a.frame.set_index("path")
    sugg = dict(zip(a.state.paths, a.state.suggested))
    want = {}
    for p, k in zip(queue, keys):
        want[p] = {"a": ("accept", sugg[p]), "k": ("keep", f.loc[p, "given_label"]), "d": ("drop", None)}[k]
    assert got == want
    assert len(a.rows()) == 30
    assert "decided 30 / 43" in a.text("progress")


def test_accepting_a_heatmap_cell_writes_one_decision_per_image_of_the_cell(app):
    from selenium.webdriver.common.by import By

    a = app()
    cells = a.driver.find_elements(By.CSS_SELECTOR, "#heat td.pick")
    counts = [int(c.text) for c in cells]
    cell = cells[counts.index(max(counts))]
    given, other = cell.get_attribute("data-given"), cell.get_attribute("data-other")
    cell.click()
    queue = a.frame.iloc[a.queue()]
    want = set(queue.loc[(queue["given_label"] == given) & (a.state.suggested[a.queue()] == other), "path"])
    assert len(want) == max(counts) >= 2
    wait_for(a.driver, lambda d: f"accept the {len(want)} undecided" in a.text("accept-cell"))
    a.driver.find_element(By.ID, "accept-cell").click()
    a.settled()
    assert a.decisions() == {p: ("accept", other) for p in want}
    assert sorted(r[0] for r in a.rows()) == sorted(want)  # exactly one row per image
    assert "every image of this cell is decided" in a.text("accept-cell")
    a.driver.find_element(By.TAG_NAME, "body").send_keys("u")  # one step undoes the whole cell
    wait_for(a.driver, lambda d: a.decisions() == {} and a.text("saved").startswith("saved to"))


def test_the_grid_selects_by_click_shift_click_and_all_and_undoes_a_bulk_at_once(app):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    a = app()
    a.driver.find_element(By.ID, "view-grid").click()
    tiles = lambda: a.driver.find_elements(By.CSS_SELECTOR, "#grid .tile")  # noqa: E731
    wait_for(a.driver, lambda d: len(tiles()) == 43)
    ids = [int(t.get_attribute("data-id")) for t in tiles()]
    assert ids == a.queue()  # the grid is the filtered queue, in its order
    tiles()[1].click()
    ActionChains(a.driver).key_down(Keys.SHIFT).click(tiles()[5]).key_up(Keys.SHIFT).perform()
    tiles()[9].click()
    tiles()[3].click()  # a click on a selected tile unselects it
    chosen = [ids[i] for i in (1, 2, 4, 5, 9)]
    wait_for(a.driver, lambda d: a.text("selected-count") == "5 selected")
    a.select("bulk-label", "7")
    a.driver.find_element(By.ID, "bulk-relabel").click()
    a.settled()
    f = a.frame
    want = {}
    for i in chosen:
        p, g, s = a.state.paths[i], f.loc[i, "given_label"], a.state.suggested[i]
        want[p] = ("accept", "7") if s == "7" else ("keep", "7") if g == "7" else ("relabel", "7")
    assert a.decisions() == want
    a.driver.find_element(By.TAG_NAME, "body").send_keys("k")  # keys act on the selection
    a.settled()
    assert a.decisions() == {a.state.paths[i]: ("keep", f.loc[i, "given_label"]) for i in chosen}
    a.driver.find_element(By.ID, "bulk-undo").click()  # back to the relabel, all five at once
    a.settled()
    assert a.decisions() == want
    a.driver.find_element(By.TAG_NAME, "body").send_keys("u")  # and to nothing
    a.settled()
    assert a.decisions() == {} and a.rows() == []
    a.driver.find_element(By.ID, "select-all").click()
    assert a.text("selected-count") == "43 selected"
    a.driver.find_element(By.ID, "bulk-accept").click()
    a.settled()
    assert len(a.decisions()) == len(a.rows()) == 43
    tiles()[0].click()  # double-click opens the card
    ActionChains(a.driver).double_click(tiles()[0]).perform()
    wait_for(a.driver, lambda d: d.find_element(By.ID, "card").is_displayed())
    assert a.text("path") == a.state.paths[ids[0]]


def test_every_filter_narrows_the_queue_as_the_report_says(app):
    from selenium.webdriver.common.by import By

    a = app()
    q = a.frame.iloc[a.queue()].assign(suggested=a.state.suggested[a.queue()])
    disputed = (q["action"] == "keep") & (q["pseudo_label"] != q["given_label"])
    cases = [
        ("f-action", "flagged", q["action"].isin(["relabel", "unlabel"])),
        ("f-action", "relabel", q["action"] == "relabel"),
        ("f-action", "unlabel", q["action"] == "unlabel"),
        ("f-action", "disputed", disputed),
        ("f-action", "keep", q["action"] == "keep"),
        ("f-cluster", "NHI", q["cluster"] == "NHI"),
        ("f-cluster", "CS", q["cluster"] == "CS"),  # the disputed CS rows are in the queue
        ("f-given", "3", q["given_label"] == "3"),
    ]
    assert a.matching() == len(q) == 43
    for select, value, mask in cases:
        a.select(select, value)
        wait_for(a.driver, lambda d, m=mask: a.matching() == int(m.sum()))
        assert a.text("path") in set(q.loc[mask, "path"])  # the card shows one of them
        a.driver.find_element(By.ID, "f-clear").click()
    # a class pair: given and suggested together
    a.select("f-given", "4")
    a.select("f-suggested", "5")
    pair = (q["given_label"] == "4") & (q["suggested"] == "5")
    wait_for(a.driver, lambda d: a.matching() == int(pair.sum()))
    a.driver.find_element(By.ID, "f-clear").click()
    # decided / undecided
    a.driver.find_element(By.TAG_NAME, "body").send_keys("a")
    a.driver.find_element(By.TAG_NAME, "body").send_keys("a")
    a.settled()
    a.select("f-decided", "decided")
    wait_for(a.driver, lambda d: a.matching() == 2)
    a.select("f-decided", "undecided")
    wait_for(a.driver, lambda d: a.matching() == 41)
    # the filters hold in the grid too: its tiles are the filtered samples
    a.driver.find_element(By.ID, "f-clear").click()
    a.select("f-action", "disputed")
    a.driver.find_element(By.ID, "view-grid").click()
    want = [i for i, d in zip(a.queue(), disputed) if d]
    wait_for(a.driver, lambda d: [int(t.get_attribute("data-id")) for t in
                                  d.find_elements(By.CSS_SELECTOR, "#grid .tile")] == want)


def test_a_bulk_that_cannot_be_saved_is_shown_and_not_taken(app, monkeypatch):
    from selenium.webdriver.common.by import By

    a = app()
    a.driver.find_element(By.TAG_NAME, "body").send_keys("k")
    a.settled()
    before = a.state.path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    a.driver.find_element(By.ID, "view-grid").click()
    a.driver.find_element(By.ID, "select-all").click()
    a.driver.find_element(By.ID, "bulk-accept").click()
    wait_for(a.driver, lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "NOT SAVED" in a.text("error") and "no space left on the device" in a.text("error")
    assert "43 decisions were not taken" in a.text("error")
    assert a.state.path.read_bytes() == before
    assert "decided 1 / 43" in a.text("progress")  # the page shows what the file has
    monkeypatch.undo()
    a.driver.find_element(By.ID, "bulk-accept").click()  # the disk has room again
    a.settled()
    assert len(a.decisions()) == 43 and not a.driver.find_element(By.ID, "error").is_displayed()


@pytest.mark.parametrize("width", [1280, 1920])
def test_the_layout_holds_with_long_class_names(app, tmp_path, width):
    """No horizontal scroll, the card at a sensible width, every class name whole on its
    button; 0 picks the tenth class."""
    from selenium.webdriver.common.by import By

    a = app(make_digits_report(tmp_path / "long", class_names=LONG, guard=True), width=width)
    assert a.js("return document.documentElement.scrollWidth <= window.innerWidth")
    assert a.js("return document.getElementById('card').getBoundingClientRect().width") >= 700
    names = a.js("""return [...document.querySelectorAll('#classes button .name')].map(e =>
      [e.textContent, e.scrollWidth <= e.clientWidth + 1, e.getBoundingClientRect().width])""")
    assert [n for n, _, _ in names] == LONG
    assert all(whole for _, whole, _ in names), names
    assert a.js("return [...document.querySelectorAll('#classes button')].every(b => b.scrollWidth <= b.clientWidth + 1)")
    # the heatmap scrolls inside the sidebar, never over the card; its names keep some letters
    side = a.js("return document.querySelector('.side').getBoundingClientRect().right")
    assert side <= a.js("return document.getElementById('card').getBoundingClientRect().left")
    # a heatmap name is whole, or cut after some 9 letters at least (its whole name on hover)
    assert a.js("""return [...document.querySelectorAll('#heat th .name')].every(e =>
      e.scrollWidth <= e.clientWidth + 1 || e.clientWidth >= 60)""")
    a.driver.find_element(By.ID, "view-grid").click()
    wait_for(a.driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#grid .tile"))
    assert a.js("return document.documentElement.scrollWidth <= window.innerWidth")
    assert a.js("return [...document.querySelectorAll('#grid .tile')].every(t => t.scrollWidth <= t.clientWidth + 1)")
    a.driver.find_element(By.ID, "view-card").click()
    first = a.text("path")
    a.driver.find_element(By.TAG_NAME, "body").send_keys("0")
    a.settled()
    d = a.decisions()[first]
    assert d[1] == LONG[9]
