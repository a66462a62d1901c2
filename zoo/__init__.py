"""bioseg's model zoo: segmentation models as plugins, built by name.

    >>> import zoo
    >>> zoo.list_models()
    >>> model = zoo.create_model("fcn8s", num_classes=1)

A plugin is one `.py` file in this folder (found with no reinstall), in a folder named by
`BIOSEG_PLUGIN_PATH`, or a module listed under the entry point group `bioseg.models`.
Importing `zoo` imports neither timm nor gradio; plugins load on the first lookup.
"""

from ._engines import ENGINE_ENV, ENGINES, Runner, cpu_has_bf16, engine_predict
from ._hub import from_pretrained, save_pretrained
from ._inference import fewest_pixels_tile, sliding_window_predict
from ._model import ModelBuildError, SegmentationModel, create_model, forward_input
from ._pretrained import PretrainedWeightsError, adapt_input_conv
from ._registry import (
    PluginWarning,
    add_spec,
    get_spec,
    list_models,
    register_model,
    register_prefix,
)
from ._spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, match_channels, normalize

__all__ = [
    "ENGINES",
    "ENGINE_ENV",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelBuildError",
    "ModelSpec",
    "PluginWarning",
    "PretrainedWeightsError",
    "Runner",
    "SegmentationModel",
    "adapt_input_conv",
    "add_spec",
    "cpu_has_bf16",
    "create_model",
    "engine_predict",
    "fewest_pixels_tile",
    "forward_input",
    "from_pretrained",
    "get_spec",
    "list_models",
    "match_channels",
    "normalize",
    "register_model",
    "register_prefix",
    "save_pretrained",
    "sliding_window_predict",
]
