"""What every stage script shares: logging, clean errors, signal handling."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Callable

from .errors import MnistVaeError



def _terminate(signum, frame):  # SIGTERM -> SystemExit, so atomic writes clean up their temp files
    raise SystemExit(128 + signum)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(): expected failures print one clear message and exit 2; Ctrl-C and
    SIGTERM leave no partial output (every artifact is written to a temp file and renamed)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except MnistVaeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no partial output was kept", file=sys.stderr)
        # a second Ctrl-C during interpreter shutdown (tqdm's monitor, atexit) must not print a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(130)
