"""`labelclean review` in a real headless Chromium: keys decide, the file has it, reload resumes.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium
(the ``test`` extra); selenium is pointed at ``/usr/bin/chromedriver`` so it never downloads
a driver. Skipped, saying why, where they are missing.
"""

import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_review_suggestion import audits_labels, disputed_report

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync"
).split()

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)


def chromium(profile: Path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1400,1000")
    options.binary_location = CHROMIUM
    return webdriver.Chrome(options=options, service=Service(DRIVER))


def wait_for(driver, condition, timeout=20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: condition(d))


@pytest.fixture
def review(tmp_path):
    report = disputed_report(tmp_path)  # kept images the network disputes, as audits have
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelclean", "review", str(report), "--port", "0", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("serving at http://127.0.0.1:"), proc.stderr.read() if proc.poll() else line
    driver = chromium(tmp_path / "profile")
    yield report, line.split()[-1], driver, proc
    driver.quit()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def card(driver):
    from selenium.webdriver.common.by import By

    text = lambda i: "".join(e.text for e in driver.find_elements(By.ID, i))  # noqa: E731
    return {"path": text("path"), "given": text("given"), "suggested": text("suggested"),
            "accept": text("accept-label"), "network": text("network")}


def press(driver, key):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def decided(driver):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "progress").text


def test_keyboard_decisions_land_in_the_file_resume_and_apply(review, tmp_path):
    from selenium.webdriver.common.by import By

    report, url, driver, proc = review
    decisions = report.with_suffix(".decisions.csv")
    driver.get(url)
    wait_for(driver, lambda d: d.find_element(By.ID, "path").text)
    assert "decided 0 / 43 to review" in decided(driver)  # 40, and the 3 CS rows the network disputes

    first = card(driver)
    press(driver, "a")  # accept the suggestion
    wait_for(driver, lambda d: "decided 1 / 43" in decided(d) and card(d)["path"] != first["path"])
    second = card(driver)
    press(driver, "k")  # keep the given label
    wait_for(driver, lambda d: "decided 2 / 43" in decided(d) and card(d)["path"] != second["path"])
    third = card(driver)
    other = next(str(c) for c in range(10) if str(c) not in (third["given"], third["suggested"]))
    press(driver, other)  # digits: the key is the class name
    wait_for(driver, lambda d: "decided 3 / 43" in decided(d) and card(d)["path"] != third["path"])
    fourth = card(driver)
    press(driver, "d")
    wait_for(driver, lambda d: "decided 4 / 43" in decided(d))
    press(driver, "u")  # undo the drop: the fourth is undecided again, and on the card
    wait_for(driver, lambda d: "decided 3 / 43" in decided(d) and card(d)["path"] == fourth["path"])
    press(driver, "l")
    wait_for(driver, lambda d: card(d)["path"] == third["path"])
    press(driver, "j")
    wait_for(driver, lambda d: card(d)["path"] == fourth["path"])
    seen = [first, second, third]

    rows = pd.read_csv(decisions, comment="#", dtype=str, keep_default_na=False)
    assert rows[["path", "decision"]].values.tolist() == [
        [first["path"], "accept"], [second["path"], "keep"], [third["path"], "relabel"]]
    assert rows["label"].tolist() == [first["suggested"], second["given"], other]
    assert rows["time"].str.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()

    driver.refresh()  # a reload resumes: the same progress, the first undecided sample
    wait_for(driver, lambda d: d.find_element(By.ID, "path").text)
    assert "decided 3 / 43" in decided(driver) and card(driver)["path"] == fourth["path"]
    # a heatmap cell filters to its given -> suggested pair
    cell = driver.find_element(By.CSS_SELECTOR, "#heat td.pick")
    pair = cell.get_attribute("data-given"), cell.get_attribute("data-other")
    cell.click()
    wait_for(driver, lambda d: (card(d)["given"], card(d)["suggested"]) == pair)

    proc.send_signal(signal.SIGTERM)  # the server stops; everything is already on disk
    proc.communicate(timeout=30)
    final = tmp_path / "final.csv"
    done = subprocess.run(
        [sys.executable, "-m", "labelclean", "apply", str(report), str(decisions), "--out", str(final)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    labels = pd.read_csv(final, dtype=str, keep_default_na=False).set_index("path")["label"]
    assert [labels[c["path"]] for c in seen] == [first["suggested"], second["given"], other]
    assert "3 decided by a reviewer (1 accept, 1 keep, 1 relabel, 0 drop)" in done.stdout


def test_every_card_proposes_the_audits_decision(review):
    """The big suggestion and the `a` button: the audit's label, on all 80 cards; the network's
    guess beside it. Kept images the network disputes are the ones that tell them apart."""
    from selenium.webdriver.common.by import By

    from labelclean.report.parquet import read_report

    report, url, driver, _ = review
    frame = read_report(report).frame
    want, network = audits_labels(frame), dict(zip(frame["path"], frame["pseudo_label"]))
    driver.get(url)
    wait_for(driver, lambda d: d.find_element(By.ID, "path").text)
    driver.find_element(By.ID, "load-more").click()  # the CS images too
    wait_for(driver, lambda d: "of 80 samples match" in d.find_element(By.ID, "matching").text)
    position = lambda d: d.find_element(By.ID, "position").text  # noqa: E731
    while not position(driver).startswith("sample 1 of 80"):
        press(driver, "l")
    seen = {}
    for k in range(1, 81):
        wait_for(driver, lambda d, k=k: position(d).startswith(f"sample {k} of 80"))
        c = card(driver)
        seen[c["path"]] = c
        press(driver, "j")
    assert len(seen) == 80
    assert {p: c["suggested"] for p, c in seen.items()} == {p: want[p] for p in seen}
    assert {p: c["accept"] for p, c in seen.items()} == {p: want[p] for p in seen}
    assert {p: c["network"] for p, c in seen.items()} == {p: network[p] for p in seen}
    disputed = [p for p, c in seen.items() if c["network"] != c["suggested"]]
    assert len(disputed) >= 9  # the kept images the network disputes, at least


def test_a_crowd_reports_cards_show_the_votes_and_filter_the_split_images(tmp_path):
    from selenium.webdriver.common.by import By
    from test_crowd_html import _crowd_report

    report = _crowd_report(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelclean", "review", str(report), "--port", "0", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    url = proc.stdout.readline().strip().split()[-1]
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(url)
        wait_for(driver, lambda d: d.find_element(By.ID, "path").text)
        shown = {}
        for _ in range(4):  # the queue: every image but the CS one
            path = driver.find_element(By.ID, "path").text
            assert driver.find_element(By.ID, "crowd").is_displayed()
            shown[path] = (driver.find_element(By.ID, "tally").text, driver.find_element(By.ID, "votes").text)
            press(driver, "j")
            wait_for(driver, lambda d, p=path: d.find_element(By.ID, "path").text != p or len(shown) == 4)
        assert shown["img/4.png"] == ("dog 2, fox 1", "votes: ann:dog bob:dog cy:fox")
        assert shown["img/3.png"][0] == "cat 2"
        driver.find_element(By.ID, "f-split").click()
        wait_for(driver, lambda d: d.find_element(By.ID, "matching").text.startswith("2 of 4"))
    finally:
        driver.quit()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
