"""``python -m yoloforge ...``: the same command line as ``yoloforge ...``.

Under torchrun, torch's ``record`` writes an uncaught error to the file torchrun names
(TORCHELASTIC_ERROR_FILE), so its summary shows the failing rank's traceback. Elsewhere torch is
not imported for it (``yoloforge --help`` stays fast).
"""

import os

from yoloforge.cli import main

if __name__ == "__main__":  # not again when a spawned DataLoader worker imports this module
    if "TORCHELASTIC_ERROR_FILE" in os.environ:
        from torch.distributed.elastic.multiprocessing.errors import record

        main = record(main)
    raise SystemExit(main())
