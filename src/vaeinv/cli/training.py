"""The training commands: ``vaeinv train`` (a recipe, a multiscale recipe, or ``--data``) and
``vaeinv finetune``."""

from __future__ import annotations

from pathlib import Path

from .train_data import train_data

__all__ = ["finetune_command", "train_command"]


def _recipe_data(recipe, out):
    """The recipe's training fields, cached in ``out/data.safetensors`` (checked against it)."""
    from ..fields import generate_dataset, load_dataset

    data_file = out / "data.safetensors"
    if data_file.exists():
        data = load_dataset(data_file)
        held = (data.metadata["num"], data.metadata["seed"], data.metadata["config"])
        wanted = (recipe.num, recipe.seed, recipe.field_generator().config())
        if held != wanted:
            raise ValueError(
                f"{data_file} holds {held[0]} fields of seed {held[1]} from {held[2]}, but the "
                f"recipe asks for {wanted[0]} of seed {wanted[1]} from {wanted[2]}; remove the "
                "file or choose another --out"
            )
        return data
    print(f"sampling {recipe.num} training fields (seed {recipe.seed}) ...")
    return generate_dataset(recipe.field_generator(), recipe.num, recipe.seed, data_file)


def _train_multiscale(args) -> int:
    from ..priors.multiscale_recipe import load_multiscale_recipe, train_multiscale

    recipe = load_multiscale_recipe(args.recipe)
    out = Path(args.out)
    data = _recipe_data(recipe, out)
    folder = train_multiscale(
        recipe,
        data.fields,
        data.grid,
        out,
        generator_config=data.metadata["config"],
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(f"multiscale prior ({len(recipe.levels)} levels): {folder}")
    return 0


def train_command(args) -> int:
    """``vaeinv train``: from a recipe, or from the user's fields (``--data``)."""
    from ..priors.multiscale_recipe import is_multiscale_recipe
    from ..priors.recipes import load_recipe
    from ..vae import load_checkpoint, save_checkpoint, train
    from ..vae.calibration import fit_latent_gaussian
    from ..vae.finetune import finetune_checkpoint

    if args.data is not None:
        return train_data(args)
    if args.recipe is None:
        raise ValueError("vaeinv train needs a recipe file or --data FILE")
    if is_multiscale_recipe(args.recipe):
        return _train_multiscale(args)
    recipe = load_recipe(args.recipe)
    out = Path(args.out)
    data = _recipe_data(recipe, out)
    result = train(
        recipe.vae,
        recipe.training,
        data.fields,
        out / "run",
        resume=args.resume,
        progress=not args.no_progress,
        grid=data.grid,
        generator_config=data.metadata["config"],
    )
    checkpoint = out / "run" / "model.safetensors"
    saved = load_checkpoint(checkpoint)
    tuned = "finetune" in (saved.metadata.get("train_config") or {})
    if recipe.calibrate and not tuned:
        fit_latent_gaussian(result.model, data.fields)
        save_checkpoint(
            checkpoint,
            result.model,
            grid=data.grid,
            generator_config=data.metadata["config"],
            train_config=saved.metadata.get("train_config"),
            losses=saved.metadata.get("losses"),
        )
        print(f"fitted the latent Gaussian of the aggregate posterior on {recipe.num} fields")
    if recipe.finetune is not None:
        if tuned:
            print(f"{checkpoint} is already fine-tuned (a resumed run); not again")
        else:
            finetune_checkpoint(
                checkpoint, data.fields, recipe.finetune, checkpoint, not args.no_progress
            )
    if recipe.second_stage is not None:
        from ..priors.recipes import fit_recipe_second_stage

        fit_recipe_second_stage(recipe, checkpoint.parent)
    print(
        f"best epoch {result.best_epoch} (monitored loss {result.best_loss:.4g}); "
        f"checkpoint: {checkpoint}"
    )
    return 0


def finetune_command(args) -> int:
    """``vaeinv finetune``."""
    from ..priors.recipes import fit_recipe_second_stage, load_recipe
    from ..priors.vae import priors_folder, shipped_priors
    from ..vae.finetune import finetune_checkpoint

    recipe = load_recipe(args.recipe)
    if recipe.finetune is None:
        raise ValueError(f"recipe {args.recipe} has no [finetune] table")
    source = Path(args.prior)
    if not source.exists():
        if args.prior not in shipped_priors():
            raise ValueError(
                f"--prior {args.prior!r} is neither a checkpoint path nor a shipped prior "
                f"({', '.join(shipped_priors())})"
            )
        source = priors_folder() / args.prior / "model.safetensors"
    out = Path(args.out)
    target = out / "run" / "model.safetensors"
    if target.exists() and not args.force:
        raise ValueError(f"{target} exists; pass --force to replace it")
    data = _recipe_data(recipe, out)
    finetune_checkpoint(source, data.fields, recipe.finetune, target, not args.no_progress)
    if recipe.second_stage is not None:
        fit_recipe_second_stage(recipe, target.parent)
    print(f"fine-tuned checkpoint: {target}")
    return 0
