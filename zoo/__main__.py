"""`python -m zoo`: list the registered models as a Markdown table."""

from __future__ import annotations

import argparse
import inspect

from zoo import ModelSpec, get_spec, list_models

_COMMON = {"num_classes", "in_channels", "pretrained"}  # every builder takes these


def options(spec: ModelSpec) -> str:
    """The builder's own keyword options with their defaults, e.g. `fc_channels=4096`."""
    try:
        parameters = inspect.signature(spec.builder).parameters.values()
    except (TypeError, ValueError):  # a builder without a signature: nothing to show
        return ""
    defaults = {**{p.name: p.default for p in parameters}, **spec.default_kwargs}
    return ", ".join(
        f"`{name}={value!r}`" if value is not inspect.Parameter.empty else f"`{name}`"
        for name, value in defaults.items()
        if name not in _COMMON and not name.startswith("_")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'timm/*'")
    args = parser.parse_args(argv)
    print("| model | family | summary | options | pretrained | from |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in list_models(args.pattern):
        spec = get_spec(name)
        sources = ", ".join(spec.pretrained_sources) or "none"
        print(
            f"| `{name}` | {spec.family} | {spec.summary} | {options(spec)} | {sources} "
            f"| {spec.origin} |"
        )


if __name__ == "__main__":
    main()
