import numpy as np
import pytest
import torch

from labelclean.fgcm.history import ConfidenceHistory


def _random_probs(rng, n, c):
    x = rng.random((n, c)).astype(np.float32) ** 3
    return x / x.sum(1, keepdims=True)


def test_running_sums_equal_the_papers_explicit_history():
    rng = np.random.default_rng(0)
    n, c, e = 50, 4, 7
    given = rng.integers(0, c, n)
    h = ConfidenceHistory(n, c, e)
    explicit = []
    for _ in range(e):
        p = _random_probs(rng, n, c)
        explicit.append(p)
        h.update(p, given)
        full = np.stack(explicit)  # [k, N, C], the paper's C^k
        counts = np.stack([(full.argmax(2) == j).sum(0) for j in range(c)], 1)
        my = np.array(
            [max(range(c), key=lambda j: (counts[i, j], full[:, i, j].sum())) for i in range(n)]
        )
        assert np.array_equal(h.pseudo_labels(), my)
        jc = np.stack([full.mean(0)[np.arange(n), given], full.mean(0)[np.arange(n), my]], 1)
        assert np.allclose(h.joint_confidence(given), jc, atol=1e-6)
        assert np.allclose(h.traces()[0][:, -1], full[-1, np.arange(n), given], atol=1e-3)
        assert np.allclose(h.traces()[1][:, -1], full[-1, np.arange(n), my], atol=1e-3)


def test_tie_goes_to_the_larger_sum():
    h = ConfidenceHistory(1, 3, 2)
    h.update(np.array([[0.5, 0.1, 0.4]]), np.array([0]))  # argmax 0
    h.update(np.array([[0.1, 0.1, 0.8]]), np.array([0]))  # argmax 2: counts tie 1-1
    # sums: class 0 = 0.6, class 2 = 1.2 -> class 2 wins the tie
    assert h.pseudo_labels().tolist() == [2]
    h2 = ConfidenceHistory(1, 3, 2)
    h2.update(np.array([[0.9, 0.05, 0.05]]), np.array([0]))
    h2.update(np.array([[0.3, 0.3, 0.4]]), np.array([0]))
    assert h2.pseudo_labels().tolist() == [0]  # sums 1.2 vs 0.45


def test_state_dict_round_trips_through_weights_only_load(tmp_path):
    rng = np.random.default_rng(1)
    h = ConfidenceHistory(20, 3, 5)
    given = rng.integers(0, 3, 20)
    for _ in range(3):
        h.update(torch.from_numpy(_random_probs(rng, 20, 3)), given)
    torch.save(h.state_dict(), tmp_path / "h.pt")
    h2 = ConfidenceHistory(20, 3, 5)
    h2.load_state_dict(torch.load(tmp_path / "h.pt", weights_only=True))
    assert h2.epochs_recorded == 3
    assert np.array_equal(h2.pseudo_labels(), h.pseudo_labels())
    assert np.array_equal(h2.joint_confidence(given), h.joint_confidence(given))
    assert np.array_equal(h2.traces()[1], h.traces()[1])


def test_memmap_traces_and_memory_budget(tmp_path):
    h = ConfidenceHistory(10, 3, 4, trace_dir=tmp_path)
    h.update(np.full((10, 3), 1 / 3, dtype=np.float32), np.zeros(10, dtype=int))
    assert isinstance(h.trace_given, np.memmap)
    n, c, e = 1_000_000, 10, 20
    assert ConfidenceHistory.memory_bytes(n, c, e) < (c + e) * 8 * n


def test_shape_mismatch_and_overflow_are_refused():
    h = ConfidenceHistory(2, 2, 1)
    with pytest.raises(ValueError, match="shape"):
        h.update(np.ones((3, 2)), np.zeros(3, dtype=int))
    h.update(np.full((2, 2), 0.5), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="full"):
        h.update(np.full((2, 2), 0.5), np.zeros(2, dtype=int))
