"""What every stage script shares: logging, clean errors, signal handling."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Callable

from .errors import MnistVaeError



def model_argument(ap, help: str) -> None:
    """The stage's model name: under DVC it comes whole from DVC_STAGE (train@<name>), which DVC
    sets for every stage it runs, so no shell splits or expands it (dvc.yaml's commands carry no
    name); by hand it is the one argument."""
    ap.add_argument("model", nargs="?", help=f"{help}; under DVC: the stage's own (DVC_STAGE)")


def model_name(ap, given: str | None) -> str:
    """The model this stage runs for (:func:`model_argument`); argparse's one-line error when
    there is none, or when DVC_STAGE and the argument name two different models."""
    stage = os.environ.get("DVC_STAGE", "")
    from_dvc = stage.split("@", 1)[1] if "@" in stage else None
    if from_dvc is not None and given is not None and given != from_dvc:
        ap.error(f"the argument names model {given!r} but DVC runs stage {stage!r}")
    name = from_dvc if from_dvc is not None else given
    if name is None:
        ap.error("name a model: python stages/<stage>.py <model> (under DVC, DVC_STAGE names it)")
    return name


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
