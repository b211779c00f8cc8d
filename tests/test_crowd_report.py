"""The crowd report without training: the final combination step, the schema, the annotators file."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_report_parquet import NAMES, columns, metadata

from labelclean.crowd.combine import Combined
from labelclean.crowd.model import Votes, fit_crowd
from labelclean.crowd.report import VOUCH, crowd_actions, finish_crowd_audit, votes_column
from labelclean.errors import OutputExistsError, ReportError
from labelclean.fgcm.audit import AuditResult
from labelclean.report.annotators import annotators_path, check_annotators_writable, read_annotators
from labelclean.report.crowd import (
    annotator_confusion,
    crowd_summary,
    doubtful_votes,
    split_images,
    vote_rows,
    vote_text,
)
from labelclean.report.parquet import CROWD_SCHEMA, REPORT_SCHEMA, build_report_table, read_report


def _votes():
    """Five images (the columns() fixture): image 0 unanimous cat, 1 split dog/fox, 2 one vote."""
    sample = np.array([0, 0, 0, 1, 1, 2, 3, 3, 4, 4, 4])
    annotator = np.array([0, 1, 2, 0, 1, 2, 0, 1, 0, 1, 2])
    label = np.array([0, 0, 0, 1, 2, 2, 0, 0, 1, 1, 2])
    return Votes(sample, annotator, label, n_samples=5, n_classes=3, annotator_names=("ann", "bob", "cy"))


def _result():
    cols = columns()
    cols["given_label"] = np.array([0, 1, 2, 0, 1])
    table = build_report_table(cols, class_names=NAMES)
    return AuditResult(table=table, metadata=metadata(manifest_fingerprint="abc"))


def test_annotators_path_sits_beside_the_report(tmp_path):
    assert annotators_path("out/report.parquet").as_posix() == "out/report.annotators.parquet"
    assert annotators_path("my.run.parquet").name == "my.run.annotators.parquet"
    assert annotators_path("report").name == "report.annotators.parquet"


def test_actions_from_the_combined_posterior():
    post = np.array([[0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    combined = Combined(posterior=post, beta=1.0, fit=None, crowd_only=None)  # type: ignore[arg-type]
    action, clean = crowd_actions(np.array([0, 1, 0]), combined)
    assert action.tolist() == ["keep", "relabel", "unlabel"]  # 0.4 < VOUCH: more likely wrong
    assert clean.tolist() == [0, 2, -1] and VOUCH == 0.5


def test_votes_column_lists_each_images_votes():
    posterior = np.tile([0.1, 0.6, 0.3], (5, 1))
    column = votes_column(_votes(), NAMES, posterior).to_pylist()
    assert [(v["annotator"], v["label"]) for v in column[1]] == [("ann", "dog"), ("bob", "fox")]
    assert np.allclose([v["p_right"] for v in column[1]], [0.6, 0.3])
    assert [len(v) for v in column] == [3, 2, 1, 2, 3]
    assert vote_text(column[1]) == "ann:dog bob:fox"


def test_finish_adds_the_crowd_columns_and_decides_again(tmp_path):
    votes = _votes()
    probs = np.full((5, 3), 1 / 3)
    result = finish_crowd_audit(_result(), votes, probs)
    assert result.table.schema.equals(CROWD_SCHEMA)
    f = result.to_pandas()
    assert f["n_votes"].tolist() == [3, 2, 1, 2, 3]
    assert np.allclose(f["agreement"], [1, 0.5, 1, 1, 2 / 3])
    assert f.loc[0, "action"] == "keep" and f.loc[0, "clean_label"] == "cat"
    assert (f["clean_label"].isna() == (f["action"] == "unlabel")).all()
    before = _result().to_pandas()
    for column in ("cluster", "pseudo_label", "conf_given"):  # FGCM's view stays as it was
        assert f[column].tolist() == before[column].tolist()
    assert np.array_equal(np.stack(f["trace_given"]), np.stack(before["trace_given"]))
    crowd = result.metadata["crowd"]
    assert crowd["n_votes"] == 11 and crowd["n_annotators"] == 3 and crowd["split_images"] == 2
    assert result.annotators["n_votes"].sum() == 11
    path = result.write(tmp_path / "report.parquet")
    rep = read_report(path)
    assert rep.frame.columns.tolist() == CROWD_SCHEMA.names
    assert read_annotators(path, rep.metadata).equals(result.annotators)
    assert read_report(path, columns=["path", "votes"]).frame["votes"][2][0]["label"] == "fox"


def test_a_single_label_report_has_no_crowd_columns(tmp_path):
    from labelclean.report.parquet import write_report

    path = write_report(tmp_path / "r.parquet", _result().table, _result().metadata, overwrite=False)
    assert read_report(path).frame.columns.tolist() == REPORT_SCHEMA.names
    with pytest.raises(ReportError, match=r"no column\(s\) votes"):
        read_report(path, columns=["votes"])
    assert read_annotators(path, {}) is None


def test_annotators_outputs_follow_the_reports_rules(tmp_path):
    report = tmp_path / "r.parquet"
    check_annotators_writable(report, overwrite=False)
    side = annotators_path(report)
    side.write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists"):
        check_annotators_writable(report, overwrite=False)
    with pytest.raises(OutputExistsError, match="not written by labelclean"):
        check_annotators_writable(report, overwrite=True)
    with pytest.raises(ReportError, match="would replace the input"):
        check_annotators_writable(report, overwrite=True, inputs=[side])
    assert side.read_text() == "mine"


def test_a_failed_report_write_leaves_no_annotators_table(tmp_path):
    result = finish_crowd_audit(_result(), _votes(), np.full((5, 3), 1 / 3))
    result.metadata.pop("device")  # the report refuses incomplete metadata
    with pytest.raises(ReportError, match="metadata lacks device"):
        result.write(tmp_path / "r.parquet")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_annotators_tables_are_named(tmp_path):
    result = finish_crowd_audit(_result(), _votes(), np.full((5, 3), 1 / 3))
    path = result.write(tmp_path / "r.parquet")
    annotators_path(path).write_text("junk")
    with pytest.raises(ReportError, match="r.annotators.parquet: not a Parquet file"):
        read_annotators(path, result.metadata)
    pq.write_table(pq.read_table(path).select(["path"]), annotators_path(path))
    with pytest.raises(ReportError, match="not a labelclean annotators table"):
        read_annotators(path, result.metadata)


def test_split_images_least_agreement_first():
    frame = pd.DataFrame({
        "path": ["a", "b", "c", "d"], "agreement": [1.0, 0.5, 0.5, 1 / 3],
        "votes": [[{"annotator": "x", "label": "cat"}]] * 4, "given_label": ["cat"] * 4,
        "clean_label": ["cat", "cat", "dog", None], "action": ["keep", "keep", "relabel", "unlabel"],
    })
    table = split_images(frame)
    assert table["path"].tolist() == ["d", "c", "b"] and table["final"].tolist() == ["", "dog", "cat"]


def test_crowd_summary_of_a_written_report(tmp_path):
    result = finish_crowd_audit(_result(), _votes(), np.full((5, 3), 1 / 3))
    path = result.write(tmp_path / "r.parquet")
    rep = read_report(path)
    summary = crowd_summary(rep, read_annotators(path, rep.metadata))
    assert summary.n_votes == 11 and summary.split == 2 and len(summary.annotators) == 3
    assert fit_crowd(_votes()).posterior.shape == (5, 3)


def test_per_annotator_confusion_and_doubtful_votes(tmp_path):
    result = finish_crowd_audit(_result(), _votes(), np.full((5, 3), 1 / 3))
    frame = read_report(result.write(tmp_path / "r.parquet")).frame
    votes = vote_rows(frame)
    assert len(votes) == 11 and set(votes["annotator"]) == {"ann", "bob", "cy"}
    heat, note = annotator_confusion(votes, "cy", NAMES)
    counts = np.array(heat["counts"])
    assert counts.shape == (3, 3) and note == "" and (heat["row_title"], heat["col_title"]) == ("final", "vote")
    assert counts.sum() == (votes[votes.annotator == "cy"].final != "").sum()
    mine = votes[(votes.annotator == "cy") & (votes.final != "")]
    for final, vote in zip(mine.final, mine.vote):
        assert counts[NAMES.index(final), NAMES.index(vote)] >= 1
    worst = doubtful_votes(votes, "ann", top=2)
    assert len(worst) == 2 and worst["p_right"].is_monotonic_increasing
    assert worst["p_right"].iloc[0] == votes.loc[votes.annotator == "ann", "p_right"].min()
