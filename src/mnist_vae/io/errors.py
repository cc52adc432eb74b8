"""The project's expected failures. A stage that raises one of these prints its one-line
message and exits 2 (mnist_vae.io.cli); anything else is a bug and keeps its traceback."""


class MnistVaeError(Exception):
    """An expected failure whose message names the file or key and what to do."""


class ParamsError(MnistVaeError, ValueError):
    """A params.yaml value that cannot be used; the message names the dotted key."""


class DataError(MnistVaeError, RuntimeError):
    """Bad or unavailable input data or artifact; the message names the file and what to do."""


class StepMismatchError(MnistVaeError, RuntimeError):
    """The hand-written training step no longer computes objective.py's loss or its gradients."""


class MachineFault(MnistVaeError, OSError):
    """The machine refused a write: a full disk, a file-size limit, a read-only folder, no
    permission. The message names the file, the cause and what to do; nothing was half-written."""
