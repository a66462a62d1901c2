"""The model registry: plugins register specs here, users look them up and build them.

Plugins are found three ways, once, on first use (never at `import zoo`):
1. every `zoo/*.py` whose name does not start with `_` (the built-ins, and any file dropped in);
2. every `*.py` in the folders named by `BIOSEG_PLUGIN_PATH` (separated by `os.pathsep`);
3. entry points in the group `bioseg.models`, unless `BIOSEG_DISABLE_PLUGIN_AUTOLOAD=1`.

A plugin that fails to import, or registers a name that is taken, gives a `PluginWarning` naming
its file and the error; every other model stays available.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ._spec import Builder, ModelSpec

ENTRY_POINT_GROUP = "bioseg.models"
BUILTIN_PLUGINS = frozenset({"fcn", "slices", "timm_unet", "unet", "unet3d", "vgg16_fcn"})
"""Modules of `zoo/` that ship with bioseg (also declared as entry points in pyproject.toml)."""

_ZOO_DIR = Path(__file__).resolve().parent

_specs: dict[str, ModelSpec] = {}
_resolvers: dict[str, Callable[[str], ModelSpec]] = {}
_loaded_modules: set[str] = set()
_discovered = False
_discovery_lock = threading.RLock()  # re-entrant: a plugin may list models
_origin = "runtime"


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered; the other models are unaffected."""


@contextmanager
def _loading(origin: str) -> Iterator[None]:
    """Attribute registrations to `origin`; on failure, undo the ones the plugin made."""
    global _origin
    previous, _origin = _origin, origin
    specs_before, resolvers_before = dict(_specs), dict(_resolvers)
    try:
        yield
    except Exception:
        _specs.clear()
        _specs.update(specs_before)
        _resolvers.clear()
        _resolvers.update(resolvers_before)
        raise
    finally:
        _origin = previous


def register_model(
    name: str,
    *,
    summary: str,
    family: str = "other",
    min_size: int = 1,
    spatial_dims: int = 2,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    pretrained_sources: tuple[str, ...] = (),
    **default_kwargs: object,
) -> Callable[[Builder], Builder]:
    """Decorator registering `builder(*, num_classes, in_channels, pretrained, **kwargs)`."""

    def decorate(builder: Builder) -> Builder:
        extra = {"mean": mean, "std": std}
        spec = ModelSpec(
            name=name,
            summary=summary,
            builder=builder,
            family=family,
            min_size=min_size,
            spatial_dims=spatial_dims,
            pretrained_sources=pretrained_sources,
            default_kwargs=dict(default_kwargs),
            origin=_origin,
            module=getattr(builder, "func", builder).__module__,  # a functools.partial too
            **{k: v for k, v in extra.items() if v is not None},
        )
        add_spec(spec)
        return builder

    return decorate


def add_spec(spec: ModelSpec) -> None:
    """Register a ready-made spec; a taken name stays with its first owner, with a warning."""
    owner = _specs.get(spec.name)
    if owner is not None and owner.module != spec.module:
        warnings.warn(
            f"bioseg: model '{spec.name}' from {spec.origin} ({spec.module}) is not registered: "
            f"the name is taken by {owner.origin} ({owner.module}). Rename it in its plugin file.",
            PluginWarning,
            stacklevel=3,
        )
        return
    _specs[spec.name] = spec


def register_prefix(prefix: str, resolver: Callable[[str], ModelSpec]) -> None:
    """Let `resolver(name)` describe any model whose name starts with `prefix` (e.g. 'timm/')."""
    _resolvers[prefix] = resolver


def _load_module(module_name: str, origin: str, file: Path | None = None) -> None:
    """Import a plugin module (from `file` when it is outside any package), isolating failures."""
    if module_name in _loaded_modules:
        return
    _loaded_modules.add(module_name)
    try:
        with _loading(origin):
            if file is None or module_name.startswith("zoo."):
                importlib.import_module(module_name)
            else:
                spec = importlib.util.spec_from_file_location(module_name, file)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
    except Exception as error:  # a plugin may raise anything; it must not take the registry down
        sys.modules.pop(module_name, None)
        where = str(file) if file else module_name
        frames = [
            f.lineno for f in traceback.extract_tb(error.__traceback__) if f.filename == where
        ]
        warnings.warn_explicit(
            f"bioseg: plugin {where} failed to load and is skipped "
            f"({type(error).__name__}: {error}); the other models remain available.",
            PluginWarning,
            filename=where,
            lineno=getattr(error, "lineno", None) or (frames[-1] if frames else 1),
        )


def _discover() -> None:
    """Import every plugin once; a second thread waits until all are in."""
    global _discovered
    if _discovered:
        return
    with _discovery_lock:
        if not _discovered:
            _import_plugins()
            _discovered = True


def _import_plugins() -> None:
    for path in sorted(_ZOO_DIR.glob("*.py")):
        if not path.stem.startswith("_"):
            builtin = path.stem in BUILTIN_PLUGINS
            _load_module(f"zoo.{path.stem}", "built-in" if builtin else f"drop-in {path}", path)
    for folder in filter(None, os.environ.get("BIOSEG_PLUGIN_PATH", "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.py")):
            if not path.stem.startswith("_"):
                name = f"bioseg_plugins.{Path(folder).name}_{path.stem}"
                _load_module(name, f"drop-in {path}", path)
    if os.environ.get("BIOSEG_DISABLE_PLUGIN_AUTOLOAD", "") not in ("", "0"):
        return
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist
        origin = f"entry point {dist.name} {dist.version}" if dist else "entry point"
        _load_module(entry_point.module, origin)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell-style `pattern`, sorted."""
    _discover()
    return sorted(name for name in _specs if fnmatch.fnmatch(name, pattern))


def get_spec(name: str) -> ModelSpec:
    """The spec of model `name`; an unknown name raises `KeyError` listing the closest names."""
    _discover()
    if name in _specs:
        return _specs[name]
    for prefix, resolver in _resolvers.items():
        if name.startswith(prefix):
            return resolver(name)
    close = difflib.get_close_matches(name, list(_specs), n=5, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    prefixes = ", ".join(f"'{p}<name>'" for p in _resolvers)
    raise KeyError(
        f"Unknown model '{name}'.{hint} See zoo.list_models() for all names"
        + (f"; also accepted: {prefixes}." if prefixes else ".")
    )
