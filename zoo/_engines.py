"""Inference engines: a model's prediction through eager PyTorch, ONNX Runtime, OpenVINO, or
PyTorch under bf16 autocast on a CPU's bf16 matrix units (AVX-512 BF16, AMX).

    predict, used = zoo.engine_predict(model, "onnxruntime")
    probabilities = predict(x)  # as model.predict_normalized(x)
    predict, used = zoo.engine_predict(model, sample=image)  # the default, chosen by measurement

The default (no engine named, `$BIOSEG_ENGINE` unset) is ONNX Runtime, the fastest exact engine
measured here; given a `sample` (an image of the kind the model will see, 1 x C x H x W in
[0, 1] as read: `forward_input` prepares it) on a CPU with bf16 units, bf16 autocast is timed
against it and taken where it is faster and its mask agrees with float32's on at least
`AGREEMENT` of the sample's pixels (the figures logged).

For the runtimes, the model's network is exported once to ONNX (torch's exporter, height and
width left dynamic) and the file is cached under `$BIOSEG_CACHE` (default
`~/.cache/bioseg/engines`), named by a hash of the model's config and weights, and of the
versions of torch and the export; a later load finds it instead of exporting again.

An engine the user named (`engine`, or `$BIOSEG_ENGINE`) runs or raises an `EngineError` naming
it and the cause (its package missing, an operator the exporter does not know, an output of the
wrong shape). Only the automatic choice falls back to eager PyTorch, with one warning saying
why; `used` says which engine answers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._model import SegmentationModel, forward_input, to_probabilities

__all__ = [
    "CACHE_ENV",
    "ENGINES",
    "ENGINE_ENV",
    "EngineError",
    "Runner",
    "cpu_has_bf16",
    "engine_predict",
    "exported_onnx",
]

LOG = logging.getLogger("bioseg.engines")
ENGINES = ("eager", "onnxruntime", "openvino", "bf16")
AGREEMENT = 0.999  # of a sample's pixels whose bf16 mask must equal float32's
DEFAULT_ENGINE = "onnxruntime"  # the fastest exact one at 512x512 on 2 cores: bench_engines.py
ENGINE_ENV = "BIOSEG_ENGINE"
CACHE_ENV = "BIOSEG_CACHE"
_EXPORT_FORMAT = 1  # bump when the export itself changes, so older cached files are not reused
_EXPORT_SIZE = 128  # the example input's side; height and width stay dynamic

Predict = Callable[[Tensor], Tensor]


class EngineError(ValueError):
    """An engine the user named cannot run the model: the message names both and the cause."""


@dataclass(frozen=True)
class Runner:
    """A model's probabilities through an engine, called as `model.predict_normalized` is (at the
    input's resolution, no `scale` applied). `release()`
    hands back the working memory the engine keeps sized for the largest input it has run
    (ONNX Runtime's arena, OpenVINO's buffers), at the cost of growing it again on the next
    run: worth it after an input much larger than the usual."""

    predict: Predict
    release: Callable[[], None] = field(default=lambda: None)

    def __call__(self, x: Tensor) -> Tensor:
        return self.predict(x)


def cache_dir() -> Path:
    """Where exported models are kept: `$BIOSEG_CACHE/engines`, or `~/.cache/bioseg/engines`."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bioseg"
    return Path(root) / "engines"


def _fingerprint(model: SegmentationModel) -> str:
    """A hash of what the exported graph depends on: architecture, weights, torch version."""
    digest = hashlib.sha256()
    digest.update(json.dumps(model.config(), sort_keys=True).encode())
    digest.update(f"{torch.__version__}/{_EXPORT_FORMAT}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()[:32]


def exported_onnx(model: SegmentationModel, cache: Path | None = None) -> Path:
    """The model's network as an ONNX file (logits, dynamic height and width), exported on
    the first call and found in `cache` (default: `cache_dir()`) afterwards."""
    name = f"{model.spec.name.replace('/', '-')}-{_fingerprint(model)}.onnx"
    path = (cache or cache_dir()) / name
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    side = max(_EXPORT_SIZE, model.spec.min_size)
    example = torch.zeros(1, model.in_channels, side, side)
    dims = {
        2: torch.export.Dim("height", min=model.spec.min_size),
        3: torch.export.Dim("width", min=model.spec.min_size),
    }
    LOG.info("exporting %s to ONNX (once; cached at %s)", model.spec.name, path)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        partial = Path(scratch) / path.name
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals
            torch.onnx.export(
                model.eval().net,
                (example,),
                partial,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=(dims,),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        os.replace(partial, path)  # whole or absent, even with two processes exporting
    return path


Session = tuple[Callable[[np.ndarray], np.ndarray], Callable[[], None]]  # run, release


def _onnxruntime(path: Path, threads: int, smallest: tuple[int, ...]) -> Session:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    shrink = onnxruntime.RunOptions()  # a run that ends by freeing the arena's unused chunks
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    tiny = np.zeros(smallest, dtype=np.float32)

    def release() -> None:
        session.run(None, {"image": tiny}, shrink)

    return lambda x: session.run(None, {"image": x})[0], release


def _openvino(path: Path, threads: int, smallest: tuple[int, ...]) -> Session:
    import openvino

    core = openvino.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(str(path), "CPU", config)  # f32: no silent bf16 on new CPUs
    return lambda x: compiled.create_infer_request().infer({0: x})[0], compiled.release_memory


_RUNTIMES = {"onnxruntime": _onnxruntime, "openvino": _openvino}


def _runtime_predict(
    model: SegmentationModel, engine: str, threads: int, cache: Path | None
) -> Runner:
    smallest = (1, model.in_channels, model.spec.min_size, model.spec.min_size)
    run, release = _RUNTIMES[engine](exported_onnx(model, cache), threads, smallest)

    def predict(x: Tensor) -> Tensor:
        model.check_input(x)
        logits = torch.from_numpy(run(x.detach().cpu().float().contiguous().numpy()))
        model.check_output(logits, x)
        return to_probabilities(logits)

    predict(torch.zeros(smallest))  # fails here, not in a visitor's request, if it fails
    return Runner(predict, release)


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX-512 BF16 or AMX), as oneDNN sees it."""
    return torch.backends.mkldnn.is_available() and bool(
        getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
    )


def _bf16_runner(model: SegmentationModel) -> Runner:
    """`model.predict_normalized` under CPU bf16 autocast, channels_last."""
    model.to(memory_format=torch.channels_last)

    def predict(x: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.predict_normalized(x.contiguous(memory_format=torch.channels_last))

    return Runner(predict)


def _mask(probabilities: Tensor) -> Tensor:
    return probabilities > 0.5 if probabilities.shape[1] == 1 else probabilities.argmax(1)


def _seconds(runner: Predict, x: Tensor, repeats: int = 3) -> float:
    runner(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _measured(
    model: SegmentationModel, sample: Tensor, threads: int | None, cache: Path | None
) -> tuple[Runner, str]:
    """The default engine, or bf16 where it agrees with float32 on `sample` and is faster."""
    default, used = _automatic(model, threads, cache)
    bf16 = _bf16_runner(model)
    agreement = float(
        (_mask(forward_input(model, sample)) == _mask(forward_input(model, sample, bf16)))
        .float()
        .mean()
    )
    if agreement < AGREEMENT:
        LOG.info(
            "%s: bf16's mask agrees with float32's on %.4f%% of the sample's pixels, below "
            "%.1f%%: %s",
            model.spec.name,
            100 * agreement,
            100 * AGREEMENT,
            used,
        )
        return default, used
    fast, slow = (
        _seconds(functools.partial(forward_input, model, forward=runner), sample)
        for runner in (bf16, default)
    )
    chosen = (bf16, "bf16") if fast < slow else (default, used)
    LOG.info(
        "%s: bf16 %.0f ms (mask agreement %.4f%%), %s %.0f ms: %s",
        model.spec.name,
        1e3 * fast,
        100 * agreement,
        used,
        1e3 * slow,
        chosen[1],
    )
    return chosen


def engine_predict(
    model: SegmentationModel,
    engine: str | None = None,
    *,
    threads: int | None = None,
    sample: Tensor | None = None,
    cache: Path | None = None,
) -> tuple[Runner, str]:
    """`model.predict_normalized` through `engine` (default `$BIOSEG_ENGINE`, else the measured
    fastest: with a `sample` image in [0, 1] on a CPU with bf16 units, bf16 autocast where it
    is faster and agrees), and the name of the engine that answers. A named engine that cannot
    run the model raises an `EngineError`; the automatic choice falls back to "eager" (logged,
    with the reason). An exported graph is kept in `cache` (default: `cache_dir()`): a web
    app gives a visitor's model its session's folder."""
    if engine:
        return _named(model, engine, threads, "", cache)
    if named := os.environ.get(ENGINE_ENV):
        return _named(model, named, threads, f" (named by {ENGINE_ENV})", cache)
    if sample is not None and cpu_has_bf16():
        return _measured(model, sample, threads, cache)
    return _automatic(model, threads, cache)


def _named(
    model: SegmentationModel, engine: str, threads: int | None, source: str, cache: Path | None
) -> tuple[Runner, str]:
    """`engine` as the user named it (`source` says where): it runs, or an EngineError."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}{source}; choose one of {', '.join(ENGINES)}")
    try:
        return _runner(model, engine, threads, cache), engine
    except Exception as error:  # an operator the exporter or the runtime cannot handle, ...
        raise EngineError(
            f"{model.spec.name}: engine {engine}{source} failed ({_cause(error)}); name another "
            f"engine, or none to let bioseg choose"
        ) from error


def _automatic(
    model: SegmentationModel, threads: int | None, cache: Path | None
) -> tuple[Runner, str]:
    """The default engine, or eager PyTorch where it cannot run the model (logged, with why)."""
    try:
        return _runner(model, DEFAULT_ENGINE, threads, cache), DEFAULT_ENGINE
    except Exception as error:  # nobody asked for this engine: eager answers instead
        LOG.warning(
            "%s: cannot run on %s (%s); using eager PyTorch",
            model.spec.name,
            DEFAULT_ENGINE,
            _cause(error),
        )
        return Runner(model.predict_normalized), "eager"


def _runner(
    model: SegmentationModel, engine: str, threads: int | None, cache: Path | None
) -> Runner:
    if engine == "eager":
        return Runner(model.predict_normalized)
    if engine == "bf16":
        return _bf16_runner(model)
    if importlib.util.find_spec(engine) is None:
        raise ModuleNotFoundError(f"engine {engine} is not installed (pip install {engine})")
    return _runtime_predict(model, engine, threads or torch.get_num_threads(), cache)


def _cause(error: Exception) -> str:
    """An exception's type and the first line of its message."""
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {first_line}"
