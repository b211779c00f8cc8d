"""``labelclean check``: validate a dataset and build its image cache without training."""
