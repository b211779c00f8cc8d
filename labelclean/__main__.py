"""``python -m labelclean``: the entry point torchrun needs."""

from labelclean.cli import main

if __name__ == "__main__":
    main()
