"""params.yaml as typed settings, validated once when a stage loads it.

An unknown key, a wrong type or an impossible value raises :class:`ParamsError` with one line
naming the dotted key, before anything is written. Code reads ``p.train.epochs``.

A stage gets only what its entry in dvc.yaml declares (:func:`load_for_stage`): reading any
other key raises at once, so a stage cannot depend on a param DVC does not know it depends on.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import layout, yamlfile
from .errors import ParamsError

__all__ = ["Params", "ParamsError", "load", "load_for_stage", "validate"]

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _quantiles(value: list[float]) -> list[float]:
    if len(value) != 2 or not 0 < value[0] < value[1] < 1:
        raise ValueError("must be [low, high] with 0 < low < high < 1")
    return value


class DataParams(_Section):
    threshold: float = Field(gt=0, lt=1)
    train_limit: PosInt | None  # the first N images of each set (fast profiles); null: all
    test_limit: PosInt | None


class TrainOverrides(_Section):
    """What one model may train differently from the shared `train` section."""

    epochs: PosInt | None = None
    batch_size: PosInt | None = None
    lr: float | None = Field(default=None, gt=0, le=10)
    seed: NonNegInt | None = None


class ModelParams(_Section):
    latent_dim: PosInt
    encoder_hidden: list[PosInt] = Field(min_length=1)  # the fused step needs at least one hidden layer
    decoder_hidden: list[PosInt] | None = Field(default=..., min_length=1)
    train: TrainOverrides | None = None

    def training(self, shared: "TrainParams") -> "TrainParams":
        """The shared train params with this model's overrides applied."""
        if self.train is None:
            return shared
        return shared.model_copy(update=self.train.model_dump(exclude_none=True))

    @property
    def decoder_sizes(self) -> list[int]:
        """The decoder's hidden sizes: as given, or (null) the encoder's mirrored."""
        return list(self.decoder_hidden) if self.decoder_hidden is not None else list(reversed(self.encoder_hidden))


class TrainParams(_Section):
    epochs: PosInt
    batch_size: PosInt
    lr: float = Field(gt=0, le=10)
    seed: NonNegInt
    device: str
    step: Literal["fused", "autograd"]

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")


class TrackingParams(_Section):
    enabled: bool
    every: PosInt
    reconstruction_indices: list[NonNegInt] = Field(min_length=1)


class ManifoldParams(_Section):
    n: int = Field(ge=2)
    quantiles: list[float]

    _q = field_validator("quantiles")(_quantiles)


class EvaluateParams(_Section):
    batch_size: PosInt
    iwae_k: PosInt
    iwae_images: PosInt | None
    iwae_chunk: PosInt
    active_unit_threshold: float = Field(gt=0)
    seed: NonNegInt


class GridsParams(_Section):
    reconstruction_scale: PosInt
    prior_samples: PosInt
    prior_nrow: PosInt
    seed: NonNegInt


class GifSpan(_Section):
    start: NonNegInt
    stop: PosInt | None
    step: PosInt
    seconds_per_frame: float = Field(ge=0.01, le=10)

    @model_validator(mode="after")
    def _stop_after_start(self) -> "GifSpan":
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(f"stop: must be greater than start ({self.start}), got {self.stop}")
        return self


class GifsParams(_Section):
    manifold_all: GifSpan
    manifold_early: GifSpan
    reconstruction_all: GifSpan
    reconstruction_early: GifSpan
    reconstruction_scale: PosInt
    manifold_scale: PosInt
    max_mb: float = Field(gt=0)
    min_psnr_db: float = Field(gt=0)


class AnomalyParams(_Section):
    models: list[str]  # the models the anomaly study runs on (anomaly-kl-stats@<model>)
    k: float = Field(gt=0)
    seed: NonNegInt
    noise_images: PosInt
    elbo_samples: PosInt
    batch_size: PosInt


class NumericsParams(_Section):
    """How every torch stage computes on a CPU (mnist_vae.core.numerics)."""

    mode: Literal["universal", "fast"]
    threads: PosInt | None
    kernels: Literal["native", "aten-default", "mkl-compatible", "generic"] = "native"

    @model_validator(mode="before")
    @classmethod
    def _portable_retired(cls, data: Any) -> Any:
        # a params file from before the retirement gets the reason and the way on, not a bare "must be one of"
        if isinstance(data, dict) and data.get("mode") == "portable":
            raise ValueError("mode: portable was retired (universal mode is exact on every CPU, within 1.3x of "
                             "portable's time); use universal, or fast")
        return data


class Params(_Section):
    data: DataParams
    numerics: NumericsParams
    models: dict[str, ModelParams] = Field(min_length=1)
    train: TrainParams
    tracking: TrackingParams
    manifold: ManifoldParams
    evaluate: EvaluateParams
    grids: GridsParams
    gifs: GifsParams
    anomaly: AnomalyParams

    @model_validator(mode="after")
    def _studied_models_exist(self) -> "Params":
        for name in self.models:
            if not layout.MODEL_NAME.fullmatch(name):
                raise ValueError(f"models: has the key {name!r}, which is not a usable model name: use "
                                 f"{layout.MODEL_NAME_RULE} (it names the model's files and its stages)")
        for i, name in enumerate(self.anomaly.models):
            if name not in self.models:
                raise ValueError(f"anomaly.models: entry {i} names '{name}', which is not a model under `models` "
                                 f"(known: {', '.join(self.models)})")
        if len(set(self.anomaly.models)) != len(self.anomaly.models):
            raise ValueError("anomaly.models: lists a model twice")
        return self

    def model(self, name: str) -> ModelParams:
        if name not in self.models:
            raise ParamsError(f"params: no model 'models.{name}' (known: {', '.join(self.models)})")
        return self.models[name]


def _dotted(loc: tuple) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _message(error: dict[str, Any]) -> str:
    """One line for pydantic's first error, in the words of the old hand-written validator."""
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p in
                                                                          ("int", "none", "list[int]"))))
    key = _dotted(loc)
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return f"params: unknown key '{key}'" + (f" (not a key of '{parent}')" if parent else "")
    if kind == "missing":
        return f"params: missing key '{key}'"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        field, sep, rest = msg.partition(": ")
        if sep and field.replace(".", "").replace("_", "").isalnum():  # "field: message" from a model validator
            return f"params: '{key + '.' if key else ''}{field}' {rest}"
    if not key:
        return f"params: {msg}"
    return f"params: '{key}' {msg[0].lower() + msg[1:]}, got {error.get('input')!r}"


def validate(raw: Any) -> Params:
    """Check a parsed params mapping; raise ParamsError naming the first bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params: the file must hold a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_message(exc.errors()[0])) from None


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file."""
    return validate(_read(Path(path)))


def _read(path: Path) -> Any:
    """The parsed params file (duplicate keys rejected); ParamsError naming the file."""
    try:
        return yamlfile.loads(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params: {path} not found (run stages from the repository root, where params.yaml "
                          f"is; the working directory is {Path.cwd()})") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {' '.join(str(exc).split())}") from None


# --- what a stage may read ------------------------------------------------------------------


class StageView:
    """A read-only view of validated params that raises on any key the stage does not declare.

    ``declared`` are dvc.yaml's params entries for the stage: a section ("train") or a dotted
    key ("train.device"); an attribute is readable when it or a section above it is declared.
    """

    def __init__(self, node: Any, declared: set[str], stage: str, prefix: str = ""):
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_declared", declared)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_prefix", prefix)

    def _get(self, name: str, value: Any) -> Any:
        key = f"{self._prefix}{name}"
        parts = key.split(".")
        if any(".".join(parts[:i]) in self._declared for i in range(1, len(parts) + 1)):
            return value
        if any(d.startswith(key + ".") for d in self._declared):
            return StageView(value, self._declared, self._stage, key + ".")
        raise ParamsError(f"params: stage '{self._stage}' reads '{key}', which its entry in dvc.yaml does not "
                          f"declare (declared: {', '.join(sorted(self._declared))}); add it to the stage's params")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._get(name, getattr(self._node, name))

    def __getitem__(self, name: str) -> Any:
        return self._get(name, self._node[name])

    def __iter__(self):
        raise TypeError(f"params: iterate over a declared section of stage '{self._stage}', not a partial one")

    def model(self, name: str) -> ModelParams:
        models = self._get("models", self._node.models)
        known = models._node if isinstance(models, StageView) else models
        if name not in known:
            raise ParamsError(f"params: no model 'models.{name}' (known: {', '.join(known)})")
        return models[name]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("params are read-only")


def stage_for_command(stages: dict[str, Any], argv: list[str]) -> str | None:
    """The resolved stage (mnist_vae.io.pipeline) whose cmd runs this script with these positional
    arguments; a per-model stage's cmd names no model (DVC_STAGE does, mnist_vae.io.cli), so its
    model argument is the part of the stage name after '@'."""
    script = Path(argv[0]).resolve()
    args = [a for a in argv[1:] if not a.startswith("-")]
    for name, stage in stages.items():
        tokens = [t for t in shlex.split(stage.get("cmd", ""), comments=True) if "=" not in t or t.startswith("-")]
        if "python" not in tokens:
            continue
        rest = tokens[tokens.index("python") + 1:]
        positional = [t for t in rest[1:] if not t.startswith("-")]
        if "@" in name and not positional:
            positional = [name.split("@", 1)[1]]
        if rest and Path(rest[0]).resolve() == script and positional == args:
            return name
    return None


def declared_params(stages: dict[str, Any], stage: str) -> set[str]:
    """A resolved stage's params entries: sections ("train") and dotted keys ("train.device")."""
    entries = stages[stage].get("params") or []
    out = set()
    for entry in entries:
        if isinstance(entry, dict):  # {file: [keys]}
            for keys in entry.values():
                out.update(keys)
        else:
            out.add(entry)
    return out


def load_for_stage(path: str | Path = "params.yaml", dvc_yaml: str | Path = "dvc.yaml",
                   argv: list[str] | None = None) -> Params | StageView:
    """Validate the whole file, then give the running stage only what dvc.yaml declares for it.

    The stage is the one DVC names in $DVC_STAGE when it runs the command, else the one whose
    resolved cmd matches this process's command line (a stage script run by hand, same script,
    same model argument); a script run by hand with other arguments (tests, debugging) gets the
    whole params.
    """
    from . import pipeline

    raw = _read(Path(path))
    params = validate(raw)
    if not Path(dvc_yaml).exists():
        return params
    try:  # params.yaml is DVC's vars for the templating: the file just read, not read again
        stages = pipeline.resolve(yamlfile.loads(Path(dvc_yaml).read_text()) or {}, raw)
    except (yaml.YAMLError, pipeline.TemplateError) as exc:
        raise ParamsError(f"params: cannot resolve the stages of {dvc_yaml}: {' '.join(str(exc).split())}") from None
    stage = os.environ.get("DVC_STAGE") if argv is None else None
    if stage not in stages:
        stage = stage_for_command(stages, argv if argv is not None else sys.argv)
    if stage is None:
        return params
    return StageView(params, declared_params(stages, stage), stage)
