"""The ``labelclean`` command line: a thin typer layer over the library.

Each sub-command lives in its own module here and registers itself on ``app`` when imported.
"""

from labelclean.cli._app import app, main

# Importing a command module registers its sub-commands on `app`.
from labelclean.cli import audit, demo, check, evaluate, finetune, report, review  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]
