"""Save a model as `config.json` + `model.safetensors`; load one from a folder or the Hub.

    >>> zoo.save_pretrained(model, "runs/drive", threshold=0.5)
    >>> model = zoo.from_pretrained("runs/drive")          # a local folder
    >>> model = zoo.from_pretrained("owner/drive-unet")    # a Hub repo (works offline once cached)

Weights are read only from safetensors (never pickle) and must fit the rebuilt model exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._checks import listing
from ._files import atomic_write
from ._model import SegmentationModel, create_model
from ._pretrained import PretrainedWeightsError
from ._spec import ModelSpec, check_scale

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
REQUIRED_KEYS = {"model": str, "num_classes": int, "in_channels": int, "model_kwargs": dict}
_LISTED = 5
"""How many keys an error lists before it says how many more there are."""


def bioseg_version() -> str:
    """The installed bioseg version, or the source tree's when it is not installed."""
    try:
        return importlib.metadata.version("bioseg")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def _repo_id_problem(value: str) -> str | None:
    """Why `value` is not a Hub repo id `owner/name` (the Hub's own rule, from huggingface_hub's
    `validate_repo_id`), or None when it is one."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as error:
        return str(error).split(". Use `repo_type`")[0].rstrip(".")
    return None if "/" in value else "a bioseg model's repo id has an owner: 'owner/name'"


def check_repo_id(repo_id: str) -> str:
    """Return `repo_id` if it has the shape `owner/name`, else raise a ValueError saying why."""
    problem = _repo_id_problem(repo_id)
    if problem:
        raise ValueError(f"invalid Hub repo id {repo_id!r}: {problem}; e.g. 'my-lab/drive-unet'")
    return repo_id


def save_pretrained(model: SegmentationModel, folder: str | Path, **extra_config: object) -> Path:
    """Write `model.safetensors` and `config.json` (model.config(), bioseg_version, extra_config).

    `extra_config` holds what the model itself does not know: threshold, classes, input_size...
    """
    config = model.config()
    clashes = sorted(set(extra_config) & set(config))
    if clashes:
        raise ValueError(
            f"extra_config cannot override {', '.join(clashes)}: they come from the model "
            "(model.config()); rebuild the model with the values you want instead"
        )
    config = {**config, "bioseg_version": bioseg_version(), **extra_config}
    text = json.dumps(config, indent=2) + "\n"  # serialise first: a TypeError writes nothing
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, {"format": "pt"}))
    atomic_write(folder / CONFIG_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return folder


Token = str | bool | None
"""A Hub token: a string is used; None lets huggingface_hub find the ambient one (HF_TOKEN, the
saved login); False sends none, for repo ids that a stranger typed (a web demo's visitors
must never reach the host's private repos through its token)."""


def download_file(
    repo_id: str, revision: str | None, filename: str, *, token: Token = None
) -> Path:
    """A file of a Hub repo, through the Hub cache (works offline once cached), fetched with
    `token`; any failure is a `PretrainedWeightsError` naming the repo, the file and the
    likely cause."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, token=token))
    # Anything that keeps the file from us (the HTTP client's own errors differ between
    # huggingface_hub versions) becomes one error naming the repo and the file.
    except Exception as error:
        if isinstance(error, LocalEntryNotFoundError):
            hint = (
                "it is not in the Hub cache (HF_HOME / HF_HUB_CACHE) and the Hub could not "
                "be reached (no network, or HF_HUB_OFFLINE=1); load it once while online"
            )
        elif isinstance(error, RepositoryNotFoundError):
            hint = "check the repo id; for a private repo set HF_TOKEN or run `hf auth login`"
        elif isinstance(error, RevisionNotFoundError):
            hint = "the repo has no such branch, tag or commit"
        elif isinstance(error, EntryNotFoundError):
            hint = "the repo has no such file: was it pushed with bioseg (trainers.push)?"
        elif isinstance(error, HfHubHTTPError):
            hint = "the Hub answered with an error"
        else:
            hint = "the Hub could not be reached, or the file could not be stored"
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise PretrainedWeightsError(
            f"could not get {filename} of Hub repo {repo_id} (revision "
            f"{revision or 'main'}): {hint}. {type(error).__name__}: {first_line}"
        ) from error


Locate = Callable[[str], Path]  # a file name of the model -> its path on this machine


def _hub(repo_id: str, revision: str | None, token: Token) -> tuple[Locate, str]:
    origin = f" (Hub repo {repo_id}, revision {revision or 'main'})"
    return functools.partial(download_file, repo_id, revision, token=token), origin


def _resolve(
    id_or_path: str | Path, revision: str | None, hub_only: bool, token: Token
) -> tuple[Locate, str]:
    """Where the model's files are (a local folder, else a Hub repo, fetched one by one when
    asked for), and a note of where they came from for messages."""
    if hub_only:
        return _hub(check_repo_id(str(id_or_path)), revision, token)
    path = Path(id_or_path)
    if path.is_dir():
        missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{path} has no {' and no '.join(missing)}; a bioseg model folder holds "
                f"{CONFIG_NAME} and {WEIGHTS_NAME}, as written by zoo.save_pretrained"
            )
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} applies to Hub repos, but {path} is a local folder; "
                "drop revision, or pass a repo id 'owner/name'"
            )
        return path.joinpath, ""
    if path.exists():
        raise ValueError(
            f"{path} is a file; from_pretrained expects a folder holding {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}, or a Hub repo id 'owner/name'"
        )
    problem = "a path" if isinstance(id_or_path, Path) else _repo_id_problem(id_or_path)
    if problem:
        raise ValueError(
            f"{str(id_or_path)!r} is neither an existing folder nor a Hub repo id ({problem}): "
            f"expected a folder holding {CONFIG_NAME} and {WEIGHTS_NAME}, or a repo id "
            "'owner/name'"
        )
    return _hub(id_or_path, revision, token)


def _read_config(path: Path, origin: str, untrusted: bool) -> dict[str, object]:
    """config.json as a dict, checked for the keys that rebuild the model; an `untrusted` one
    (a repo a stranger named) may not point the build at other files or repos."""
    where = f"{path}{origin}"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{where} must hold a JSON object, got {type(config).__name__}")
    missing = sorted(set(REQUIRED_KEYS) - set(config))
    if missing:
        raise ValueError(
            f"{where} lacks {', '.join(missing)}; a bioseg config.json needs "
            f"{', '.join(REQUIRED_KEYS)} (written by zoo.save_pretrained)"
        )
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(config[key], kind) or isinstance(config[key], bool):
            raise ValueError(f"{where}: '{key}' must be a {kind.__name__}, got {config[key]!r}")
    if reserved := sorted(RESERVED_KWARGS & set(config["model_kwargs"])):
        raise ValueError(
            f"{where}: model_kwargs may not set {', '.join(reserved)}: the saved weights are "
            "loaded over the model, and its classes and channels are top-level keys"
        )
    if untrusted and (
        located := sorted(k for k, v in config["model_kwargs"].items() if _names_a_place(v))
    ):
        raise ValueError(
            f"{where}: model_kwargs {', '.join(located)} name a path or another repo "
            f"({', '.join(repr(config['model_kwargs'][k]) for k in located)}); refused for a "
            "model named from outside this server"
        )
    return config


RESERVED_KWARGS = {"pretrained", "num_classes", "in_channels"}
"""Keys that config.json's model_kwargs may not hold: `pretrained` would fetch ImageNet
weights only to overwrite them with the saved ones (and before the size check)."""


def _names_a_place(value: object) -> bool:
    """Whether a model option names a file, folder or repo ('hf-hub:owner/x', '/srv', '~/w')."""
    return isinstance(value, str) and any(mark in value for mark in ("/", "\\", ":", "~", ".."))


def _check_weights(weights: dict[str, torch.Tensor], model: SegmentationModel, source: str) -> None:
    """Raise a ValueError naming `source` if `weights` hold NaN/inf or do not fit `model`."""
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise ValueError(
            f"{source} holds NaN or infinite values in {listing(bad, _LISTED)}; refusing to load "
            "them (the training run probably diverged: use an earlier checkpoint)"
        )
    expected = model.state_dict()
    problems = []
    if missing := sorted(set(expected) - set(weights)):
        problems.append(f"missing keys {listing(missing, _LISTED)}")
    if unexpected := sorted(set(weights) - set(expected)):
        problems.append(f"unexpected keys {listing(unexpected, _LISTED)}")
    shapes = [
        f"{key} (file {list(weights[key].shape)}, model {list(value.shape)})"
        for key, value in expected.items()
        if key in weights and weights[key].shape != value.shape
    ]
    if shapes:
        problems.append(f"other shapes for {listing(shapes, _LISTED)}")
    if problems:
        raise ValueError(
            f"{source} does not fit {model.spec.name} with num_classes={model.num_classes}, "
            f"in_channels={model.in_channels}, options {model.build_kwargs}: "
            f"{'; '.join(problems)}. The weights were saved for another model or class count "
            "than config.json describes"
        )


def from_pretrained(
    id_or_path: str | Path,
    *,
    revision: str | None = None,
    map_location: str | torch.device = "cpu",
    hub_only: bool = False,
    max_parameters: int | None = None,
    token: Token = None,
) -> SegmentationModel:
    """The model saved in a local folder or a Hub repo `owner/name`, in eval mode.

    A Hub repo is read through the Hub cache, so a cached one loads with no network or with
    HF_HUB_OFFLINE=1. `revision` (branch, tag or commit) applies to Hub repos only. The config
    is kept as `model.pretrained_config` (threshold, classes, input_size when saved), the
    mean and std saved in it replace the plugin's current ones in `model.spec`, and a saved
    `scale` becomes `model.scale` (the resolution `predict` runs at).
    `hub_only=True` reads a Hub repo even where a local folder has that name, and
    `max_parameters` refuses a config describing a larger model before its weights are fetched
    or any memory is taken (both for ids that strangers type into a web demo); with `hub_only`
    its config.json may not name paths or other repos in `model_kwargs`. `token` is the Hub
    token it is fetched with (None: the ambient one; False: none). `model.pretrained_folder`
    is where its files lie on this machine (the Hub cache's snapshot for a repo).
    """
    locate, origin = _resolve(id_or_path, revision, hub_only, token)
    config_path = locate(CONFIG_NAME)
    config = _read_config(config_path, origin, untrusted=hub_only)
    build = functools.partial(
        create_model,
        config["model"],
        num_classes=config["num_classes"],
        in_channels=config["in_channels"],
        **config["model_kwargs"],
    )
    if max_parameters is not None:
        with torch.device("meta"):  # shapes only: nothing is allocated
            count = sum(p.numel() for p in build().parameters())
        if count > max_parameters:
            raise ValueError(
                f"{config_path}{origin} describes a model of {count:,} parameters, over the "
                f"limit of {max_parameters:,}; its weights were not fetched"
            )
    weights_path = locate(WEIGHTS_NAME)
    model = build()
    try:
        weights = load_file(weights_path, device="cpu")
    except SafetensorError as error:
        raise ValueError(
            f"{weights_path}{origin} is not a valid safetensors file ({error}); bioseg loads "
            "weights only from safetensors, as written by zoo.save_pretrained"
        ) from error
    _check_weights(weights, model, f"{weights_path}{origin}")
    model.load_state_dict(weights, strict=True)
    model.pretrained_config = config
    model.pretrained_folder = config_path.parent
    model.spec = _saved_normalization(model.spec, config, f"{config_path}{origin}")
    model.scale = check_scale(config.get("scale", 1.0), f"{config_path}{origin}")
    return model.to(map_location).eval()


def _saved_normalization(spec: ModelSpec, config: dict, source: str) -> ModelSpec:
    """The spec with the mean and std saved beside the weights: the inputs the weights were
    trained on win over the plugin's current defaults."""
    if "mean" not in config and "std" not in config:
        return spec
    mean, std = config.get("mean"), config.get("std")
    try:
        mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        mean = std = ()
    if not mean or len(mean) != len(std) or min(std) <= 0:
        raise ValueError(
            f"{source}: 'mean' and 'std' must be lists of numbers of the same length, std "
            f"positive; got {config.get('mean')!r} and {config.get('std')!r}"
        )
    return dataclasses.replace(spec, mean=mean, std=std)
