"""The benchmarks' shared pieces: --data resolution, the CIFAR-10N builder, cleanlab's scoring."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import build_cifar10n  # noqa: E402
from _common import data_folder, human_labels  # noqa: E402

CLASSES = ["airplane", "automobile", "bird"]


def fake_cifar(root: Path, *, per_batch: int = 4, n_test: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's cifar-10-batches-py layout, tiny: 5 x per_batch train, n_test test images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_y = rng.integers(0, 3, 5 * per_batch)
    test_y = np.arange(n_test) % 3
    # smooth images (JPEG keeps them): channel c, row y, column x of image i = 2i + 40c + y + 3x
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    pattern = (40 * c + y + 3 * x).reshape(-1)
    train_x = (2 * np.arange(5 * per_batch)[:, None] + pattern).astype(np.uint8)
    test_x = (2 * np.arange(n_test)[:, None] + pattern).astype(np.uint8)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f)
    for b in range(5):
        part = slice(b * per_batch, (b + 1) * per_batch)
        with (folder / f"data_batch_{b + 1}").open("wb") as f:
            pickle.dump({b"data": train_x[part], b"labels": train_y[part].tolist()}, f)
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({b"data": test_x, b"labels": test_y.tolist()}, f)
    return train_x, train_y


def fake_human(path: Path, train_y: np.ndarray) -> dict[str, np.ndarray]:
    n = len(train_y)
    labels = {"clean_label": train_y, "aggre_label": train_y, "worse_label": (train_y + 1) % 3}
    for k in (1, 2, 3):
        labels[f"random_label{k}"] = (train_y + (np.arange(n) % k == 0) * k) % 3
    if path.suffix == ".npy":
        np.save(path, np.array(labels, dtype=object), allow_pickle=True)
    else:
        import torch

        torch.save(labels, path)
    return labels


def fake_side_info(path: Path, n: int) -> None:
    rows = [{"Image-batch": f"{s}--{min(s + 9, n - 1)}", "Worker1-id": 7 + s, "Work-time-in-seconds-1": 1,
             "Worker2-id": 8, "Work-time-in-seconds-2": 1, "Worker3-id": 9,
             "Work-time-in-seconds-3": 1} for s in range(0, n, 10)]
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_build_cifar10n_writes_the_dev_layout(tmp_path, suffix):
    train_x, train_y = fake_cifar(tmp_path / "dl")
    human = fake_human(tmp_path / f"human{suffix}", train_y)
    fake_side_info(tmp_path / "side.csv", len(train_y))
    out = build_cifar10n.build(tmp_path / "dl", tmp_path / f"human{suffix}", tmp_path / "data",
                               side_info=tmp_path / "side.csv", n_train=12, test_per_class=2)
    assert out == tmp_path / "data" / "cifar10-dev"
    assert data_folder(tmp_path / "data", "cifar10-dev", needs=("train.csv",)) == out
    names = np.asarray(CLASSES)
    train = pd.read_csv(out / "train.csv")
    assert train["path"].tolist() == [f"train/{i:05d}.jpg" for i in range(12)]
    assert train["label"].tolist() == names[train_y[:12]].tolist()
    for key, file in build_cifar10n.HUMAN_FILES.items():
        assert pd.read_csv(out / file)["label"].tolist() == names[human[key][:12]].tolist()
    crowd = pd.read_csv(out / "crowd.csv")
    assert len(crowd) == 36 and crowd["path"].iloc[3] == "train/00001.jpg"
    # images 0-9 came from the batch "0--9" (worker 1 is 7), 10-11 from "10--19" (17)
    assert crowd["annotator"].iloc[:3].tolist() == ["w7", "w8", "w9"]
    assert crowd["annotator"].iloc[30] == "w17"
    for k in (1, 2, 3):
        assert crowd["label"].iloc[k - 1 :: 3].tolist() == names[human[f"random_label{k}"][:12]].tolist()
    test = pd.read_csv(out / "test.csv")
    assert test["path"].tolist()[:3] == ["test/airplane_0000.jpg", "test/airplane_0001.jpg",
                                         "test/automobile_0000.jpg"]
    assert len(test) == 6 and all((out / p).is_file() for p in test["path"])
    from PIL import Image

    first = np.asarray(Image.open(out / "train" / "00000.jpg"))
    want = train_x[0].reshape(3, 32, 32).transpose(1, 2, 0).astype(int)
    assert first.shape == (32, 32, 3) and np.abs(first.astype(int) - want).mean() < 3
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["cifar10-dev"]  # no temp left


def test_build_cifar10n_refuses_to_replace_and_names_bad_inputs(tmp_path):
    _, train_y = fake_cifar(tmp_path / "dl")
    fake_human(tmp_path / "h.npy", train_y[:-1])  # one label short
    script = [sys.executable, str(BENCH / "build_cifar10n.py"), str(tmp_path / "dl")]
    bad = subprocess.run([*script, str(tmp_path / "h.npy"), str(tmp_path / "data")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "h.npy" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "data" / "cifar10-dev").exists()
    fake_human(tmp_path / "h.npy", train_y)
    (tmp_path / "data" / "cifar10-dev").mkdir(parents=True)
    (tmp_path / "data" / "cifar10-dev" / "mine.txt").write_text("keep")
    again = subprocess.run([*script, str(tmp_path / "h.npy"), str(tmp_path / "data")],
                           capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr
    assert (tmp_path / "data" / "cifar10-dev" / "mine.txt").read_text() == "keep"


def test_data_folder_accepts_the_root_or_the_folder_and_names_what_is_missing(tmp_path, capsys):
    (tmp_path / "cifar10-dev").mkdir()
    (tmp_path / "cifar10-dev" / "train.csv").write_text("path,label\n")
    assert data_folder(tmp_path, "cifar10-dev") == tmp_path / "cifar10-dev"
    assert data_folder(tmp_path / "cifar10-dev", "cifar10-dev") == tmp_path / "cifar10-dev"
    with pytest.raises(SystemExit, match=r"^error: no imagenette-dev/ folder in .*--data DIR"):
        data_folder(tmp_path, "imagenette-dev")
    with pytest.raises(SystemExit, match=r"^error: .*cifar10-dev lacks test.csv"):
        data_folder(tmp_path, "cifar10-dev", needs=("train.csv", "test.csv"))


def test_crowd_label_sets_take_the_second_and_third_votes_and_a_wrong_one_of_them(tmp_path):
    root = tmp_path / "cifar10-dev"
    root.mkdir()
    paths = [f"train/{i:05d}.jpg" for i in range(4)]
    truth = ["cat", "dog", "cat", "dog"]
    pd.DataFrame({"path": paths, "label": truth}).to_csv(root / "train.csv", index=False)
    votes = {  # the three votes of each image, in crowd.csv's order
        paths[0]: ["cat", "cat", "cat"],  # all right
        paths[1]: ["dog", "cat", "dog"],  # the second wrong
        paths[2]: ["dog", "cat", "dog"],  # the third wrong
        paths[3]: ["cat", "cat", "frog"],  # both wrong: worst2 takes the second
    }
    rows = [(p, f"w{k}", v) for p, vs in reversed(votes.items()) for k, v in enumerate(vs)]
    pd.DataFrame(rows, columns=["path", "annotator", "label"]).to_csv(root / "crowd.csv", index=False)
    expected = {
        "rand2": ["cat", "cat", "cat", "cat"],
        "rand3": ["cat", "dog", "dog", "frog"],
        "worst2": ["cat", "cat", "dog", "cat"],
    }
    for name, labels in expected.items():
        images, csv, names = human_labels(tmp_path / "work", tmp_path, name)
        given = pd.read_csv(csv)
        assert images == root
        assert given["path"].tolist() == paths  # train.csv's order, not crowd.csv's
        assert given["label"].tolist() == labels, name
        assert names.tolist() == truth
    pd.DataFrame(rows[:-1], columns=["path", "annotator", "label"]).to_csv(root / "crowd.csv", index=False)
    with pytest.raises(SystemExit, match=r"crowd.csv has fewer than three votes for train/00000.jpg"):
        human_labels(tmp_path / "work", tmp_path, "rand3")


def test_cleanlab_drop_scores_the_kept_rows_only():
    """The argmax row relabels flagged rows; the drop row (cleanlab's advice) unlabels them."""
    pytest.importorskip("cleanlab")
    import compare

    from labelclean.evaluate import cleaning_metrics

    names = ["a", "b"]
    truth = np.array([0, 0, 0, 1, 1, 1])
    given = np.array([0, 0, 1, 1, 1, 0])  # rows 2 and 5 are wrong
    flagged = np.array([False, True, True, False, False, True])
    suggested = np.array([0, 1, 0, 1, 1, 0])  # right for row 2, wrong for row 1
    forced = compare._frame(given, flagged, suggested, names)
    dropped = compare._frame(given, flagged, suggested, names, drop=True)
    assert forced["action"].tolist() == ["keep", "relabel", "relabel", "keep", "keep", "unlabel"]
    assert dropped["action"].tolist() == ["keep", "unlabel", "unlabel", "keep", "keep", "unlabel"]
    assert dropped["clean_label"].iloc[[1, 2, 5]].isna().all()
    truth_names = np.asarray(names)[truth]
    f, d = cleaning_metrics(forced, truth_names), cleaning_metrics(dropped, truth_names)
    assert f["label_precision"] == pytest.approx(4 / 5) and f["label_recall"] == pytest.approx(4 / 6)
    assert d["label_precision"] == pytest.approx(3 / 3) and d["label_recall"] == pytest.approx(3 / 6)
    assert d["detection_f1"] == f["detection_f1"] and d["cleaned_accuracy"] == f["cleaned_accuracy"]


def test_cleanlab_drop_reuses_the_probabilities_and_books_their_time():
    import compare

    calls = []
    ctx: dict = {}
    probs = compare._shared(ctx, "p", lambda: calls.append(1) or np.ones((2, 2)))
    assert "reused_seconds" not in ctx
    again = compare._shared(ctx, "p", lambda: calls.append(1) or np.zeros((2, 2)))
    assert calls == [1] and again is probs and ctx["reused_seconds"] == ctx["p_seconds"]


def test_flag_budget_keeps_the_unflagged_and_counts_the_run_s_own_noise_estimates():
    from flag_budget import noise_estimates, with_flags

    from labelclean.fgcm.history import ConfidenceHistory

    frame = pd.DataFrame({
        "given_label": ["a", "b", "a", "b"], "action": ["keep", "unlabel", "relabel", "keep"],
        "clean_label": ["a", None, "b", "b"], "pseudo_label": ["a", "a", "b", "a"],
    })
    out = with_flags(frame, np.array([False, True, False, True]))
    assert out["action"].tolist() == ["keep", "unlabel", "keep", "unlabel"]
    assert out["clean_label"].tolist()[2] == "a" and frame["action"].tolist()[2] == "relabel"
    history = ConfidenceHistory(4, 2, max_epochs=2)
    given = np.array([0, 1, 0, 1])
    history.update(np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]]), given, late=True)
    history.update(np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]]), given, late=True)
    est = noise_estimates(history, given, np.array([False, True, True, False]))
    assert est["disputed (today's report)"] == 0.5
    assert est["disputed in all K"] == 0.25  # only sample 1, disputed in both epochs
    assert est["mean d / K"] == (0 + 2 + 1 + 0) / 2 / 4
