"""``vaeinv train --data FILE --out DIR``: a prior from the user's own fields (see
[`train_on`][vaeinv.vae.train_on]); also under ``torchrun`` on several processes."""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_data_arguments", "train_data"]

_FORMATS = ".npy, .npz, .h5/.hdf5, .zarr, .safetensors"


def add_data_arguments(parser) -> None:
    """The ``train`` options of a run on the user's data."""
    group = parser.add_argument_group(
        "training on your own fields (--data; every other setting from the default recipe)"
    )
    group.add_argument(
        "--data",
        metavar="FILE",
        help=f"a stack (N, ny, nx) or, with --patches, an image: {_FORMATS}",
    )
    group.add_argument("--key", help="the array's name in a file holding several")
    group.add_argument("--latent-dim", type=int, help="latent dimensions (default: ny*nx/16)")
    group.add_argument("--epochs", type=int, help="training epochs at most (default 30)")
    group.add_argument("--log", action="store_true", help="take logs (a permeability stack)")
    group.add_argument(
        "--validation-fraction", type=float, help="share held out, in [0, 0.5] (default 0.1)"
    )
    group.add_argument("--patches", type=int, metavar="SIZE", help="cut SIZE x SIZE patches")
    group.add_argument("--stride", type=int, help="the patches' stride (default SIZE // 4)")
    group.add_argument(
        "--recipe", dest="recipe_file", metavar="FILE",
        help="a TOML recipe ([vae], [training], calibrate) replacing the default's entries",
    )  # fmt: skip
    group.add_argument("--lx", type=float, help="the fields' length along x, if not in the file")
    group.add_argument("--ly", type=float, help="the fields' length along y, if not in the file")
    group.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    group.add_argument("--device", default="cpu", help="torch device (default cpu)")


def train_data(args) -> int:
    from ..vae import TrainOnOptions, train_on

    if args.recipe is not None:
        raise ValueError(
            f"give either a recipe ({args.recipe}) or --data, not both; with --data, "
            "--recipe FILE replaces entries of the default recipe"
        )
    options = TrainOnOptions(
        key=args.key,
        latent_dim=args.latent_dim,
        epochs=args.epochs,
        log=args.log,
        validation_fraction=args.validation_fraction,
        patches=args.patches,
        stride=args.stride,
        recipe=args.recipe_file,
        lx=args.lx,
        ly=args.ly,
        seed=args.seed,
    )
    result = train_on(
        args.data, Path(args.out), options, resume=args.resume,
        progress=not args.no_progress, device=args.device,
    )  # fmt: skip
    if result.rank != 0:  # the other processes of a torchrun stay quiet
        return 0
    quality = result.quality
    verdict = "every target met" if quality.get("passed") else "some targets missed"
    print(
        f"trained on {result.num_fields} fields of {result.grid.ny} x {result.grid.nx}; best "
        f"epoch {result.training.best_epoch} (monitored loss {result.training.best_loss:.4g}); "
        f"quality: {verdict} ({result.folder / 'quality.md'}); load with "
        f"Prior.load({str(result.folder)!r})"
    )
    return 0
