"""Download data sets, copy demo samples, and describe a data set's splits.

    python -m trainers.data download kvasir                      # into $BIOSEG_DATA
    python -m trainers.data download dsb2018 --samples 4 --into examples/
    python -m trainers.data info drive:../shared/data/DRIVE   # splits, classes, fingerprint

Bad input prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .download import DOWNLOADS, data_home, download, samples
from .layouts import KINDS, parse_spec


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m trainers.data", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="download a public data set, or copy samples")
    get.add_argument("name", help=f"one of {', '.join(DOWNLOADS)}, or KIND:PATH with --samples")
    get.add_argument("--into", type=Path, help="destination folder (default: $BIOSEG_DATA)")
    get.add_argument("--samples", type=int, help="copy N image/mask pairs as PNGs into --into")
    info = commands.add_parser(
        "info", help="samples per split, class names and the fingerprint of a data set"
    )
    info.add_argument("spec", help=f"KIND:PATH, KIND one of {', '.join(KINDS)}")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            _info(args.spec)
        elif args.samples is not None:
            for path in samples(args.name, args.samples, args.into or Path.cwd()):
                print(path)
        else:
            root = download(args.name, args.into or data_home())
            print(f"{DOWNLOADS[args.name].kind}:{root}")
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _info(spec: str) -> None:
    source = parse_spec(spec)
    splits = source.splits()
    print(f"{source.kind}:{source.root}")
    print(f"classes: {', '.join(source.class_names)}")
    for split, items in splits.items():
        print(f"{split}: {len(items)}")
    if splits.get("train"):
        from .fingerprint import describe, fingerprint

        print(
            "fingerprint of the training images:\n  " + "\n  ".join(describe(fingerprint(source)))
        )


if __name__ == "__main__":
    sys.exit(main())
