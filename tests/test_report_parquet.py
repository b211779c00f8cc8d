"""report.parquet: schema, build from audit arrays, atomic write in row groups, checked read."""

import errno
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelclean._version import __version__
from labelclean.errors import OutputError, OutputExistsError, ReportError
from labelclean.report import parquet as parquet_mod
from labelclean.report import schema as schema_mod
from labelclean.report.parquet import (
    METADATA_KEY,
    REPORT_SCHEMA,
    build_report_table,
    read_report,
    write_report,
)
from labelclean.report.schema import CROWD_SCHEMA, VOTE_TYPE, with_columns

NAMES = ["cat", "dog", "fox"]


def columns(n=5, epochs=3):
    """Five samples whose every value is known: rows 1 and 4 are unlabeled, row 2 relabeled."""
    trace = np.arange(n * epochs, dtype=np.float32).reshape(n, epochs) / 100
    return {
        "index": np.arange(n) + 10,
        "path": [f"img/{i}.png" for i in range(n)],
        "given_label": np.array([0, 1, 2, 0, 1][:n]),
        "cluster": np.array(["CS", "NHI", "NS", "CH", "NHR"][:n]),
        "action": np.array(["keep", "unlabel", "relabel", "keep", "unlabel"][:n]),
        "clean_label": np.array([0, -1, 1, 0, -1][:n]),
        "pseudo_label": np.array([0, 2, 1, 0, 0][:n]),
        "conf_given": np.linspace(0.1, 0.9, n),
        "conf_pseudo": np.linspace(0.9, 0.1, n),
        "cluster_prob": np.full(n, 0.75),
        "admitted_epoch": np.array([2, -1, 3, 2, -1][:n]),
        "guard": np.array([None, "unsure_relabel", None, "budget", None][:n], dtype=object),
        "trace_given": trace,
        "trace_pseudo": 1 - trace,
    }


def metadata(**over):
    meta = {
        "tool_version": __version__,
        "image_root": "/data/img",
        "class_names": NAMES,
        "config": {"components": 5, "lr": 0.02},
        "seed": np.int64(7),
        "epochs": 3,
        "device": "cpu",
        "mode": "train",
        "wall_time_s": np.float32(1.5),
        "gmm": None,
        "cluster_names": ["CS", "CH", "NS", "NHR", "NHI"],
    }
    return {**meta, **over}


def write(tmp_path, name="report.parquet", cols=None, **kw):
    table = build_report_table(columns() if cols is None else cols, class_names=NAMES)
    return write_report(
        tmp_path / name, table, metadata(), overwrite=kw.pop("overwrite", False), **kw
    )


def test_schema_is_designs_columns_in_order():
    assert REPORT_SCHEMA.names == [
        "index",
        "path",
        "given_label",
        "cluster",
        "action",
        "clean_label",
        "pseudo_label",
        "conf_given",
        "conf_pseudo",
        "cluster_prob",
        "admitted_epoch",
        "guard",
        "trace_given",
        "trace_pseudo",
    ]
    types = {f.name: f.type for f in REPORT_SCHEMA}
    assert types["index"] == pa.int64() and types["admitted_epoch"] == pa.int32()
    assert types["conf_given"] == pa.float32() and types["trace_pseudo"] == pa.list_(pa.float32())
    assert [f.name for f in REPORT_SCHEMA if f.nullable] == ["clean_label", "admitted_epoch", "guard"]


def test_round_trip_values_nulls_traces_and_metadata(tmp_path):
    path = write(tmp_path)
    assert pq.read_schema(path).remove_metadata().equals(REPORT_SCHEMA)
    rep = read_report(path)
    f = rep.frame
    assert f.columns.tolist() == REPORT_SCHEMA.names and rep.path == path
    assert f["index"].tolist() == [10, 11, 12, 13, 14]
    assert f["given_label"].tolist() == ["cat", "dog", "fox", "cat", "dog"]
    assert f["pseudo_label"].tolist() == ["cat", "fox", "dog", "cat", "cat"]
    assert f["clean_label"].isna().tolist() == [False, True, False, False, True]
    assert f["clean_label"][2] == "dog"
    assert str(f["admitted_epoch"].dtype) == "Int32"
    assert f["admitted_epoch"].isna().tolist() == [False, True, False, False, True]
    assert f["admitted_epoch"][2] == 3
    assert f["guard"].isna().tolist() == [True, False, True, False, True]
    assert f["guard"][1] == "unsure_relabel" and f["guard"][3] == "budget"
    assert f["conf_given"].dtype == np.float32
    np.testing.assert_array_equal(np.stack(f["trace_given"]), columns()["trace_given"])
    np.testing.assert_array_equal(np.stack(f["trace_pseudo"]), 1 - columns()["trace_given"])
    assert rep.metadata["seed"] == 7 and rep.metadata["wall_time_s"] == 1.5  # numpy -> JSON
    assert rep.metadata["config"] == {"components": 5, "lr": 0.02}
    assert rep.class_names == NAMES and str(rep.image_root) == "/data/img"
    raw = pq.read_schema(path).metadata[METADATA_KEY]
    assert json.loads(raw)["class_names"] == NAMES  # one JSON value under b"labelclean"


def test_row_groups_and_column_subset(tmp_path):
    path = write(tmp_path, row_group_size=2)
    assert pq.ParquetFile(path).num_row_groups == 3
    rep = read_report(path, columns=["path", "action"])
    assert rep.frame.columns.tolist() == ["path", "action"] and len(rep.frame) == 5
    with pytest.raises(ReportError, match="no column.*nope"):
        read_report(path, columns=["nope"])


def test_traces_split_when_list_offsets_would_overflow(tmp_path, monkeypatch):
    monkeypatch.setattr(schema_mod, "_MAX_LIST_VALUES", 7)  # 3 epochs -> 2 rows per chunk
    table = build_report_table(columns(), class_names=NAMES)
    assert table["trace_given"].num_chunks == 3
    path = write_report(tmp_path / "r.parquet", table, metadata(), overwrite=False)
    np.testing.assert_array_equal(
        np.stack(read_report(path).frame["trace_given"]), columns()["trace_given"]
    )


def test_zero_epochs_and_zero_rows(tmp_path):
    cols = columns()
    cols["trace_given"] = cols["trace_pseudo"] = np.zeros((5, 0))
    rep = read_report(write(tmp_path, "e0.parquet", cols))
    assert [len(t) for t in rep.frame["trace_given"]] == [0] * 5
    empty = {
        k: (np.zeros((0, 3)) if k.startswith("trace") else np.asarray(v)[:0])
        for k, v in columns().items()
    }
    rep = read_report(write(tmp_path, "n0.parquet", empty))
    assert len(rep.frame) == 0


@pytest.mark.parametrize(
    "change, match",
    [
        ({"given_label": np.array([0, 1, 3, 0, 1])}, "given_label: code 3 at row 2"),
        ({"pseudo_label": np.array([0, -1, 1, 0, 0])}, "pseudo_label: code -1 at row 1"),
        (
            {"clean_label": np.array([0, 1, 1, 0, -1])},
            "clean_label: must be -1 exactly on the unlabel",
        ),
        ({"action": np.array(["keep", "unlabel", "fix", "keep", "unlabel"])}, "'fix'"),
        ({"trace_pseudo": np.zeros((5, 2))}, "differ in shape"),
        ({"conf_given": np.zeros(4)}, r"conf_given: expected shape \[5\]"),
        ({"extra": np.zeros(5)}, "unknown \\['extra'\\]"),
    ],
)
def test_build_rejects_inconsistent_arrays(change, match):
    with pytest.raises(ValueError, match=match):
        build_report_table({**columns(), **change}, class_names=NAMES)


def test_with_columns_replaces_as_build_converts():
    """The epilogue's and the crowd combination's path: codes in, names out, same schema."""
    table = build_report_table(columns(), class_names=NAMES)
    after = with_columns(
        table,
        {
            "action": np.array(["keep", "keep", "relabel", "keep", "unlabel"], dtype=object),
            "clean_label": np.array([0, 1, 1, 0, -1]),
            "pseudo_label": np.array([0, 1, 1, 0, 2]),
            "guard": np.array([None, "semi_agrees", None, "budget", None], dtype=object),
            "conf_pseudo": np.full(5, 0.5),
        },
        class_names=NAMES,
    )
    assert after.schema.equals(REPORT_SCHEMA)
    assert after["clean_label"].to_pylist() == ["cat", "dog", "dog", "cat", None]
    assert after["pseudo_label"].to_pylist() == ["cat", "dog", "dog", "cat", "fox"]
    assert after["guard"].to_pylist()[1] == "semi_agrees"
    assert after["given_label"].equals(table["given_label"])  # the rest untouched


def test_with_columns_appends_the_crowd_columns_in_the_crowd_schema():
    table = build_report_table(columns(), class_names=NAMES)
    vote = pa.array([{"annotator": "w1", "label": "cat", "p_right": 0.5}], type=VOTE_TYPE)
    votes = pa.ListArray.from_arrays(pa.array([0, 1, 1, 1, 1, 1], pa.int32()), vote)
    crowd = {"n_votes": np.array([1, 0, 0, 0, 0]), "agreement": np.ones(5), "votes": votes}
    after = with_columns(table, crowd, class_names=NAMES)
    assert after.schema.equals(CROWD_SCHEMA)
    assert after["votes"].to_pylist()[0] == [{"annotator": "w1", "label": "cat", "p_right": 0.5}]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"clean_label": np.array([0, 1, 1, 0, -1])}, "must be -1 exactly on the unlabel"),
        ({"action": np.array(["keep", "unlabel", "fix", "keep", "unlabel"])}, "'fix'"),
        ({"guard": np.array(["oops", None, None, None, None], dtype=object)}, "guard.*oops"),
        ({"pseudo_label": np.array([0, 1, 1, 0, 3])}, "pseudo_label: code 3 at row 4"),
        ({"conf_pseudo": np.zeros(4)}, r"conf_pseudo: expected shape \[5\]"),
        ({"extra": np.zeros(5)}, "unknown \\['extra'\\]"),
    ],
)
def test_with_columns_keeps_the_rules_of_build(change, match):
    with pytest.raises(ValueError, match=match):
        with_columns(build_report_table(columns(), class_names=NAMES), change, class_names=NAMES)


def test_write_checks_metadata_and_table(tmp_path):
    table = build_report_table(columns(), class_names=NAMES)
    meta = metadata()
    del meta["seed"], meta["device"]
    with pytest.raises(ReportError, match="metadata lacks seed, device"):
        write_report(tmp_path / "a.parquet", table, meta, overwrite=False)
    with pytest.raises(ReportError, match="not JSON"):
        write_report(tmp_path / "a.parquet", table, metadata(config=object()), overwrite=False)
    with pytest.raises(ReportError, match="conf_given: expected float"):
        write_report(
            tmp_path / "a.parquet",
            table.set_column(7, "conf_given", table["conf_given"].cast(pa.float64())),
            metadata(),
            overwrite=False,
        )
    arrays = table.columns
    arrays[6] = pa.chunked_array([pa.array(["a", None, "b", "c", "d"])])
    nulled = pa.Table.from_arrays(arrays, schema=REPORT_SCHEMA)  # from_arrays does not check nulls
    with pytest.raises(ReportError, match="null values in column.*pseudo_label"):
        write_report(tmp_path / "a.parquet", nulled, metadata(), overwrite=False)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_overwrite_is_refused_then_allowed(tmp_path):
    path = write(tmp_path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write(tmp_path)
    assert path.read_bytes() == before
    cols = columns()
    cols["conf_given"] = np.zeros(5)
    write_report(path, build_report_table(cols, class_names=NAMES), metadata(), overwrite=True)
    assert read_report(path).frame["conf_given"].tolist() == [0.0] * 5


def test_full_disk_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = write(tmp_path)
    before = path.read_bytes()
    real = pq.write_table

    def full_disk(table, where, **kw):
        real(table.slice(0, 2), where, **kw)  # some bytes reach the temp file first
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(parquet_mod.pq, "write_table", full_disk)
    table = build_report_table(columns(), class_names=NAMES)
    with pytest.raises(OutputError, match="report.parquet: cannot write: no space left"):
        write_report(path, table, metadata(), overwrite=True)
    with pytest.raises(OutputError, match="new.parquet: cannot write: no space left"):
        write_report(tmp_path / "new.parquet", table, metadata(), overwrite=False)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.parquet"]


def test_read_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(ReportError, match="nope.parquet: no such report"):
        read_report(tmp_path / "nope.parquet")
    with pytest.raises(ReportError, match="is a directory"):
        read_report(tmp_path)
    (tmp_path / "junk.parquet").write_text("path,label\n")
    with pytest.raises(ReportError, match="junk.parquet: not a Parquet file"):
        read_report(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(ReportError, match="plain.parquet: .*not a labelclean report"):
        read_report(tmp_path / "plain.parquet")

    table = pq.read_table(write(tmp_path))
    pq.write_table(table.drop_columns(["cluster", "trace_given"]), tmp_path / "cols.parquet")
    with pytest.raises(
        ReportError, match=r"cols.parquet: report lacks the column\(s\) cluster, trace_given"
    ):
        read_report(tmp_path / "cols.parquet")
    pq.write_table(
        table.set_column(0, "index", table["index"].cast(pa.string())), tmp_path / "type.parquet"
    )
    with pytest.raises(ReportError, match="index is string, expected int64"):
        read_report(tmp_path / "type.parquet")
    pq.write_table(
        table.replace_schema_metadata({METADATA_KEY: b"{oops"}), tmp_path / "json.parquet"
    )
    with pytest.raises(ReportError, match="json.parquet: labelclean metadata: not JSON"):
        read_report(tmp_path / "json.parquet")
    pq.write_table(
        table.replace_schema_metadata({METADATA_KEY: b'{"tool_version": "0"}'}),
        tmp_path / "meta.parquet",
    )
    with pytest.raises(ReportError, match="metadata lacks image_root, class_names"):
        read_report(tmp_path / "meta.parquet")


def test_other_version_warns(tmp_path, caplog):
    table = build_report_table(columns(), class_names=NAMES)
    path = write_report(
        tmp_path / "old.parquet", table, metadata(tool_version="0.0.1"), overwrite=False
    )
    with caplog.at_level(logging.WARNING, logger="labelclean.report.parquet"):
        read_report(path)
    assert "written by labelclean 0.0.1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="labelclean.report.parquet"):
        read_report(write(tmp_path))
    assert caplog.text == ""


def test_a_report_written_before_the_guard_column_still_reads(tmp_path):
    """Reports of earlier versions lack ``guard``: they read back with it all null."""
    table = build_report_table(columns(), class_names=NAMES).drop_columns(["guard"])
    blob = json.dumps({**metadata(), "seed": 7, "wall_time_s": 1.5}).encode()
    path = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: blob}), path)
    rep = read_report(path)
    assert rep.frame.columns.tolist() == REPORT_SCHEMA.names
    assert rep.frame["guard"].isna().all() and len(rep.frame) == 5
    assert read_report(path, columns=["path", "guard"]).frame.columns.tolist() == ["path", "guard"]


def test_guard_column_is_optional_to_build_and_checked():
    cols = columns()
    del cols["guard"]
    assert build_report_table(cols, class_names=NAMES)["guard"].null_count == 5
    cols["guard"] = np.array(["budget", "oops", None, None, None], dtype=object)
    with pytest.raises(ValueError, match="guard.*oops"):
        build_report_table(cols, class_names=NAMES)
