"""`python -m zoo`: list the registered models as a Markdown table."""

from __future__ import annotations

import argparse

from zoo import get_spec, list_models


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo", description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'timm/*'")
    args = parser.parse_args(argv)
    print("| model | family | summary | pretrained | from |")
    print("| --- | --- | --- | --- | --- |")
    for name in list_models(args.pattern):
        spec = get_spec(name)
        sources = ", ".join(spec.pretrained_sources) or "none"
        print(f"| `{name}` | {spec.family} | {spec.summary} | {sources} | {spec.origin} |")


if __name__ == "__main__":
    main()
