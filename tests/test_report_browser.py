"""The report page (`labelclean report --html`) in a real headless Chromium, at 1,280 px.

Issue 39.5: what to do is on the first screen, an in-page link never lands under the sticky
bar, a thumbnail opens large, a kept label is not shown as an error, long class names do not
widen the page. Needs Debian's chromium and chromium-driver and selenium, like
test_review_browser.py (skipped, saying why, where they are missing).
"""

import pytest
from test_report_html import make_digits_report
from test_review_browser import chromium, wait_for  # skips this module without selenium/chromium

from labelclean.report.html import write_html_report
from labelclean.report.parquet import read_report

LONG = [
    "airplane_with_a_very_long_name_indeed", "automobile", "bird", "cat", "deer", "dog", "frog",
    "horse", "ship", "truck_and_trailer_with_a_long_name",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    page = write_html_report(
        read_report(make_digits_report(folder, class_names=LONG, guard=True)), folder / "report.html"
    )
    driver = chromium(folder / "profile")
    driver.set_window_size(1280, 800)
    yield page, driver
    driver.quit()


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def test_summary_and_next_command_are_on_the_first_screen(browser):
    from selenium.webdriver.common.by import By

    page, driver = browser
    driver.get(page.as_uri())
    assert js(driver, "return window.innerWidth") <= 1280
    todo = driver.find_element(By.ID, "todo")
    assert "26 of 80 labels (32.5%) look wrong." in todo.text
    commands = todo.find_elements(By.CSS_SELECTOR, "code.cmd")
    assert commands[0].text == f"labelclean review {page.with_suffix('.parquet')}"
    height = js(driver, "return window.innerHeight")
    for el in [todo, *commands]:  # wholly inside the first screen, not scrolled to
        rect = js(driver, "return arguments[0].getBoundingClientRect().toJSON()", el)
        assert el.is_displayed() and 0 <= rect["top"] and rect["bottom"] <= height, el.text
    # long class names neither widen the page nor push anything off it
    assert js(driver, "return document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_an_in_page_link_never_lands_under_the_sticky_bar(browser):
    from selenium.webdriver.common.by import By

    page, driver = browser
    driver.get(page.as_uri())
    links = driver.find_elements(By.CSS_SELECTOR, "nav a")
    assert len(links) >= 6
    for k in range(len(links)):
        link = driver.find_elements(By.CSS_SELECTOR, "nav a")[k]
        target = link.get_attribute("href").split("#")[1]
        link.click()
        wait_for(driver, lambda d, t=target: d.execute_script("return location.hash") == "#" + t)
        top, bar = js(
            driver,
            "const h = document.getElementById(arguments[0]).querySelector('h2');"
            "return [h.getBoundingClientRect().top, document.querySelector('nav').getBoundingClientRect().bottom];",
            target,
        )
        assert top >= bar, f"#{target}: heading at {top}, bar ends at {bar}"
        if target == "samples":  # the bar is where the link put the page, not off screen
            assert top < bar + 40
    # a sticky table header sits below the bar, too
    js(driver, "document.querySelector('#tbody tr:nth-child(20)').scrollIntoView()")
    th, bar = js(
        driver,
        "return [document.querySelector('#samples th[data-col]').getBoundingClientRect().top,"
        " document.querySelector('nav').getBoundingClientRect().bottom];",
    )
    assert th >= bar - 1
    # a heatmap cell scrolls to the table it filters: its heading below the bar too
    cell = driver.find_element(By.CSS_SELECTOR, "#heat td.pick")
    js(driver, "arguments[0].scrollIntoView({block: 'center'})", cell)
    cell.click()
    top, bar = js(
        driver,
        "return [document.querySelector('#samples h2').getBoundingClientRect().top,"
        " document.querySelector('nav').getBoundingClientRect().bottom];",
    )
    assert bar <= top < bar + 40


def test_a_thumbnail_opens_large_and_closes(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page, driver = browser
    driver.get(page.as_uri() + "#relabeled")
    tile = driver.find_element(By.CSS_SELECTOR, "#relabeled .tile img")
    assert tile.size["width"] <= 64
    tile.click()
    zoom = driver.find_element(By.ID, "zoom")
    wait_for(driver, lambda d: zoom.get_attribute("open") is not None)
    big = zoom.find_element(By.TAG_NAME, "img")
    wait_for(driver, lambda d: big.size["width"] >= 320)
    assert big.get_attribute("src") == tile.get_attribute("src")  # an 8 px digit: enlarged whole
    assert tile.get_attribute("data-path") in zoom.text
    zoom.send_keys(Keys.ESCAPE)
    wait_for(driver, lambda d: zoom.get_attribute("open") is None)
    # the table's thumbnails open too
    driver.find_element(By.CSS_SELECTOR, "#tbody img").click()
    wait_for(driver, lambda d: zoom.get_attribute("open") is not None)
    zoom.send_keys(Keys.ESCAPE)
    # a tile with a larger copy (a photo's) opens that copy, at its size
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (300, 200), "orange").save(buf, format="PNG")
    full = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    js(driver, "arguments[0].dataset.full = arguments[1]", tile, full)
    wait_for(driver, lambda d: zoom.get_attribute("open") is None)
    js(driver, "arguments[0].scrollIntoView({block: 'center'})", tile)
    tile.click()
    wait_for(driver, lambda d: big.get_attribute("src") == full and big.size["width"] == 320)
    assert big.size["height"] == 213


def test_a_kept_given_label_is_not_coloured_as_an_error(browser):
    page, driver = browser
    driver.get(page.as_uri())
    style = (
        "const c = getComputedStyle(document.querySelector(arguments[0]));"
        "return [c.color, c.textDecorationLine];"
    )
    red = "rgb(201, 42, 42)"
    keep = js(driver, style, "#tbody td.given-keep")
    relabel = js(driver, style, "#tbody td.given-relabel")
    unlabel = js(driver, style, "#tbody td.given-unlabel")
    assert keep[0] != red and keep[1] == "none"
    assert relabel[1] == "line-through"
    assert unlabel[0] not in (red, keep[0]) and unlabel[1] == "none"
    tile = js(driver, style, "#relabeled .tile .given")
    assert tile[1] == "line-through"
