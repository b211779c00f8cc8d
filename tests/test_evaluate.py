"""Noise injection and cleaning metrics (labelclean.evaluate), on data whose answers are known."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2

from labelclean.errors import ConfigError, ReportError
from labelclean.evaluate import (
    CIFAR10_CLASSES,
    asymmetric_map,
    cleaning_metrics,
    corrupt_labels,
    read_truth,
)

DIGITS = [str(i) for i in range(10)]


# --- corrupt_labels --------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5, 0.8])
def test_symmetric_hits_the_rate_exactly_and_never_keeps_the_true_label(rate):
    given = np.repeat(np.arange(10), 300)
    noisy = corrupt_labels(given, DIGITS, noise="symmetric", rate=rate, seed=3)
    flipped = noisy != given
    assert flipped.sum() == round(rate * len(given))  # every chosen row really changes class
    assert noisy.dtype == np.int64 and noisy.min() >= 0 and noisy.max() < 10


def test_symmetric_flips_are_uniform_over_the_other_classes():
    given = np.repeat(np.arange(10), 1000)
    noisy = corrupt_labels(given, DIGITS, noise="symmetric", rate=0.5, seed=0)
    flipped = noisy != given
    # (true, noisy) counts over the 90 off-diagonal cells: each row spreads evenly over 9 classes
    counts = np.zeros((10, 10))
    np.add.at(counts, (given[flipped], noisy[flipped]), 1)
    assert np.diag(counts).sum() == 0
    off = counts[~np.eye(10, dtype=bool)].reshape(10, 9)
    expected = off.sum(axis=1, keepdims=True) / 9
    stat = ((off - expected) ** 2 / expected).sum()
    assert stat < chi2.ppf(0.999, df=10 * 8), stat
    # the flipped rows are spread over the classes, not taken from a few
    per_class = flipped.reshape(10, 1000).mean(axis=1)
    assert np.abs(per_class - 0.5).max() < 0.06


def test_seed_reproduces_and_changes_the_flips():
    given = np.repeat(np.arange(10), 100)
    a = corrupt_labels(given, DIGITS, noise="symmetric", rate=0.4, seed=1)
    assert (a == corrupt_labels(given, DIGITS, noise="symmetric", rate=0.4, seed=1)).all()
    assert (a != corrupt_labels(given, DIGITS, noise="symmetric", rate=0.4, seed=2)).any()


def test_asymmetric_follows_the_paper_pairs_for_cifar_names():
    names = list(CIFAR10_CLASSES)
    given = np.repeat(np.arange(10), 100)
    noisy = corrupt_labels(given, names, noise="asymmetric", rate=0.4, seed=0)
    moved = {(names[g], names[n]) for g, n in zip(given, noisy) if g != n}
    assert moved == {
        ("truck", "automobile"),
        ("bird", "airplane"),
        ("deer", "horse"),
        ("cat", "dog"),
        ("dog", "cat"),
    }
    for source in ("truck", "bird", "deer", "cat", "dog"):  # exactly 40 of each source's 100
        assert (noisy[given == names.index(source)] != names.index(source)).sum() == 40
    for kept in ("airplane", "automobile", "frog", "horse", "ship"):
        assert (noisy[given == names.index(kept)] == names.index(kept)).all()
    assert (noisy != given).sum() == 200  # 5 of 10 classes at 40%: 20% overall


def test_asymmetric_custom_map_and_next_class_and_validation():
    names = ["a", "b", "c"]
    given = np.repeat(np.arange(3), 10)
    noisy = corrupt_labels(given, names, noise="asymmetric", rate=0.5, mapping={"a": "c"})
    assert (noisy[given == 0] == 2).sum() == 5 and (noisy[given == 0] == 0).sum() == 5
    assert (noisy[given != 0] == given[given != 0]).all()
    assert asymmetric_map(names) == {"a": "b", "b": "c", "c": "a"}
    nxt = corrupt_labels(given, names, noise="asymmetric", rate=0.6, seed=0)
    flipped = nxt != given
    assert flipped.sum() == 18 and ((given + 1) % 3 == nxt)[flipped].all()
    # CIFAR pairs only when the classes are CIFAR-10's
    assert asymmetric_map(CIFAR10_CLASSES)["truck"] == "automobile"
    assert asymmetric_map(["cat", "dog", "zebra"]) == {"cat": "dog", "dog": "zebra", "zebra": "cat"}

    with pytest.raises(ConfigError, match="--map names unknown classes: zebra"):
        corrupt_labels(given, names, noise="asymmetric", rate=0.5, mapping={"a": "zebra"})
    with pytest.raises(ConfigError, match="--map maps b to itself"):
        corrupt_labels(given, names, noise="asymmetric", rate=0.5, mapping={"a": "c", "b": "b"})
    with pytest.raises(ConfigError, match="--map: class names must be strings"):
        corrupt_labels(given, names, noise="asymmetric", rate=0.5, mapping={"a": 1})
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="--rate"):
            corrupt_labels(given, names, noise="symmetric", rate=bad)
    with pytest.raises(ConfigError, match="--noise 'pairflip'"):
        corrupt_labels(given, names, noise="pairflip", rate=0.2)
    with pytest.raises(ConfigError, match="two classes"):
        corrupt_labels(np.zeros(5, int), ["a"], noise="symmetric", rate=0.2)


# --- cleaning_metrics ------------------------------------------------------------------------


def hand_report():
    """Ten samples; every figure below is counted by hand from this table.

    row truth given action  clean pseudo cluster   note
    0   a     a     keep    a     a      CS        right
    1   a     a     keep    a     a      CS        right
    2   a     a     keep    a     a      CH        right
    3   b     b     keep    b     b      CH        right
    4   b     b     unlabel -     b      NHI       false alarm; pseudo right
    5   b     a     relabel b     b      NS        wrong label found, fixed
    6   c     a     relabel b     b      NS        wrong label found, fixed wrongly
    7   c     c     keep    c     c      CS        right
    8   c     b     keep    b     b      CH        wrong label missed
    9   a     c     unlabel -     a      NHR       wrong label found; pseudo right
    """
    frame = pd.DataFrame(
        {
            "path": [f"img/{i}.png" for i in range(10)],
            "given_label": list("aaabbaacbc"),
            "action": ["keep"] * 4 + ["unlabel", "relabel", "relabel", "keep", "keep", "unlabel"],
            "clean_label": ["a", "a", "a", "b", None, "b", "b", "c", "b", None],
            "pseudo_label": list("aaabbbbcba"),
            "cluster": ["CS", "CS", "CH", "CH", "NHI", "NS", "NS", "CS", "CH", "NHR"],
        }
    )
    return frame, np.array(list("aaabbbccca"), dtype=object)


def test_metrics_on_a_hand_built_report():
    frame, truth = hand_report()
    m = cleaning_metrics(frame, truth)
    # noisy rows 5, 6, 8, 9; flagged rows 4, 5, 6, 9; both: 5, 6, 9
    assert (m["n"], m["noisy"], m["flagged"], m["labeled"]) == (10, 4, 4, 8)
    assert m["given_precision"] == pytest.approx(0.6) and m["noise_rate"] == pytest.approx(0.4)
    assert m["detection_precision"] == pytest.approx(3 / 4)
    assert m["detection_recall"] == pytest.approx(3 / 4)
    assert m["detection_f1"] == pytest.approx(3 / 4)
    # labeled rows 0-3, 5-8; clean label right on 0, 1, 2, 3, 5, 7 -> 6 of 8, 6 of 10
    assert m["label_precision"] == pytest.approx(6 / 8) and m["label_recall"] == pytest.approx(0.6)
    assert m["relabel_accuracy"] == pytest.approx(1 / 2)  # row 5 right, row 6 wrong
    # clean (or pseudo for 4 and 9) right everywhere but rows 6 and 8
    assert m["cleaned_accuracy"] == pytest.approx(0.8)
    assert m["actions"] == {"keep": 6, "relabel": 2, "unlabel": 2}
    assert list(m["clusters"]) == ["CS", "CH", "NS", "NHR", "NHI"]  # the paper's order
    assert m["clusters"]["CS"] == {
        "n": 3,
        "noisy": 0,
        "noise_rate": 0.0,
        "keep": 3,
        "relabel": 0,
        "unlabel": 0,
    }
    assert m["clusters"]["CH"]["noise_rate"] == pytest.approx(1 / 3)
    assert m["clusters"]["NS"]["noise_rate"] == 1.0 and m["clusters"]["NS"]["relabel"] == 2
    assert m["clusters"]["NHR"]["noise_rate"] == 1.0 and m["clusters"]["NHI"]["noise_rate"] == 0.0


def test_per_class_confusion_and_flips_on_the_hand_built_report():
    frame, truth = hand_report()
    m = cleaning_metrics(frame, truth)
    pc = {row["class"]: row for row in m["per_class"]}
    assert list(pc) == ["a", "b", "c"]
    # a: given on 0,1,2,5,6 (5, wrong on 5,6); true on 0,1,2,9; clean a on 0,1,2 (all right)
    assert pc["a"] == {
        "class": "a",
        "n_given": 5,
        "n_true": 4,
        "given_precision": 0.6,
        "noise_rate": 0.4,
        "flagged_rate": 0.4,
        "detection_recall": 1.0,
        "n_clean": 3,
        "label_precision": 1.0,
        "label_recall": 0.75,
        "relabeled_out": 2,
        "relabeled_in": 0,
        "unlabeled": 0,
    }
    # b: given on 3,4,8 (wrong on 8, missed); clean b on 3,5,6,8 (right on 3,5); true on 3,4,5
    assert pc["b"]["given_precision"] == pytest.approx(2 / 3) and pc["b"]["detection_recall"] == 0.0
    assert pc["b"]["label_precision"] == 0.5 and pc["b"]["label_recall"] == pytest.approx(2 / 3)
    assert (pc["b"]["relabeled_in"], pc["b"]["unlabeled"]) == (2, 1)
    # c: given on 7,9 (wrong on 9, flagged); clean c on 7; true on 6,7,8
    assert pc["c"]["label_precision"] == 1.0 and pc["c"]["label_recall"] == pytest.approx(1 / 3)
    assert m["confusion"] == {
        "given": ["a", "b", "c"],
        "clean": ["a", "b", "c", "(unlabeled)"],
        "counts": [[3, 2, 0, 0], [0, 2, 0, 1], [0, 0, 1, 1]],
    }
    assert m["top_flips"] == [{"given": "a", "clean": "b", "count": 2, "correct": 1}]


def test_empty_denominators_are_none_not_zero():
    frame, _ = hand_report()
    clean = frame.assign(action="keep", clean_label=frame["given_label"])
    m = cleaning_metrics(clean, frame["given_label"].to_numpy())  # nothing noisy, nothing flagged
    assert m["detection_precision"] is None and m["detection_recall"] is None
    assert m["detection_f1"] is None and m["relabel_accuracy"] is None
    assert m["label_precision"] == 1.0 and m["given_precision"] == 1.0 and m["top_flips"] == []
    # flagged but nothing is noisy: precision measured 0, recall has nothing to find
    alarm = frame.assign(action="unlabel", clean_label=None)
    m = cleaning_metrics(alarm, frame["given_label"].to_numpy())
    assert m["detection_precision"] == 0.0 and m["detection_recall"] is None
    assert m["detection_f1"] == 0.0 and m["label_precision"] is None and m["label_recall"] == 0.0
    empty = cleaning_metrics(frame.iloc[:0], np.array([], dtype=object))
    assert (
        empty["n"] == 0 and empty["given_precision"] is None and empty["cleaned_accuracy"] is None
    )


def test_metrics_check_their_inputs():
    frame, truth = hand_report()
    with pytest.raises(ValueError, match="expected 10 labels"):
        cleaning_metrics(frame, truth[:9])
    with pytest.raises(ReportError, match="action values fix"):
        cleaning_metrics(frame.assign(action="fix"), truth)
    with pytest.raises(ReportError, match="lacks the column.*pseudo_label"):
        cleaning_metrics(frame.drop(columns="pseudo_label"), truth)
    # without a cluster column (e.g. another tool's output) the rest is still measured
    assert cleaning_metrics(frame.drop(columns="cluster"), truth)["clusters"] == {}


# --- read_truth ------------------------------------------------------------------------------


def test_truth_is_matched_by_normalised_path_in_any_order(tmp_path):
    frame, truth = hand_report()
    rows = pd.DataFrame({"path": [f"./img//{i}.png" for i in range(10)], "label": truth})
    rows.iloc[::-1].to_csv(tmp_path / "truth.csv", index=False)
    assert (read_truth(tmp_path / "truth.csv", frame) == truth).all()
    rows.assign(path=[f"img\\{i}.png" for i in range(10)]).to_parquet(tmp_path / "truth.parquet")
    assert (read_truth(tmp_path / "truth.parquet", frame) == truth).all()
    # labels are text: "007" stays "007"; a duplicate that agrees is harmless
    pd.DataFrame({"path": ["img/0.png", "img/0.png"], "true_label": ["007", "007"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    assert read_truth(tmp_path / "t.csv", frame.iloc[:1], label_column=None).tolist() == ["007"]


def test_mismatched_rows_are_named(tmp_path):
    frame, truth = hand_report()
    pd.DataFrame(
        {
            "path": [f"img/{i}.png" for i in range(2, 10)] + ["img/x.png"],
            "label": list(truth[2:]) + ["a"],
        }
    ).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ReportError) as err:
        read_truth(tmp_path / "t.csv", frame)
    msg = str(err.value)
    assert "t.csv" in msg and "no truth for 2 report row(s): img/0.png, img/1.png" in msg
    assert "1 truth row(s) are not in the report: img/x.png" in msg
    many = pd.DataFrame({"path": [f"{i}.png" for i in range(50)], "label": "a"})
    with pytest.raises(
        ReportError, match=r"no truth for 50 report row\(s\): 0.png, .*19.png \(and 30 more\)"
    ):
        read_truth(tmp_path / "t.csv", many)


def test_truth_file_problems_are_named(tmp_path):
    frame, truth = hand_report()
    with pytest.raises(ReportError, match="nope.csv: no such truth file"):
        read_truth(tmp_path / "nope.csv", frame)
    pd.DataFrame({"file": ["img/0.png"], "label": ["a"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(
        ReportError, match="no column 'path'; found file, label.*--truth-path-column"
    ):
        read_truth(tmp_path / "c.csv", frame)
    with pytest.raises(ReportError, match="no column 'clean'.*--truth-label-column"):
        read_truth(tmp_path / "c.csv", frame, path_column="file", label_column="clean")
    pd.DataFrame({"path": ["img/0.png", "img/0.png"], "label": ["a", "b"]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    with pytest.raises(ReportError, match="different labels: img/0.png"):
        read_truth(tmp_path / "d.csv", frame)
    pd.DataFrame({"path": ["img/0.png", "img/1.png"], "label": ["a", ""]}).to_csv(
        tmp_path / "e.csv", index=False
    )
    with pytest.raises(ReportError, match="e.csv: empty label on line 3"):
        read_truth(tmp_path / "e.csv", frame)
