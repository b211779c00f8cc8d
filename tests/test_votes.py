"""Crowd votes in a manifest (labelclean.data.votes): long and wide layouts, every bad input."""

import logging

import numpy as np
import pandas as pd
import pytest
from test_manifest import _csv as write_csv
from test_manifest import _img

from labelclean.data.manifest import read_manifest
from labelclean.errors import ManifestError


def _csv(tmp_path, rows, header="path,annotator,label", name="votes.csv"):
    return write_csv(tmp_path, rows, name=name, header=header)


@pytest.fixture
def imgs(tmp_path):
    for name in "abcd":
        _img(tmp_path / "img" / f"{name}.png")
    return tmp_path / "img"


LONG = [
    "a.png,ann,cat",
    "a.png,bob,cat",
    "a.png,cy,dog",
    "b.png,ann,dog",
    "b.png,bob,dog",
    "c.png,cy,bird",  # one vote is fine; bird is a class even though only one vote says so
]


def test_long_layout_reads_every_vote_and_starts_from_the_consensus(tmp_path, imgs):
    m = read_manifest(imgs, _csv(tmp_path, LONG))
    assert m.paths == ["a.png", "b.png", "c.png"]
    assert m.class_names == ["bird", "cat", "dog"]
    assert [m.class_names[k] for k in m.given_labels] == ["cat", "dog", "bird"]
    assert m.rows.tolist() == [0, 3, 5]  # each image's first vote: where() names its line
    v = m.votes
    assert len(v) == 6 and v.annotator_names == ("ann", "bob", "cy")
    assert v.per_sample().tolist() == [3, 2, 1]
    assert v.counts()[0].tolist() == [0, 2, 1]


def test_long_layout_from_parquet_with_custom_columns(tmp_path, imgs):
    p = tmp_path / "v.parquet"
    frame = pd.DataFrame([r.split(",") for r in LONG], columns=["file", "rater", "y"])
    frame.to_parquet(p)
    m = read_manifest(imgs, p, path_column="file", label_column="y", annotator_column="rater")
    assert len(m.votes) == 6 and m.votes.annotator_names == ("ann", "bob", "cy")


def test_an_annotator_column_named_explicitly_must_exist(tmp_path, imgs):
    with pytest.raises(ManifestError, match="no annotator column 'rater'; found path, annotator"):
        read_manifest(imgs, _csv(tmp_path, LONG), annotator_column="rater")


def test_without_an_annotator_column_a_manifest_is_single_label(tmp_path, imgs):
    m = read_manifest(imgs, _csv(tmp_path, ["a.png,cat", "b.png,dog"], header="path,label"))
    assert m.votes is None


def test_wide_layout_with_missing_votes(tmp_path, imgs):
    p = _csv(tmp_path, ["a.png,cat,cat,dog", "b.png,dog,,dog", "c.png,,bird,"], header="path,a1,a2,a3")
    m = read_manifest(imgs, p, label_column=["a1", "a2", "a3"])
    assert m.paths == ["a.png", "b.png", "c.png"]
    assert m.votes.annotator_names == ("a1", "a2", "a3")
    assert m.votes.per_sample().tolist() == [3, 2, 1]
    assert [m.class_names[k] for k in m.given_labels] == ["cat", "dog", "bird"]


def test_wide_layout_errors(tmp_path, imgs):
    p = _csv(tmp_path, ["a.png,cat,dog", "b.png,,"], header="path,a1,a2")
    with pytest.raises(ManifestError, match=r"votes.csv line 3: no vote for 'b.png' in a1, a2"):
        read_manifest(imgs, p, label_column=["a1", "a2"])
    with pytest.raises(ManifestError, match=r"missing column\(s\) a3; found path, a1, a2"):
        read_manifest(imgs, p, label_column=["a1", "a3"])
    with pytest.raises(ManifestError, match="--label-column a1 given more than once"):
        read_manifest(imgs, p, label_column=["a1", "a1"])
    with pytest.raises(ManifestError, match="two different layouts"):
        read_manifest(imgs, p, label_column=["a1", "a2"], annotator_column="annotator")


def test_wide_layout_same_image_twice_is_the_same_annotator_twice(tmp_path, imgs):
    p = _csv(tmp_path, ["a.png,cat,dog", "b.png,dog,dog", "./a.png,bird,dog"], header="path,a1,a2")
    with pytest.raises(ManifestError, match="annotator 'a1' votes 'cat' for 'a.png' on line 2 and 'bird' on line 4"):
        read_manifest(imgs, p, label_column=["a1", "a2"])


def test_same_annotator_twice_with_different_labels_names_both_lines(tmp_path, imgs):
    rows = ["a.png,ann,cat", "b.png,ann,dog", "./a.png,ann,dog"]
    with pytest.raises(
        ManifestError, match="annotator 'ann' votes 'cat' for 'a.png' on line 2 and 'dog' on line 4; keep one"
    ):
        read_manifest(imgs, _csv(tmp_path, rows))


def test_same_annotator_twice_with_the_same_label_is_dropped_with_a_warning(tmp_path, imgs, caplog):
    rows = ["a.png,ann,cat", "b.png,ann,dog", "a.png,ann,cat", "a.png,bob,cat"]
    with caplog.at_level(logging.WARNING):
        m = read_manifest(imgs, _csv(tmp_path, rows))
    assert len(m.votes) == 3 and "1 repeated vote(s)" in caplog.text and "line 4" in caplog.text


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (",ann,cat", "votes.csv line 3: empty path"),
        ("b.png, ,cat", "votes.csv line 3: empty annotator for 'b.png'"),
        ("b.png,ann,", "votes.csv line 3: empty label for 'b.png'"),
        ("../x.png,ann,cat", "votes.csv line 3: path '../x.png' points outside the image folder"),
    ],
)
def test_bad_vote_rows_name_the_line(tmp_path, imgs, row, message):
    with pytest.raises(ManifestError, match=message):
        read_manifest(imgs, _csv(tmp_path, ["a.png,ann,cat", row]))


def test_a_vote_manifest_needs_two_classes_and_rows(tmp_path, imgs):
    with pytest.raises(ManifestError, match="only one class"):
        read_manifest(imgs, _csv(tmp_path, ["a.png,ann,cat", "b.png,bob,cat"]))
    with pytest.raises(ManifestError, match="no rows"):
        read_manifest(imgs, _csv(tmp_path, []))


def test_paths_are_normalised_so_one_image_collects_all_its_votes(tmp_path, imgs):
    m = read_manifest(imgs, _csv(tmp_path, ["./a.png,ann,cat", "a.png,bob,cat", "b.png,ann,dog"]))
    assert m.paths == ["a.png", "b.png"] and m.votes.per_sample().tolist() == [2, 1]


def test_subset_and_fingerprint_follow_the_votes(tmp_path, imgs):
    m = read_manifest(imgs, _csv(tmp_path, LONG))
    sub = m.subset(np.array([True, False, True]))
    assert sub.paths == ["a.png", "c.png"] and sub.votes.n_samples == 2
    assert sub.votes.per_sample().tolist() == [3, 1]
    assert sub.votes.sample.max() == 1
    other = read_manifest(imgs, _csv(tmp_path, [*LONG[:-1], "c.png,ann,bird"], name="v2.csv"))
    assert other.given_labels.tolist() == m.given_labels.tolist()
    assert other.fingerprint() != m.fingerprint()  # same consensus, different votes
