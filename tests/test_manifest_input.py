"""Manifests that cannot mean what they seem: refused with a fix, or read as meant (issues 38, 39).

Every case is refused (or read) before an image is decoded, so nothing here trains.
"""

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from test_hostile import refused  # one `error:` line, no traceback: the shared check
from typer.testing import CliRunner

import labelclean
from labelclean.cli import app
from labelclean.data import images as images_mod
from labelclean.data.manifest import read_manifest
from labelclean.errors import ConfigError, ManifestError

runner = CliRunner()


@pytest.fixture
def imgs(tmp_path):
    for name in ("a.png", "b.png", "c.png", "d.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    return tmp_path


@pytest.fixture
def no_decoding(monkeypatch):
    """Any image decoding fails the test: the refusal must come first."""

    def decoded(*args, **kwargs):
        raise AssertionError("images were decoded")

    monkeypatch.setattr(images_mod, "load_images", decoded)


def write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


def check(*args):
    return runner.invoke(app, ["check", *map(str, args)])


# issue 38 item 17: a list-typed vote column is refused as the single-label layout refuses it
@pytest.mark.parametrize("layout", ["single", "long", "wide"])
def test_a_parquet_column_of_lists_is_refused_in_every_layout(imgs, layout):
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "label": [["d0"], ["d1", "d7"]]})
    options = {}
    if layout == "long":
        frame.insert(1, "annotator", ["u1", "u2"])
    if layout == "wide":
        frame["other"] = ["d0", "d1"]
        options = {"label_column": ["label", "other"]}
    frame.to_parquet(imgs / "votes.parquet")
    with pytest.raises(ManifestError, match=r"votes.parquet: column 'label' holds list"):
        read_manifest(imgs, imgs / "votes.parquet", **options)


def test_a_list_vote_column_is_one_error_line_from_the_cli(imgs):
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "annotator": ["u1", "u2"],
                          "label": [["d0"], ["d1"]]})
    frame.to_parquet(imgs / "votes.parquet")
    refused(check(imgs, imgs / "votes.parquet"), "votes.parquet", "column 'label' holds list")


# issue 38 item 21: a column name given twice
def test_a_repeated_column_name_is_refused_with_its_positions(imgs):
    csv = write(imgs, "m.csv", "path,label,label\na.png,cat,dog\nb.png,dog,dog\n")
    refused(check(imgs, csv), "m.csv", "column 'label' appears 2 times (columns 2 and 3)")
    table = pa.table([pa.array(["a.png", "b.png"]), pa.array(["cat", "dog"]),
                      pa.array(["dog", "cat"])], names=["label", "path", "label"])
    pq.write_table(table, imgs / "m.parquet")
    with pytest.raises(ManifestError, match=r"m.parquet: column 'label' appears 2 times "
                                            r"\(columns 1 and 3\)"):
        read_manifest(imgs, imgs / "m.parquet")
    # unnamed columns (a spreadsheet's empty header cells) are no repeated name
    blank = write(imgs, "blank.csv", "path,label,,\na.png,cat,,\nb.png,dog,,\n")
    assert read_manifest(imgs, blank).class_names == ["cat", "dog"]


# issue 38 item 22: an absolute path into the image folder is that file
def test_an_absolute_path_inside_the_image_folder_is_its_relative_spelling(imgs, tmp_path, monkeypatch):
    relative = read_manifest(imgs, write(tmp_path, "rel.csv", "path,label\na.png,cat\nb.png,dog\n"))
    absolute = write(tmp_path, "abs.csv", f"path,label\n{imgs / 'a.png'},cat\nb.png,dog\n")
    m = read_manifest(imgs, absolute)
    assert m.paths == ["a.png", "b.png"]
    assert m.fingerprint() == relative.fingerprint()  # so caches, reports and resume agree
    monkeypatch.chdir(imgs.parent)  # the folder given relative to the working directory
    assert read_manifest(imgs.name, absolute).paths == ["a.png", "b.png"]
    link = tmp_path.parent / f"{tmp_path.name}-link"  # the folder reached through a link
    os.symlink(tmp_path, link)
    assert read_manifest(link, absolute).paths == ["a.png", "b.png"]
    votes = write(tmp_path, "votes.csv",
                  f"path,annotator,label\n{imgs / 'a.png'},u1,cat\na.png,u2,cat\nb.png,u1,dog\n")
    assert read_manifest(imgs, votes).paths == ["a.png", "b.png"]  # one image, two votes
    outside = write(tmp_path, "out.csv", f"path,label\n{imgs.parent / 'x.png'},cat\nb.png,dog\n")
    with pytest.raises(ManifestError, match="out.csv line 2: path .* points outside"):
        read_manifest(imgs, outside)


# issue 39 item 7: spellings of one class
def test_class_names_differing_in_case_or_spaces_are_refused_naming_both(imgs):
    csv = write(imgs, "m.csv", "path,label\na.png,cat\nb.png,dog\nc.png,dog\nd.png,Cat \n")
    refused(check(imgs, csv), "m.csv", "'cat' (line 2)", "'Cat ' (line 5)", "--normalize-labels")


def test_normalize_labels_merges_into_the_most_frequent_stripped_spelling(imgs, monkeypatch):
    csv = write(imgs, "m.csv", "path,label\na.png,Cat\nb.png, cat\nc.png,cat \nd.png,dog\n")
    m = read_manifest(imgs, csv, normalize_labels=True)
    assert m.class_names == ["cat", "dog"] and m.given_labels.tolist() == [0, 0, 0, 1]
    r = check(imgs, csv, "--normalize-labels")
    assert r.exit_code == 0 and "cat: 3  dog: 1" in r.output, r.output
    monkeypatch.setattr(images_mod, "load_images", None)  # the API refuses before any image
    with pytest.raises(ManifestError, match="'Cat' .* and ' cat' .* --normalize-labels"):
        labelclean.audit(imgs, csv)
    assert "--normalize-labels" in runner.invoke(app, ["audit", "--help"]).output


def test_spellings_are_checked_in_every_layout(imgs, tmp_path):
    long = write(imgs, "long.csv", "path,annotator,label\na.png,u1,cat\na.png,u2,CAT\nb.png,u1,dog\n")
    with pytest.raises(ManifestError, match=r"'cat' \(line 2\) and 'CAT' \(line 3\)"):
        read_manifest(imgs, long)
    m = read_manifest(imgs, long, normalize_labels=True)
    assert m.class_names == ["cat", "dog"] and m.votes.label.tolist() == [0, 0, 1]
    wide = write(imgs, "wide.csv", "path,a1,a2\na.png,cat,\nb.png,dog,Cat\n")
    with pytest.raises(ManifestError, match=r"'Cat' \(line 3, column 'a2'\)"):
        read_manifest(imgs, wide, label_column=["a1", "a2"])
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": ["cat", "dog", "cat "]}).to_parquet(
        imgs / "m.parquet")
    with pytest.raises(ManifestError, match=r"'cat ' \(line 4\)"):
        read_manifest(imgs, imgs / "m.parquet")
    folder = tmp_path / "classes"
    for name in ("cat", "Cat", "dog"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / name / "1.png")
    Image.new("RGB", (8, 8)).save(folder / "cat" / "2.png")
    with pytest.raises(ManifestError, match=r"class names 'Cat' \(.*classes/Cat\) and 'cat'"):
        read_manifest(folder)
    m = read_manifest(folder, normalize_labels=True)  # two cats against one Cat
    assert m.class_names == ["cat", "dog"] and m.given_labels.tolist() == [0, 0, 0, 1]


# issue 39 item 7: headers a user mistyped
def test_a_header_with_spaces_after_its_commas_gets_a_hint(imgs):
    csv = write(imgs, "m.csv", "path, label\na.png, cat\nb.png, dog\n")
    refused(check(imgs, csv), "missing column(s) label", "' label' with spaces around the name",
            "remove the spaces")


@pytest.mark.parametrize("header,sep,hint", [("path;label", ";", "looks separated by ';'"),
                                             ("path\tlabel", "\t", "rename it to .tsv")])
def test_a_manifest_with_another_separator_gets_a_hint(imgs, header, sep, hint):
    csv = write(imgs, "m.csv", f"{header}\na.png{sep}cat\nb.png{sep}dog\n")
    refused(check(imgs, csv), "m.csv", hint)
    ragged = write(imgs, "r.csv", f"{header}\na.png{sep}cat\nb,png{sep}dog\n")  # a comma in a row
    with pytest.raises(ManifestError, match="cannot be read as a table.*looks separated by"):
        read_manifest(imgs, ragged)


# issue 39 item 7: networks that cannot work, refused before any image is decoded
def test_an_unknown_model_is_refused_before_decoding_with_close_names(imgs, tmp_path, no_decoding):
    images, labels = imgs, write(imgs, "m.csv", "path,label\na.png,cat\nb.png,dog\n")
    r = runner.invoke(app, ["audit", str(images), str(labels), "--model", "resnet181",
                            "--out", str(tmp_path / "r.parquet"), "--quiet"])
    refused(r, "--model 'resnet181'", "did you mean resnet18")
    with pytest.raises(ConfigError, match="did you mean small_cnn"):
        labelclean.audit(images, labels, model="smallcnn")
    assert not (tmp_path / "r.parquet").exists()
