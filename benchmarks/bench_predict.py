"""`trainers.predict` against the plain loop a user would write, on the same folder, in the same
run: images per second and peak resident memory of each, as a Markdown table.

    python benchmarks/bench_predict.py --images 120

The folder: `--images` 512x512 crops of the DSB 2018 fluorescence example (PNG), through the
bundled `dsb2018-unet`. The plain loop reads each image (`read_image`), predicts it
(`model.predict`, eager PyTorch in float32) and writes its mask PNG, one after the other. The
command decodes in worker processes, writes in a thread, and runs the engine it measures
fastest (bf16 autocast where the CPU has bf16 units and it agrees with float32, else ONNX
Runtime). Each side runs in a process of its own, one after the other.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dsb2018" / "fluorescence-98a46348.png"
WEIGHTS = REPO / "weights" / "dsb2018-unet"

PLAIN_LOOP = """
import sys
from pathlib import Path
import numpy as np, torch
from PIL import Image
import zoo
from trainers.data.readers import read_image
model = zoo.from_pretrained(sys.argv[1])
out = Path(sys.argv[3])
for path in sorted(Path(sys.argv[2]).glob("*.png")):
    image = torch.from_numpy(read_image(path)).permute(2, 0, 1)[None]
    mask = model.predict(image)[0, 0].numpy() > model.pretrained_config["threshold"]
    Image.fromarray(mask.astype(np.uint8) * 255).save(out / path.name)
"""


def make_folder(folder: Path, count: int) -> None:
    pixels = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    tiled = np.tile(pixels, (2, 2, 1))  # 1040 x 1392: room for shifted 512 x 512 crops
    for number in range(count):
        top, left = (number * 37) % 500, (number * 53) % 850
        Image.fromarray(tiled[top : top + 512, left : left + 512]).save(
            folder / f"{number:04d}.png"
        )


def timed(command: list[str]) -> tuple[float, float]:
    """Seconds and the peak resident memory (MB, GNU time's %M: of the largest process) of a
    command run to its end."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], check=True, cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    return seconds, int(done.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    (work / "in").mkdir()
    (work / "plain").mkdir()
    make_folder(work / "in", args.images)
    plain = timed([sys.executable, "-c", PLAIN_LOOP, str(WEIGHTS), str(work / "in"),
                   str(work / "plain")])  # fmt: skip
    command = timed([sys.executable, "-m", "trainers.predict", "--weights", str(WEIGHTS),
                     "--input", str(work / "in"), "--output", str(work / "out")])  # fmt: skip
    print(f"{args.images} images of 512 x 512, dsb2018-unet, this machine's CPU\n")
    print("| | images/s | peak memory (MB) |\n| --- | ---: | ---: |")
    for name, (seconds, memory) in (("plain loop", plain), ("trainers.predict", command)):
        print(f"| {name} | {args.images / seconds:.2f} | {memory:.0f} |")
    print(f"\ntrainers.predict: {plain[0] / command[0]:.2f}x the plain loop's images per second")
    agree = [
        np.mean(np.asarray(Image.open(work / "plain" / p.name)) ==
                np.asarray(Image.open(work / "out" / f"{p.stem}_mask.png")))
        for p in sorted((work / "in").glob("*.png"))
    ]  # fmt: skip
    print(f"masks agree with the plain loop's on {100 * float(np.mean(agree)):.3f} % of pixels")


if __name__ == "__main__":
    main()
