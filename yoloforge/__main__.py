"""``python -m yoloforge ...``: the same command line as ``yoloforge ...``."""

from yoloforge.cli import main

if __name__ == "__main__":  # not again when a spawned DataLoader worker imports this module
    raise SystemExit(main())
