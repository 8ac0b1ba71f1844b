"""Training a VAE on a tensor of fields: seeded, checkpointed every epoch, resumable.

One seed fixes everything: the initial weights (``seed``), the train/validation split
(``seed``), and one training ``torch.Generator`` (``seed + 1``) for shuffling and the
reparameterisation noise; validation noise is redrawn from ``seed + 2`` every epoch, so
validation losses of different epochs are comparable. The global RNG is never used, so on the
CPU the same seed gives the same weights, and a resumed run the same weights as an
uninterrupted one.

``out_dir`` receives ``model.safetensors/.json`` (the best epoch by monitored loss: the
validation loss, or the training loss when ``val_fraction = 0``), ``last.safetensors/.json``
(the latest epoch), ``train_state.safetensors/.json`` (everything needed to resume) and
``history.json``, all rewritten every epoch, and ``history.png`` when the run ends or is
interrupted.
"""

from __future__ import annotations

import hashlib
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..grid import Grid
from ._distributed import Parallel
from ._history import plot_history, write_history
from ._state import STEM, load_train_state, save_train_state
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, VAEConfig, epoch_lr, to_dict
from .losses import vae_loss
from .networks import VAE, init_vae

__all__ = ["TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult:
    """What [`train`][vaeinv.vae.train] returns.

    Args:
        model: the VAE with the best epoch's weights, in eval mode.
        history: one record per epoch: ``epoch``, ``train`` and ``val`` loss terms, ``seconds``.
        best_epoch: the epoch (1-based) of the saved best model.
        best_loss: its monitored loss.
        stopped_early: whether early stopping ended the run.
        out_dir: the training folder.
    """

    model: VAE
    history: list[dict[str, Any]]
    best_epoch: int
    best_loss: float
    stopped_early: bool
    out_dir: Path


class _InMemory:
    """A tensor of fields behind a [`FieldStack`][vaeinv.fields.FieldStack]'s reading
    interface (``read``, ``fingerprint``)."""

    def __init__(self, fields: torch.Tensor) -> None:
        self.fields = fields
        self.shape = tuple(fields.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, index) -> torch.Tensor:
        return self.fields[index]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.fields.numpy().data).hexdigest()


def _source(fields: Any, config: VAEConfig):
    """The training fields as something to ``read`` batches from: a checked tensor, or a stack
    read lazily (already checked by [`check_stack`][vaeinv.fields.check_stack])."""
    if isinstance(fields, torch.Tensor):
        return _InMemory(_check_fields(fields, config))
    if not (hasattr(fields, "read") and hasattr(fields, "fingerprint")):
        raise ValueError(
            f"fields must be a torch.Tensor or a vaeinv.fields.FieldStack, got "
            f"{type(fields).__name__}"
        )
    if len(fields.shape) != 3 or tuple(fields.shape[1:]) != (config.ny, config.nx):
        raise ValueError(
            f"the stack {getattr(fields, 'source', '')} has shape {tuple(fields.shape)}, "
            f"expected (num_fields, {config.ny}, {config.nx}) from the VAEConfig"
        )
    return fields


def _check_fields(fields: Any, config: VAEConfig, name: str = "fields") -> torch.Tensor:
    if not isinstance(fields, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(fields).__name__}")
    if fields.dim() != 3 or tuple(fields.shape[1:]) != (config.ny, config.nx):
        raise ValueError(
            f"{name} has shape {tuple(fields.shape)}, expected (num_fields, {config.ny}, "
            f"{config.nx}) from the VAEConfig"
        )
    bad = (~torch.isfinite(fields).flatten(1).all(1)).nonzero().flatten()
    if bad.numel():
        raise ValueError(
            f"{name}[{int(bad[0])}] contains NaN or inf ({bad.numel()} bad fields in all)"
        )
    fields = fields.detach().to("cpu", torch.float32).contiguous()
    if config.output == "logits":
        scaled = (fields - config.field_shift) / config.field_scale
        if scaled.min() < 0 or scaled.max() > 1:
            raise ValueError(
                f"{name} scaled by field_shift/field_scale must lie in [0, 1] for "
                f"output='logits'; got [{float(scaled.min())}, {float(scaled.max())}]"
            )
    return fields


def _check_cond(cond: Any, fields: torch.Tensor, config: VAEConfig) -> torch.Tensor | None:
    if cond is None:
        if config.cond_channels:
            raise ValueError(f"the VAEConfig has cond_channels={config.cond_channels}: pass cond")
        return None
    if not config.cond_channels:
        raise ValueError("cond was given but the VAEConfig has cond_channels=0")
    if not isinstance(cond, torch.Tensor) or cond.shape[0] != fields.shape[0]:
        raise ValueError(f"cond must be a tensor with one entry per field ({fields.shape[0]})")
    if not torch.isfinite(cond).all():
        raise ValueError("cond contains NaN or inf")
    return cond.detach().to("cpu", torch.float32).contiguous()


@contextmanager
def _threads(num_threads: int | None):
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run_epoch(model, batches, fields, cond, config, optimizer, generator, device, bar):
    """One pass; trains when ``optimizer`` is given. Returns the field-weighted sums of the
    terms and the number of fields. ``model`` may be wrapped in DistributedDataParallel."""
    sums: dict[str, float] = {}
    count = 0
    net = getattr(model, "module", model)
    for index in batches:
        x = fields.read(index).to(device)
        c = cond[index].to(device) if cond is not None else None
        with torch.set_grad_enabled(optimizer is not None):
            raw, mu, logvar = model(x, c, generator)
            draws = None
            if config.mmd_lambda:
                draws = tuple(
                    torch.randn(mu.flatten(1).shape, generator=generator).to(mu) for _ in range(2)
                )
            terms = vae_loss(
                raw, net.normalize(x), mu, logvar, net.config.output,
                config.beta, config.fisher_lambda, config.fisher_target,
                config.mmd_lambda, draws,
            )  # fmt: skip
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
        count += len(index)
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) * len(index)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{sums[k] / count:.4g}" for k in ("reconstruction", "kl")})
    return sums, count


def train(
    model_config: VAEConfig,
    train_config: TrainConfig,
    fields: torch.Tensor,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    cond: torch.Tensor | None = None,
    grid: Grid | None = None,
    generator_config: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train a VAE with Adam; see the module docstring for seeds and the files written.

    Args:
        model_config: the architecture.
        train_config: the training settings.
        fields: ``(num_fields, ny, nx)`` training fields, in field units (e.g. log k).
        out_dir: the folder for checkpoints, history and resume state.
        resume: continue the run saved in ``out_dir`` (same configs except ``epochs`` and
            ``num_threads``, same fields); with no saved state the run starts from scratch.
        progress: show a tqdm bar with the running loss terms.
        cond: optional conditioning fields, one per field (needs ``cond_channels > 0``).
        grid: the grid recorded in the checkpoints (default ``Grid(nx, ny)``).
        generator_config: the data generator's settings, recorded in the checkpoints.
        device: where to train.

    Raises:
        ValueError: fields of the wrong shape or with NaN/inf (the first bad index named),
            too few fields for the split, an ``out_dir`` already holding a run without
            ``resume``, or a resume whose configs or fields differ from the saved run.
    """
    fields = _source(fields, model_config)
    cond = _check_cond(cond, fields, model_config)
    cfg, out = train_config, Path(out_dir)
    val_index, train_index = split_fields(len(fields), cfg)
    model = init_vae(model_config, cfg.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    group = Parallel()
    header, info = _start(model_config, cfg, fields, out, resume, (model, optimizer, generator))
    group.wait()  # the main process has created the folder
    net = group.wrap(model)
    meta = {"grid": grid, "generator_config": generator_config, "train_config": to_dict(cfg)}
    n_batches = math.ceil(len(train_index) / cfg.batch_size)
    bar = tqdm(
        total=cfg.epochs * n_batches,
        initial=info["epoch"] * n_batches,
        disable=not (progress and group.main),
    )
    with _threads(cfg.num_threads), bar, _plot_when_done(out, info, group.main):
        for epoch in range(info["epoch"] + 1, cfg.epochs + 1):
            if info["stopped_early"]:
                break
            start = time.perf_counter()
            bar.set_description(f"epoch {epoch}/{cfg.epochs}")
            for param_group in optimizer.param_groups:
                param_group["lr"] = epoch_lr(cfg, epoch)
            batches, noise = group.epoch_batches(
                train_index, cfg.batch_size, generator, cfg.seed, epoch
            )
            net.train()
            train_terms = group.total(
                *_run_epoch(net, batches, fields, cond, cfg, optimizer, noise, device, bar)
            )
            val_terms = None
            if len(val_index) and group.main:
                val_terms = _validate(model, val_index, fields, cond, cfg, device)
            val_terms = group.share(val_terms)
            record = {"epoch": epoch, "train": train_terms, "val": val_terms}
            record.update(seconds=time.perf_counter() - start, lr=epoch_lr(cfg, epoch))
            monitored, better = _record(info, record, cfg, header)
            losses = {"train": train_terms, "val": val_terms}
            shown = {k: f"{train_terms[k]:.4g}" for k in ("reconstruction", "kl")}
            bar.set_postfix(**shown, monitored=f"{monitored:.4g}", best=f"{info['best_loss']:.4g}")
            if group.main:
                if better:
                    save_checkpoint(out / "model.safetensors", model, losses=losses, **meta)
                save_checkpoint(out / "last.safetensors", model, losses=losses, **meta)
                write_history(out / "history.json", info["history"], {**header, **_summary(info)})
                save_train_state(out, model, optimizer, generator, info)
            group.wait()
    best = load_checkpoint(out / "model.safetensors").model.to(device)
    return TrainResult(
        model=best,
        history=info["history"],
        best_epoch=info["best_epoch"],
        best_loss=info["best_loss"],
        stopped_early=info["stopped_early"],
        out_dir=out,
    )


def split_fields(num: int, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(validation, training)`` indices of ``num`` fields: the first ``ceil(val_fraction *
    num)`` of a permutation seeded by ``cfg.seed``, and the rest.

    Raises:
        ValueError: no field left for training.
    """
    num_val = math.ceil(cfg.val_fraction * num) if cfg.val_fraction else 0
    if num - num_val < 1:
        raise ValueError(f"{num} fields leave none for training at val_fraction={cfg.val_fraction}")
    order = torch.randperm(num, generator=torch.Generator().manual_seed(cfg.seed))
    return order[:num_val], order[num_val:]


def _validate(model, val_index, fields, cond, cfg: TrainConfig, device) -> dict[str, float]:
    """The validation terms, with the same noise every epoch (``seed + 2``)."""
    model.eval()
    val_gen = torch.Generator().manual_seed(cfg.seed + 2)
    batches = val_index.split(cfg.batch_size)
    sums, count = _run_epoch(model, batches, fields, cond, cfg, None, val_gen, device, None)
    return {key: value / count for key, value in sums.items()}


def _record(info: dict, record: dict, cfg: TrainConfig, header: dict) -> tuple[float, bool]:
    """Add an epoch's record to ``info``: the monitored loss, best epoch, early stopping.
    Returns the monitored loss and whether it is the best so far."""
    info["history"].append(record)
    epoch = record["epoch"]
    monitored = _finite((record["val"] or record["train"])["total"], epoch)
    better = monitored < info["best_loss"]
    if better:
        info.update(best_loss=monitored, best_epoch=epoch, bad_epochs=0)
    else:
        info["bad_epochs"] += 1
    info["stopped_early"] = cfg.patience is not None and info["bad_epochs"] >= cfg.patience
    info.update(epoch=epoch, header=header)
    return monitored, better


def _start(model_config, cfg, fields, out: Path, resume: bool, trained) -> tuple[dict, dict]:
    """``(header, info)`` of a new run, or of the run saved in ``out`` (``resume``), its
    model, optimizer and generator (``trained``) restored; ``out`` created."""
    model, optimizer, generator = trained
    header = {
        "model_config": to_dict(model_config),
        "train_config": to_dict(cfg),
        "data_sha256": fields.fingerprint(),
        "num_fields": len(fields),
    }
    info = {"epoch": 0, "history": [], "best_loss": math.inf, "best_epoch": 0, "bad_epochs": 0}
    info["stopped_early"] = False
    if (out / f"{STEM}.json").exists():
        if not resume:
            raise ValueError(
                f"{out} already holds a training run; resume it (resume=True; vaeinv train "
                "--resume) or use a new folder"
            )
        info = load_train_state(out, model, optimizer, generator)
        _check_same_run(info["header"], header)
    out.mkdir(parents=True, exist_ok=True)
    return header, info


def _finite(monitored: float, epoch: int) -> float:
    if not math.isfinite(monitored):
        raise RuntimeError(
            f"training diverged: loss {monitored} at epoch {epoch}; lower lr, set "
            "grad_clip, or rescale the fields (field_shift, field_scale)"
        )
    return monitored


@contextmanager
def _plot_when_done(out: Path, info: dict[str, Any], main: bool = True):
    """Plot the history when the run ends, also when it is interrupted (the main process)."""
    try:
        yield
    finally:
        if info["history"] and main:
            plot_history(out / "history.png", info["history"])


def _summary(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("best_epoch", "best_loss", "stopped_early")
    return {k: info[k] for k in keys}


def _check_same_run(saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless a resume uses the saved configs and data.

    ``epochs`` (to extend a run under a constant rate) and ``num_threads`` may differ.
    """
    for key in ("model_config", "train_config", "data_sha256"):
        old, new = saved[key], now[key]
        if key == "train_config":
            # runs saved before the schedule existed trained at a constant rate
            old = {"lr_schedule": "constant", "lr_min": 0.0, **old}
            free = {"num_threads": None}  # may change between sessions
            if new["lr_schedule"] == "constant":
                free["epochs"] = None  # the schedule does not depend on it
            old, new = {**old, **free}, {**new, **free}
        if old != new:
            raise ValueError(f"cannot resume: {key} differs from the saved run ({old} != {new})")
