"""What every stage script shares: logging, params loading, clean errors, signal handling."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Callable

from .data import DataError
from .params import ParamsError
from .step import StepMismatchError

log = logging.getLogger("mnist_vae")


def _terminate(signum, frame):  # SIGTERM -> SystemExit, so atomic writes clean up their temp files
    raise SystemExit(128 + signum)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(): expected failures print one clear message and exit non-zero."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except (ParamsError, DataError, StepMismatchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no partial output was kept", file=sys.stderr)
        sys.exit(130)
