"""The final label of each image: the crowd's votes and the audit's network, combined.

Bayes' rule with the network as each image's prior::

    P(y | image i, votes) ∝ q_i(y) · Π_votes theta_a[y, vote]
    q_i(y) ∝ prior(y)^(1 - beta) · pbar_i(y)^beta

``pbar_i`` is the audit's mean softmax over its epochs (the quantity FGCM clusters on),
``theta`` the annotators' confusions (:func:`~labelclean.crowd.model.fit_crowd`). ``beta``
says how far to believe the network: 0 is the crowd alone, 1 the mean softmax at face value.
It is chosen by the votes, not by us: the ``beta`` under which the network best predicts
what the annotators say (the marginal likelihood of the votes, ``Σ_i log Σ_y q_i(y) Π theta``).
With ``beta`` fixed, the annotators are fitted again with ``q`` as the image prior, so the
network also helps to judge them. Where the crowd is split, or tied, the network decides
(ties go to the model); where a unanimous crowd meets a network that disagrees, the product
weighs one against the other by how reliable each has shown itself to be on the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelclean.crowd.model import CrowdFit, Votes, fit_crowd

#: Temperatures searched for the network's probabilities (0 = ignore the network).
BETAS = np.round(np.arange(0.0, 3.0001, 0.05), 2)
_EPS = 1e-6


@dataclass
class Combined:
    """The crowd and the network together (see :func:`combine`)."""

    posterior: np.ndarray  #: [N, C] P(true class | image, votes)
    beta: float  #: the network's weight chosen by the votes
    fit: CrowdFit  #: the annotators fitted with the network as image prior
    crowd_only: CrowdFit  #: the annotators fitted on the votes alone (the consensus)

    @property
    def labels(self) -> np.ndarray:
        """Final label of each image ``[N]``: the most probable class."""
        return self.posterior.argmax(1)

    @property
    def confidence(self) -> np.ndarray:
        """Probability of the final label ``[N]``."""
        return self.posterior.max(1)


def tempered_prior(probs: np.ndarray, class_prior: np.ndarray, beta: float) -> np.ndarray:
    """``q ∝ class_prior^(1 - beta) · probs^beta``, row-normalised ``[N, C]``."""
    log_q = (1 - beta) * np.log(np.clip(class_prior, _EPS, None))[None, :] + beta * np.log(
        np.clip(probs, _EPS, None)
    )
    log_q -= log_q.max(1, keepdims=True)
    q = np.exp(log_q)
    return q / q.sum(1, keepdims=True)


def vote_likelihood_by_beta(
    probs: np.ndarray, crowd: CrowdFit, votes: Votes, betas: np.ndarray = BETAS
) -> np.ndarray:
    """``log P(votes)`` per vote for each beta ``[len(betas)]``, annotators held at ``crowd``."""
    evidence = crowd.vote_log_likelihood(votes)  # [N, C]
    out = np.empty(len(betas))
    for j, beta in enumerate(betas):
        joint = np.log(np.clip(tempered_prior(probs, crowd.class_prior, beta), 1e-300, None))
        joint += evidence
        top = joint.max(1)
        out[j] = float((top + np.log(np.exp(joint - top[:, None]).sum(1))).sum())
    return out / max(len(votes), 1)


def combine(votes: Votes, probs: np.ndarray, *, crowd: CrowdFit | None = None) -> Combined:
    """The final posterior of each image from its votes and the network's ``probs``.

    Args:
        votes: Every vote (sample indices aligned with ``probs``).
        probs: ``[N, C]`` the audit's mean softmax per image.
        crowd: The votes-only fit, if already made (``fit_crowd(votes)``).

    Example:
        >>> combined = combine(votes, mean_softmax)  # doctest: +SKIP
        >>> final_labels, beta = combined.labels, combined.beta  # doctest: +SKIP
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (votes.n_samples, votes.n_classes):
        raise ValueError(
            f"probs: expected [{votes.n_samples}, {votes.n_classes}], got {probs.shape}"
        )
    crowd = crowd or fit_crowd(votes)
    beta = float(BETAS[int(np.argmax(vote_likelihood_by_beta(probs, crowd, votes)))])
    prior = tempered_prior(probs, crowd.class_prior, beta)
    fit = fit_crowd(votes, image_prior=prior, init=crowd.posterior)
    return Combined(posterior=fit.posterior, beta=beta, fit=fit, crowd_only=crowd)
