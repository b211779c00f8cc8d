import logging
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labelclean.data.manifest import read_manifest
from labelclean.errors import ManifestError


def _img(path, color=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


def _csv(tmp_path, rows, name="labels.csv", header="path,label"):
    p = tmp_path / name
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    return p


@pytest.fixture
def imgs(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        _img(tmp_path / "img" / name)
    return tmp_path / "img"


def test_csv_manifest_in_order_with_stable_class_names(tmp_path, imgs):
    m = read_manifest(imgs, _csv(tmp_path, ["b.png,dog", "a.png,cat", "c.png,dog"]))
    assert m.paths == ["b.png", "a.png", "c.png"]
    assert m.class_names == ["cat", "dog"] and m.given_labels.tolist() == [1, 0, 1]
    assert m.rows.tolist() == [0, 1, 2]


def test_integer_labels_sort_numerically_and_text_labels_stay_as_written(tmp_path, imgs):
    m = read_manifest(imgs, _csv(tmp_path, ["a.png,10", "b.png,9", "c.png,2"]))
    assert m.class_names == ["2", "9", "10"]
    m = read_manifest(imgs, _csv(tmp_path, ["a.png,NA", "b.png,None", "c.png,007"]))
    assert m.class_names == ["007", "NA", "None"]


def test_parquet_manifest_and_custom_columns(tmp_path, imgs):
    p = tmp_path / "m.parquet"
    pd.DataFrame({"file": ["a.png", "b.png"], "y": [1, 2]}).to_parquet(p)
    m = read_manifest(imgs, p, path_column="file", label_column="y")
    assert m.class_names == ["1", "2"] and len(m) == 2


def test_missing_columns_are_listed_against_the_found_ones(tmp_path, imgs):
    with pytest.raises(ManifestError, match=r"missing column\(s\) label; found path, class"):
        read_manifest(imgs, _csv(tmp_path, ["a.png,cat"], header="path,class"))


def test_duplicate_paths_after_normalising(tmp_path, imgs, caplog):
    with caplog.at_level(logging.WARNING):
        m = read_manifest(imgs, _csv(tmp_path, ["./a.png,cat", "a.png,cat", "b.png,dog"]))
    assert m.paths == ["a.png", "b.png"] and "duplicate" in caplog.text
    with pytest.raises(ManifestError, match="line 2 as 'cat' and on line 3 as 'dog'"):
        read_manifest(imgs, _csv(tmp_path, ["./a.png,cat", "a.png,dog", "b.png,dog"]))


def test_empty_label_names_file_and_line(tmp_path, imgs):
    with pytest.raises(ManifestError, match=r"labels.csv line 3: empty label"):
        read_manifest(imgs, _csv(tmp_path, ["a.png,cat", "b.png,"]))


def test_non_utf8_csv(tmp_path, imgs):
    p = tmp_path / "labels.csv"
    p.write_bytes("path,label\na.png,caf\xe9\nb.png,dog\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_manifest(imgs, p)


def test_paths_escaping_the_root_are_refused_unless_allowed(tmp_path, imgs):
    _img(tmp_path / "outside.png")
    for bad in ("../outside.png", str(tmp_path / "outside.png")):
        with pytest.raises(ManifestError, match="outside the image folder"):
            read_manifest(imgs, _csv(tmp_path, [f"{bad},cat", "a.png,dog"]))
    m = read_manifest(imgs, _csv(tmp_path, ["../outside.png,cat", "a.png,dog"]), allow_outside_root=True)
    assert len(m) == 2


def test_symlink_out_of_the_root_is_refused(tmp_path, imgs):
    _img(tmp_path / "secret.png")
    os.symlink(tmp_path / "secret.png", imgs / "link.png")
    with pytest.raises(ManifestError, match="outside"):
        read_manifest(imgs, _csv(tmp_path, ["link.png,cat", "a.png,dog"]))


def test_fewer_than_two_classes_and_single_sample_class(tmp_path, imgs, caplog):
    with pytest.raises(ManifestError, match="only one class"):
        read_manifest(imgs, _csv(tmp_path, ["a.png,cat", "b.png,cat"]))
    with caplog.at_level(logging.WARNING):
        read_manifest(imgs, _csv(tmp_path, ["a.png,cat", "b.png,cat", "c.png,dog"]))
    assert "single sample" in caplog.text


def test_folder_layout_ignores_hidden_entries(tmp_path):
    root = tmp_path / "data"
    for cls in ("cat", "dog"):
        _img(root / cls / "x.png")
    _img(root / ".ipynb_checkpoints" / "x.png")
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    m = read_manifest(root)
    assert m.class_names == ["cat", "dog"] and m.paths == ["cat/x.png", "dog/x.png"]


def test_folder_layout_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no class folders"):
        read_manifest(tmp_path / "empty")
    _img(tmp_path / "d" / "cat" / "x.png")
    (tmp_path / "d" / "dog").mkdir()
    with pytest.raises(ManifestError, match="dog: class folder has no images"):
        read_manifest(tmp_path / "d")
    with pytest.raises(ManifestError, match="no such image folder"):
        read_manifest(tmp_path / "nope")


def test_subset_and_fingerprint(tmp_path, imgs):
    m = read_manifest(imgs, _csv(tmp_path, ["a.png,cat", "b.png,dog", "c.png,cat"]))
    s = m.subset(np.array([True, False, True]))
    assert s.paths == ["a.png", "c.png"] and s.rows.tolist() == [0, 2]
    assert s.fingerprint() != m.fingerprint() and m.fingerprint() == read_manifest(imgs, _csv(tmp_path, ["a.png,cat", "b.png,dog", "c.png,cat"])).fingerprint()
