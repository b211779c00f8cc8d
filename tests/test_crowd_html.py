"""The crowd on the HTML page and in the review app: the Annotators section, the cards' votes."""

import dataclasses
import re

import numpy as np
import pytest
from PIL import Image
from test_crowd_report import _votes
from test_report_html import Page
from test_report_parquet import NAMES, columns, metadata

from labelclean.crowd.report import finish_crowd_audit
from labelclean.errors import ReportError
from labelclean.fgcm.audit import AuditResult
from labelclean.report.annotators import annotators_path, read_annotators
from labelclean.report.crowd import annotator_details, vote_rows, vote_tally
from labelclean.report.html import write_html_report
from labelclean.report.parquet import build_report_table, read_report
from labelclean.report.thumbs import Thumbnails


def _crowd_report(tmp_path, names=("ann", "bob", "cy")):
    """The five-image crowd report of test_crowd_report, over real images; its path."""
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / f"img/{i}.png")
    cols = columns()
    cols["given_label"] = np.array([0, 1, 2, 0, 1])
    table = build_report_table(cols, class_names=NAMES)
    meta = metadata(manifest_fingerprint="abc", image_root=str(root))
    votes = dataclasses.replace(_votes(), annotator_names=tuple(names))
    result = finish_crowd_audit(AuditResult(table=table, metadata=meta), votes, np.full((5, 3), 1 / 3))
    return result.write(tmp_path / "report.parquet")


def _section(text: str, section: str) -> str:
    return re.search(rf'<section id="{section}">(.*?)</section>', text, re.S).group(1)


def test_the_page_ranks_the_annotators_with_their_votes_and_the_split_images(tmp_path):
    path = _crowd_report(tmp_path)
    rep = read_report(path)
    text = write_html_report(rep, tmp_path / "r.html").read_text()
    assert Page(text).stack == []
    assert '<a href="#annotators">Annotators</a>' in text
    part = _section(text, "annotators")
    ranked = read_annotators(path, rep.metadata)["annotator"].tolist()
    table = re.search(r'id="annotator-table">(.*?)</table>', part, re.S).group(1)
    assert re.findall(r'<td class="text">(\w+)</td>', table) == ranked
    votes = vote_rows(rep.frame)
    for rank, name in enumerate(ranked, start=1):
        block = re.search(rf'<details id="ann-{rank}" .*?</details>', part, re.S).group(0)
        assert f"</b> {name}</summary>" in block
        counts = [int(n) for n in re.findall(r'title="final [^"]*: (\d+)"', block)]
        assert sum(counts) == ((votes.annotator == name) & (votes.final != "")).sum()
        assert block.count("<tr><td><img") == (votes.annotator == name).sum()  # <= 6: all
    assert '<td class="text bad">dog</td><td class="text suggested">fox</td>' in part
    assert not re.search(r'class="text bad">(\w+)</td><td class="text suggested">\1<', part)
    # the crowd split on images 1 (dog/fox) and 4 (dog, dog, fox); 4 is unlabeled
    grid = part.split("Where the crowd split")[1]
    assert grid.count('<figure class="tile"') == 2
    assert "dog 2, fox 1" in grid and "dog 1, fox 1" in grid
    assert 'title="votes: ann:dog bob:fox"' in grid


def test_annotator_ids_are_escaped_and_single_label_reports_have_no_section(tmp_path):
    path = _crowd_report(tmp_path, names=("<b>x</b>", "bob", "cy"))
    text = write_html_report(read_report(path), tmp_path / "r.html").read_text()
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text
    single = tmp_path / "single"
    single.mkdir()
    from test_report_parquet import write

    plain = write_html_report(read_report(write(single)), single / "r.html").read_text()
    assert 'id="annotators"' not in plain and "#annotators" not in plain


def test_without_its_annotators_table_the_page_says_so_and_a_stale_one_is_refused(tmp_path):
    path = _crowd_report(tmp_path)
    side = annotators_path(path)
    side.rename(tmp_path / "away.parquet")
    part = _section(write_html_report(read_report(path), tmp_path / "a.html").read_text(), "annotators")
    assert "No annotators table beside the report (report.annotators.parquet)" in part
    assert 'id="annotator-table"' not in part and "Where the crowd split" in part
    (tmp_path / "away.parquet").rename(side)
    rep = read_report(path)
    rep.metadata["manifest_fingerprint"] = "another"
    with pytest.raises(ReportError, match="belongs to another audit"):
        write_html_report(rep, tmp_path / "b.html")
    assert not (tmp_path / "b.html").exists()


def test_many_annotators_detail_the_most_and_least_trusted(tmp_path):
    path = _crowd_report(tmp_path)
    rep = read_report(path)
    table = read_annotators(path, rep.metadata)
    thumbs = Thumbnails(rep.image_root, 40)
    details, note = annotator_details(rep.frame, table, NAMES, thumbs=thumbs, max_details=2)
    assert [d["rank"] for d in details] == [1, 3]
    assert note == "annotator details: the 1 most and 1 least trusted of 3"
    details, note = annotator_details(rep.frame, table, NAMES, thumbs=thumbs, top=1)
    assert note == "" and all(len(d["doubtful"]) == 1 for d in details)
    assert all(d["doubtful"][0]["src"].startswith("data:image/png") for d in details)


def test_vote_tally_counts_most_voted_first():
    votes = [{"label": x} for x in ("fox", "dog", "fox", "cat")]
    assert vote_tally(votes) == "fox 2, cat 1, dog 1"


def test_the_review_cards_carry_the_votes_of_a_crowd_report(tmp_path):
    from test_report_parquet import write

    from labelclean.review.decisions import report_fingerprint
    from labelclean.review.state import ReviewState

    path = _crowd_report(tmp_path)
    rep = read_report(path)
    state = ReviewState(rep, tmp_path / "d.csv", fingerprint=report_fingerprint(path))
    rows = state.rows("queue")
    assert state.meta()["has_votes"] is True
    frame = rep.frame.iloc[rows["id"]]
    assert rows["n_votes"] == frame["n_votes"].tolist()
    assert np.allclose(rows["agreement"], frame["agreement"], atol=1e-3)
    by_path = dict(zip(rows["path"], zip(rows["votes"], rows["tally"])))
    assert by_path["img/1.png"] == ("ann:dog bob:fox", "dog 1, fox 1")
    assert by_path["img/4.png"] == ("ann:dog bob:dog cy:fox", "dog 2, fox 1")
    single = tmp_path / "single"
    single.mkdir()
    plain = write(single)
    state = ReviewState(read_report(plain), single / "d.csv", fingerprint=report_fingerprint(plain))
    assert state.meta()["has_votes"] is False and "votes" not in state.rows("queue")
