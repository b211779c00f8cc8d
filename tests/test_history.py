import numpy as np
import pytest
import torch

from labelclean.errors import CheckpointError
from labelclean.fgcm.history import ConfidenceHistory


def _random_probs(rng, n, c):
    x = rng.random((n, c)).astype(np.float32) ** 3
    return x / x.sum(1, keepdims=True)


def _explicit_pseudo(full):
    """The paper's definition on the full history C^k [k, N, C]: most frequent argmax,
    ties to the larger summed confidence, then the lowest class index."""
    k, n, c = full.shape
    counts = np.stack([(full.argmax(2) == j).sum(0) for j in range(c)], 1)
    sums = full.sum(0)
    return np.array(
        [min(range(c), key=lambda j: (-counts[i, j], -sums[i, j], j)) for i in range(n)]
    )


def test_running_sums_equal_the_papers_explicit_history():
    rng = np.random.default_rng(0)
    n, c, e = 60, 4, 8
    given = rng.integers(0, c, n)
    h = ConfidenceHistory(n, c, e)
    explicit = []
    rows = np.arange(n)
    for _ in range(e):
        p = _random_probs(rng, n, c)
        explicit.append(p)
        h.update(p, given)
        full = np.stack(explicit)  # [k, N, C], the paper's C^k
        my = _explicit_pseudo(full)
        assert np.array_equal(h.pseudo_labels(), my)
        assert np.allclose(h.mean_confidence(), full.mean(0), atol=1e-6)
        jc = np.stack([full.mean(0)[rows, given], full.mean(0)[rows, my]], 1)
        assert h.joint_confidence(given).dtype == np.float32
        assert np.allclose(h.joint_confidence(given), jc, atol=1e-6)
        assert np.array_equal(
            h.joint_confidence(given, pseudo_labels=my), h.joint_confidence(given)
        )
    assert h.epochs_recorded == e
    assert np.array_equal(h.counts.sum(1), np.full(n, e))


def test_tie_goes_to_the_larger_sum_then_the_lowest_index():
    h = ConfidenceHistory(1, 3, 2)
    h.update(np.array([[0.5, 0.1, 0.4]]), np.array([0]))  # argmax 0
    h.update(np.array([[0.1, 0.1, 0.8]]), np.array([0]))  # argmax 2: counts tie 1-1
    assert h.pseudo_labels().tolist() == [2]  # sums: class 0 = 0.6, class 2 = 1.2
    h2 = ConfidenceHistory(1, 3, 2)
    h2.update(np.array([[0.9, 0.05, 0.05]]), np.array([0]))
    h2.update(np.array([[0.3, 0.3, 0.4]]), np.array([0]))
    assert h2.pseudo_labels().tolist() == [0]  # sums 1.2 vs 0.45
    # counts tie and sums tie exactly: the lowest index
    h3 = ConfidenceHistory(1, 3, 2)
    h3.update(np.array([[0.25, 0.0, 0.75]]), np.array([0]))
    h3.update(np.array([[0.75, 0.0, 0.25]]), np.array([0]))
    assert h3.pseudo_labels().tolist() == [0]
    # a larger sum must not beat a larger count
    h4 = ConfidenceHistory(1, 2, 3)
    for p in ([0.51, 0.49], [0.51, 0.49], [0.0, 1.0]):
        h4.update(np.array([p]), np.array([0]))
    assert h4.pseudo_labels().tolist() == [0]  # count 2 vs 1, although sums 1.02 vs 1.98


def test_traces_follow_the_given_and_the_then_max_repeating_label():
    h = ConfidenceHistory(2, 3, 4)
    given = np.array([0, 1])
    epochs = [
        [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]],
        [[0.2, 0.7, 0.1], [0.2, 0.7, 0.1]],  # sample 0: tie 1-1, sums 0.8 vs 1.0 -> my = 1
        [[0.3, 0.6, 0.1], [0.1, 0.1, 0.8]],
    ]
    for p in epochs:
        h.update(np.array(p, dtype=np.float32), given)
    trace_given, trace_pseudo = h.traces()
    assert trace_given.shape == trace_pseudo.shape == (2, 3)
    assert trace_given.dtype == np.float16
    assert np.allclose(trace_given[0], [0.6, 0.2, 0.3], atol=1e-3)
    assert np.allclose(trace_given[1], [0.7, 0.7, 0.1], atol=1e-3)
    # sample 0's max-repeating label is 0 after epoch 0, then 1: the trace switches with it
    assert np.allclose(trace_pseudo[0], [0.6, 0.7, 0.6], atol=1e-3)
    assert np.allclose(trace_pseudo[1], [0.7, 0.7, 0.1], atol=1e-3)


def test_torch_and_low_precision_inputs_are_accepted():
    rng = np.random.default_rng(2)
    p = _random_probs(rng, 30, 5)
    given = rng.integers(0, 5, 30)
    a, b = ConfidenceHistory(30, 5, 2), ConfidenceHistory(30, 5, 2)
    a.update(p, given)
    b.update(torch.from_numpy(p).to(torch.bfloat16), given)
    assert np.allclose(a.sums, b.sums, atol=1e-2)


def test_state_dict_round_trips_through_weights_only_load(tmp_path):
    rng = np.random.default_rng(1)
    n, c, e = 20, 3, 6
    given = rng.integers(0, c, n)
    probs = [_random_probs(rng, n, c) for _ in range(e)]
    h = ConfidenceHistory(n, c, e)
    for p in probs[:3]:
        h.update(torch.from_numpy(p), given)
    torch.save(h.state_dict(), tmp_path / "h.pt")
    h2 = ConfidenceHistory(n, c, e, trace_dir=tmp_path / "traces")
    h2.load_state_dict(torch.load(tmp_path / "h.pt", weights_only=True))
    assert h2.epochs_recorded == 3
    assert np.array_equal(h2.pseudo_labels(), h.pseudo_labels())
    assert np.array_equal(h2.joint_confidence(given), h.joint_confidence(given))
    for p in probs[3:]:  # resumed == uninterrupted
        h.update(p, given)
        h2.update(p, given)
    assert np.array_equal(h2.sums, h.sums) and np.array_equal(h2.counts, h.counts)
    assert np.array_equal(h2.traces()[0], h.traces()[0])
    assert np.array_equal(h2.traces()[1], h.traces()[1])


def test_a_checkpoint_of_other_sizes_is_refused(tmp_path):
    h = ConfidenceHistory(5, 3, 4)
    h.update(np.full((5, 3), 1 / 3), np.zeros(5, dtype=int))
    state = h.state_dict()
    with pytest.raises(CheckpointError, match="same data"):
        ConfidenceHistory(6, 3, 4).load_state_dict(state)
    h.update(np.full((5, 3), 1 / 3), np.zeros(5, dtype=int))
    with pytest.raises(CheckpointError, match="--epochs"):
        ConfidenceHistory(5, 3, 1).load_state_dict(h.state_dict())
    with pytest.raises(CheckpointError, match="incomplete"):
        ConfidenceHistory(5, 3, 4).load_state_dict({"sums": state["sums"]})


def test_memmap_traces_and_memory_budget(tmp_path):
    h = ConfidenceHistory(10, 3, 4, trace_dir=tmp_path)
    h.update(np.full((10, 3), 1 / 3, dtype=np.float32), np.zeros(10, dtype=int))
    assert isinstance(h.trace_given, np.memmap) and (tmp_path / "trace_pseudo.npy").exists()
    assert np.allclose(np.load(tmp_path / "trace_given.npy")[0], 1 / 3, atol=1e-3)  # [E, N]
    n, c, e = 1_000_000, 10, 20
    assert ConfidenceHistory.memory_bytes(n, c, e) < (c + e) * 8 * n  # issue 9
    small = ConfidenceHistory(100, 10, 20)
    actual = small.sums.nbytes + small.counts.nbytes
    actual += small.late_sums.nbytes + small.late_counts.nbytes
    actual += small.trace_given.nbytes + small.trace_pseudo.nbytes
    assert ConfidenceHistory.memory_bytes(100, 10, 20) == actual


def test_shape_mismatch_and_overflow_are_refused():
    h = ConfidenceHistory(2, 2, 1)
    with pytest.raises(ValueError, match="shape"):
        h.update(np.ones((3, 2)), np.zeros(3, dtype=int))
    h.update(np.full((2, 2), 0.5), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="full"):
        h.update(np.full((2, 2), 0.5), np.zeros(2, dtype=int))


def _filled(n, c, e, k, trace_dir=None, seed=3):
    rng = np.random.default_rng(seed)
    given = rng.integers(0, c, n)
    probs = [_random_probs(rng, n, c) for _ in range(e)]
    h = ConfidenceHistory(n, c, e, trace_dir=trace_dir)
    for p in probs[:k]:
        h.update(p, given)
    return h, given, probs


def test_traces_on_disk_are_checkpointed_by_reference(tmp_path):
    h, given, probs = _filled(40, 3, 6, 3, trace_dir=tmp_path / "traces")
    state = h.state_dict()
    assert "trace_given" not in state and state["trace_files"]["epochs"] == 3
    torch.save(state, tmp_path / "h.pt")
    assert (tmp_path / "h.pt").stat().st_size < 40 * 3 * 6 + 4096  # sums and counts only
    resumed = ConfidenceHistory(40, 3, 6, trace_dir=tmp_path / "traces")
    resumed.load_state_dict(torch.load(tmp_path / "h.pt", weights_only=True))
    assert np.array_equal(resumed.traces()[0], h.traces()[0])
    for p in probs[3:]:
        h.update(p, given)
        resumed.update(p, given)
    assert np.array_equal(resumed.traces()[1], h.traces()[1]) and resumed.traces()[0].shape == (40, 6)


def test_an_epoch_written_after_the_last_checkpoint_does_not_corrupt_resume(tmp_path):
    """kill -9 between epoch k's trace column and checkpoint k: resume from k-1 rewrites it."""
    traces = tmp_path / "traces"
    h, given, probs = _filled(30, 4, 5, 2, trace_dir=traces)
    checkpoint = h.state_dict()  # after epoch 2 (traces flushed first)
    rng = np.random.default_rng(9)
    h.update(_random_probs(rng, 30, 4), given)  # epoch 3 of the run that is then killed
    del h
    resumed = ConfidenceHistory(30, 4, 5, trace_dir=traces)
    resumed.load_state_dict(checkpoint)
    reference, _, _ = _filled(30, 4, 5, 2)
    assert resumed.epochs_recorded == 2
    for p in probs[2:]:  # the resumed run records its own epoch 3 onwards
        resumed.update(p, given)
        reference.update(p, given)
    for ours, theirs in zip(resumed.traces(), reference.traces()):
        assert np.array_equal(ours, theirs)


def test_missing_trace_files_refuse_to_resume_and_other_ranks_read_them(tmp_path):
    h, given, _ = _filled(10, 3, 4, 2, trace_dir=tmp_path / "traces")
    state = h.state_dict()
    with pytest.raises(CheckpointError, match="trace"):
        ConfidenceHistory(10, 3, 4, trace_dir=tmp_path / "elsewhere").load_state_dict(state)
    with pytest.raises(CheckpointError, match="trace"):
        ConfidenceHistory(10, 3, 4).load_state_dict(state)
    in_memory = ConfidenceHistory(10, 3, 4)  # a rank that does not write the files
    in_memory.load_state_dict(state, trace_source=tmp_path / "traces")
    assert np.array_equal(in_memory.traces()[0], h.traces()[0])


def test_more_epochs_on_a_forced_resume_keep_the_columns_on_disk(tmp_path):
    h, given, _ = _filled(12, 3, 4, 3, trace_dir=tmp_path / "traces")
    state = h.state_dict()
    longer = ConfidenceHistory(12, 3, 8, trace_dir=tmp_path / "traces")
    longer.load_state_dict(state)
    assert longer.trace_given.shape == (8, 12)  # [E, N]
    assert np.array_equal(longer.traces()[0], h.traces()[0])


def test_traces_go_to_disk_above_the_memory_threshold(monkeypatch):
    from labelclean.fgcm.history import TRACE_MEMMAP_BYTES, traces_on_disk

    assert not traces_on_disk(10_000, 40)  # 1.6 MB: in memory
    assert traces_on_disk(1_000_000, 350)  # 1.4 GB: on disk
    assert TRACE_MEMMAP_BYTES < 4 * 1_000_000 * 350
    monkeypatch.setenv("LABELCLEAN_TRACE_MEMMAP_BYTES", "0")
    assert traces_on_disk(10, 2)


def test_traces_in_a_given_sample_order_and_one_contiguous_row_per_epoch(tmp_path):
    h, given, _ = _filled(20, 3, 5, 4, trace_dir=tmp_path)
    order = np.random.default_rng(0).permutation(20)
    for ordered, plain in zip(h.traces(order=order), h.traces()):
        assert ordered.shape == (20, 4) and np.array_equal(ordered, plain[order])
    assert h.trace_given[3].flags["C_CONTIGUOUS"]  # epoch 3's trace is one row of the file


def test_late_window_is_the_papers_statistics_over_the_late_epochs_only():
    rng = np.random.default_rng(1)
    n, c, e = 50, 4, 6
    given = rng.integers(0, c, n)
    h = ConfidenceHistory(n, c, e)
    assert np.array_equal(h.pseudo_labels(window="late"), h.pseudo_labels())  # none yet
    explicit = [_random_probs(rng, n, c) for _ in range(e)]
    late = [False, False, True, False, True, True]  # marks need not be contiguous
    for p, is_late in zip(explicit, late):
        h.update(p, given, late=is_late)
    full = np.stack(explicit)
    tail = full[np.array(late)]
    my = _explicit_pseudo(tail)
    rows = np.arange(n)
    assert h.late_epochs == 3 and h.epochs_recorded == e
    assert np.array_equal(h.pseudo_labels(window="late"), my)
    jc = np.stack([tail.mean(0)[rows, given], tail.mean(0)[rows, my]], 1)
    assert np.allclose(h.joint_confidence(given, window="late"), jc, atol=1e-6)
    assert np.allclose(h.mean_confidence(window="late"), tail.mean(0), atol=1e-6)
    # the default window is still the paper's mean over every epoch
    assert np.array_equal(h.pseudo_labels(), _explicit_pseudo(full))
    assert np.allclose(h.joint_confidence(given)[:, 0], full.mean(0)[rows, given], atol=1e-6)
    with pytest.raises(ValueError, match="window"):
        h.pseudo_labels(window="recent")


def test_late_window_survives_a_checkpoint_and_old_checkpoints_start_it_empty():
    rng = np.random.default_rng(2)
    given = np.zeros(5, dtype=int)
    h = ConfidenceHistory(5, 3, 4)
    for is_late in (False, True, True):
        h.update(_random_probs(rng, 5, 3), given, late=is_late)
    state = h.state_dict()
    back = ConfidenceHistory(5, 3, 4)
    back.load_state_dict(state)
    assert back.late_epochs == 2
    assert np.array_equal(back.late_sums, h.late_sums)
    assert np.array_equal(back.late_counts, h.late_counts)
    old = {k: v for k, v in state.items() if not k.startswith("late_")}
    back = ConfidenceHistory(5, 3, 4)
    back.load_state_dict(old)
    assert back.late_epochs == 0 and not back.late_sums.any()
    assert np.array_equal(back.pseudo_labels(window="late"), h.pseudo_labels())
    with pytest.raises(CheckpointError, match="late epochs"):
        ConfidenceHistory(5, 3, 4).load_state_dict({**state, "late_epochs": 4})


def test_a_history_without_late_epochs_checkpoints_no_late_arrays():
    """The paper's loop never marks an epoch late: its checkpoints carry no empty N x C copies."""
    rng = np.random.default_rng(3)
    given = np.zeros(5, dtype=int)
    h = ConfidenceHistory(5, 3, 4)
    for _ in range(2):
        h.update(_random_probs(rng, 5, 3), given)
    state = h.state_dict()
    assert state["late_epochs"] == 0
    assert "late_sums" not in state and "late_counts" not in state
    back = ConfidenceHistory(5, 3, 4)
    back.load_state_dict(state)
    assert np.array_equal(back.sums, h.sums) and back.late_epochs == 0
    back.update(_random_probs(rng, 5, 3), given, late=True)  # a late epoch after the resume
    assert back.late_epochs == 1 and "late_sums" in back.state_dict()
    with pytest.raises(CheckpointError, match="incomplete"):
        ConfidenceHistory(5, 3, 4).load_state_dict({**state, "late_epochs": 1})


def test_is_late_epoch_is_an_lr_at_most_half_the_base():
    from labelclean.fgcm.history import is_late_epoch

    assert is_late_epoch(0.05, 0.1) and is_late_epoch(0.001, 0.1)
    assert not is_late_epoch(0.0505, 0.1) and not is_late_epoch(0.1, 0.1)
