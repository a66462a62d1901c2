"""Train a zoo model on a segmentation data set with Dice + IoU loss.

    python -m trainers.train --data drive:../shared/data/DRIVE           # the plan sizes the run
    python -m trainers.train --data dsb2018:../shared/data/DSB2018-nuclei --time-budget 20m
    python -m trainers.train --plan none --model timm/resnet18 --data folder:my_data --steps 2000
    python -m trainers.train --preset report --data isbi2012:../shared/data/ISBI2012-membrane
    python -m trainers.train --data msd:../shared/data/MSD-Hippocampus        # volumes, in 3D
    torchrun --nproc-per-node 2 -m trainers.train --data ...                   # DDP, one per GPU

Reads top to bottom: settings, data, model, the loop of steps (validation and a checkpoint every
--val-every steps), threshold, evaluation, push. The run is counted in optimizer steps; the plan
(the default) chooses them, the model and the crop from the data set and this machine's timed
speed, and prints why. Precision: bf16 autocast on a GPU that has it, else fp16 with a
GradScaler; on the CPU bf16 where its matrix units make it faster, else fp32; channels_last.
"""

from __future__ import annotations

from pathlib import Path

from trainers.cli import exit_on_user_error
from trainers.fit.loop import train
from trainers.fit.prepare import finetune_settings
from trainers.fit.settings import build_parser, load_config_file, resolve


def main(argv: list[str] | None = None) -> None:
    """The command line: a mistake in its input ends it with one `error:` line."""
    with exit_on_user_error():
        run_command(argv)


def run_command(argv: list[str] | None = None) -> Path:
    """Train as the command line `argv` says; the run folder. A mistake in the input is a
    ValueError, FileNotFoundError or KeyError (`trainers.cli.USER_ERRORS`) naming it."""
    parser = build_parser("python -m trainers.train", __doc__.splitlines()[0], epilog=__doc__)
    parser.add_argument(
        "--plan",
        choices=["auto", "none"],
        help="auto (the default, but for --preset and --config, which are whole recipes): "
        "derive the model and its width, crop size, crops per image, batch, precision, steps, "
        "validation interval, normalization and workers from the data set and this machine's "
        "timed speed (saved as plan.json; explicit flags win); with --finetune, the fine-tune's "
        "own plan (precision, pairs held back, crops, learning rate, scale); none: the "
        "settings' defaults",
    )
    args = parser.parse_args(argv)
    if _volumes(args):
        from trainers.volumes.train import run_volumes

        return run_volumes(args)
    base, plan = None, None
    if args.resume:
        base = load_config_file(args.resume / "train_config.json")
        base["output"] = str(args.resume)
    elif getattr(args, "finetune", None):
        base = finetune_settings(args.finetune)
        if args.plan != "none" and getattr(args, "data", None):
            from trainers.fit.plan_timing import auto_finetune_plan

            base = auto_finetune_plan(args, base)
    elif (args.plan or ("none" if args.preset or args.config else "auto")) == "auto":
        if not getattr(args, "data", None):
            parser.error("--data KIND:PATH is required, e.g. --data drive:../shared/data/DRIVE")
        from trainers.fit.plan_timing import auto_plan, planned_settings

        plan = auto_plan(args)
        base = planned_settings(plan, getattr(args, "in_channels", plan["in_channels"]))
    config = resolve(args, base)
    if not config.data:
        parser.error("--data is required, e.g. --data drive:../shared/data/DRIVE")
    if plan:
        from trainers.fit.plan_timing import check_budget

        check_budget(config, plan)
    return train(config, resume=args.resume is not None, plan=plan)


def _volumes(args) -> bool:
    """A new run on a data set of volumes (msd:, nnunet:, or a folder of volumes)."""
    from trainers.volumes.layouts import is_volume_spec

    data = getattr(args, "data", None)
    return bool(data) and not args.resume and is_volume_spec(data)


if __name__ == "__main__":
    main()
