"""Crowd-sourced labels: votes in, a consensus, final labels and annotator reliabilities out.

- :mod:`~labelclean.crowd.model`: the votes and the annotator model (a Dawid-Skene EM whose
  per-annotator confusions are shrunk toward the crowd's), majority vote, plain Dawid-Skene.
- :mod:`~labelclean.crowd.combine`: the audit's network and the crowd, combined per image.
- :mod:`~labelclean.crowd.annotators`: the per-annotator table.
- :mod:`~labelclean.crowd.simulate`: simulated crowds on clean labels.
- :mod:`~labelclean.crowd.scoring`: consensus and annotator ranking against known truth.
"""
