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
    assert np.allclose(np.load(tmp_path / "trace_given.npy")[:, 0], 1 / 3, atol=1e-3)
    n, c, e = 1_000_000, 10, 20
    assert ConfidenceHistory.memory_bytes(n, c, e) < (c + e) * 8 * n  # issue 9
    small = ConfidenceHistory(100, 10, 20)
    actual = small.sums.nbytes + small.counts.nbytes
    actual += small.trace_given.nbytes + small.trace_pseudo.nbytes
    assert ConfidenceHistory.memory_bytes(100, 10, 20) == actual


def test_shape_mismatch_and_overflow_are_refused():
    h = ConfidenceHistory(2, 2, 1)
    with pytest.raises(ValueError, match="shape"):
        h.update(np.ones((3, 2)), np.zeros(3, dtype=int))
    h.update(np.full((2, 2), 0.5), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="full"):
        h.update(np.full((2, 2), 0.5), np.zeros(2, dtype=int))
