"""Injecting label noise reproducibly, to make a dataset whose truth is known.

Noise follows the paper (4.1.1) and DivideMix: a symmetric flip is uniform over the *other*
classes (so the realised noise rate is the asked rate, not ``rate * (C - 1) / C`` as with
"uniform over all classes"); asymmetric noise uses the paper's CIFAR-10 pairs
(truck->automobile, bird->airplane, deer->horse, cat<->dog).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from labelclean.errors import ConfigError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# The paper's (and DivideMix's) asymmetric CIFAR-10 noise: visually similar classes.
CIFAR10_ASYMMETRIC = {
    "truck": "automobile",
    "bird": "airplane",
    "deer": "horse",
    "cat": "dog",
    "dog": "cat",
}
NOISE_TYPES = ("symmetric", "asymmetric")


def asymmetric_map(class_names: Sequence[str]) -> dict[str, str]:
    """The default asymmetric map: the paper's pairs for CIFAR-10, else each class to the next.

    Example:
        >>> asymmetric_map(["a", "b", "c"])
        {'a': 'b', 'b': 'c', 'c': 'a'}
    """
    names = list(class_names)
    if set(names) == set(CIFAR10_CLASSES):
        return dict(CIFAR10_ASYMMETRIC)
    return {names[i]: names[(i + 1) % len(names)] for i in range(len(names))}


def _check_mapping(mapping: Mapping[Any, Any], class_names: Sequence[str]) -> dict[str, str]:
    if not isinstance(mapping, Mapping) or not mapping:
        raise ConfigError(
            '--map: expected a non-empty object of class -> class, e.g. {"cat": "dog"}'
        )
    bad = [
        f"{k!r}: {v!r}"
        for k, v in mapping.items()
        if not (isinstance(k, str) and isinstance(v, str))
    ]
    if bad:
        raise ConfigError(f"--map: class names must be strings; got {', '.join(bad)}")
    known = set(class_names)
    unknown = sorted({name for pair in mapping.items() for name in pair if name not in known})
    if unknown:
        raise ConfigError(
            f"--map names unknown classes: {', '.join(unknown)}; the classes are "
            f"{', '.join(class_names)}"
        )
    same = [k for k, v in mapping.items() if k == v]
    if same:
        raise ConfigError(f"--map maps {', '.join(same)} to itself; a flip must change the class")
    return dict(mapping)


def corrupt_labels(
    given_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    noise: str,
    rate: float,
    seed: int = 0,
    mapping: Mapping[str, str] | None = None,
) -> np.ndarray:
    """Return noisy label codes ``[N]`` made from clean ones, reproducibly from ``seed``.

    Args:
        given_labels: Clean label codes ``[N]`` into ``class_names``.
        class_names: Names for the codes (C >= 2).
        noise: ``symmetric``: exactly ``round(rate * N)`` samples, chosen at random, get a
            label drawn uniformly from the C - 1 *other* classes, so the realised rate is
            the asked one. ``asymmetric``: in each *source* class of the map,
            ``round(rate * n_class)`` samples, chosen at random, flip to its target; other
            classes stay clean (so the overall rate is lower than ``rate`` when the map does
            not cover every class, as in the paper's CIFAR-10 setting).
        rate: Fraction in [0, 1).
        seed: Random seed.
        mapping: class -> class for asymmetric noise; default :func:`asymmetric_map`.

    Raises:
        ConfigError: Naming ``--noise``, ``--rate`` or ``--map``.

    Example:
        >>> noisy = corrupt_labels(np.repeat(np.arange(10), 50), [str(i) for i in range(10)],
        ...                        noise="symmetric", rate=0.4)
        >>> float((noisy != np.repeat(np.arange(10), 50)).mean())
        0.4
    """
    if noise not in NOISE_TYPES:
        raise ConfigError(f"--noise {noise!r}: expected symmetric or asymmetric")
    if not 0 <= rate < 1:
        raise ConfigError(f"--rate {rate}: expected a fraction in [0, 1), e.g. 0.4")
    c = len(class_names)
    if c < 2:
        raise ConfigError(f"need at least two classes to flip labels, found {c}")
    given = np.asarray(given_labels)
    if given.ndim != 1 or (given.size and not np.issubdtype(given.dtype, np.integer)):
        raise ValueError(
            f"given_labels: expected integer codes [N], got {given.dtype} {given.shape}"
        )
    given = given.astype(np.int64)
    if given.size and (given.min() < 0 or given.max() >= c):
        raise ValueError(f"given_labels: codes must lie in [0, {c})")
    rng = np.random.default_rng(seed)
    noisy = given.copy()
    if noise == "symmetric":
        flip = rng.choice(len(given), int(round(rate * len(given))), replace=False)
        offset = rng.integers(1, c, len(flip))  # 1..C-1: uniform over the other classes
        noisy[flip] = (given[flip] + offset) % c
        return noisy
    pairs = _check_mapping(
        mapping if mapping is not None else asymmetric_map(class_names), class_names
    )
    code = {name: i for i, name in enumerate(class_names)}
    for source, target in pairs.items():  # flips are drawn from the clean labels: no chains
        members = np.flatnonzero(given == code[source])
        flip = rng.choice(members, int(round(rate * len(members))), replace=False)
        noisy[flip] = code[target]
    return noisy
