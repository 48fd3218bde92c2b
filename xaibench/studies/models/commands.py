"""`xaibench train`: train a reference network (workflows/cases.smk and the other studies' rules)."""

import sys

from xaibench.studies.arguments import non_negative_int, positive_float, positive_int


def add_commands(commands) -> dict:
    """`xaibench train`."""
    train = commands.add_parser(
        "train", help="train a reference network (seeded, bit-reproducible on CPU)",
        description="Train MODEL (enso, convection, radar1, radar2, radar3, radar_vit, groundtruth) on a data set "
                    "written by the data step, keep the epoch with the lowest validation loss and write "
                    "DIR/model.safetensors "
                    "and DIR/model.json (metadata: config, data hash, history, skill). Options not given "
                    "take the model's defaults (the paper's setup; see xaibench.studies.models.training).")
    train.add_argument("model", metavar="MODEL",
                       help="enso, convection, radar1, radar2, radar3, radar_vit or groundtruth")
    train.add_argument("--data", required=True, metavar="FILE.nc", help="training data (netCDF, `xaibench data`)")
    train.add_argument("--out", required=True, metavar="DIR",
                       help="folder for model.safetensors and model.json; while training, DIR/checkpoint.pt "
                            "keeps the state after every epoch, and a run that finds it goes on from there "
                            "(same weights as an uninterrupted run; removed at the end)")
    train.add_argument("--epochs", type=positive_int, default=None, metavar="N")
    train.add_argument("--batch-size", type=positive_int, default=None, metavar="N")
    train.add_argument("--lr", type=positive_float, default=None, metavar="X", help="learning rate")
    train.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                       help="the optimizer (default: the model's, see xaibench.studies.models.training)")
    train.add_argument("--lr-schedule", dest="lr_schedule", choices=("constant", "cosine"), default=None,
                       help="constant (default) or cosine decay from --lr toward 0 over the epochs")
    train.add_argument("--seed", type=non_negative_int, default=None, metavar="N",
                       help="seed of the initial weights and the shuffling (default 0)")
    train.add_argument("--threads", type=positive_int, default=None, metavar="N",
                       help="torch threads during training (default 1; results are bit-identical only "
                            "for the same thread count)")
    train.add_argument("--eval-data", dest="eval_data", action="extend", nargs="+", default=[],
                       metavar="[NAME=]FILE.nc",
                       help="extra evaluation set(s), scored with the best model (name: the file's stem)")
    return {"train": _train}


def _train(args) -> int:
    from pathlib import Path

    from xaibench.errors import InputError
    from xaibench.studies.models.training import CHECKPOINT_FILE, format_epoch, train

    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                 "threads": args.threads, "optimizer": args.optimizer, "lr_schedule": args.lr_schedule}
    config = {key: value for key, value in overrides.items() if value is not None}
    evaluation = {}
    for item in args.eval_data:
        name, separator, path = item.partition("=")
        if not separator:
            name, path = Path(item).stem, item
        if not name or not path or name in evaluation:
            print(f"xaibench train: error: --eval-data {item!r}: give NAME=FILE.nc with a new name "
                  f"(names so far: {', '.join(evaluation) or 'none'})", file=sys.stderr)
            return 2
        evaluation[name] = path
    try:
        result = train(args.model, args.data, config, out=args.out, evaluation=evaluation,
                       progress=lambda record: print(format_epoch(record), flush=True),
                       checkpoint=Path(args.out) / CHECKPOINT_FILE)
    except InputError as error:  # bad input: one line, no traceback, status 2
        print(f"xaibench train: error: {error}", file=sys.stderr)
        return 2
    metadata = result.metadata
    skills = ", ".join(f"{name} {scores['skill']:.4f}" for name, scores in result.skill.items()
                       if scores["skill"] is not None)  # None: R^2 of a constant target
    print(f"best epoch {metadata['best_epoch']} of {metadata['epochs_run']}; {metadata['skill_name']}: {skills}")
    print(f"wrote {result.directory}/model.safetensors and model.json in {metadata['wall_time_s']:.1f} s")
    return 0
