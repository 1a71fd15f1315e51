"""The trainer of every inference object that fits: its optimizers (one factory), gradient
clipping, learning-rate schedules, the epoch loop, and one ``state_dict`` of all of it.

An update policy (:mod:`fabula.inference.updates`) names the parameter groups it steps; the
trainer builds one optimizer per group, so that no optimizer exists that nothing steps.

A step's loss is computed inside the trainer (:meth:`Trainer.descend` takes it as a function),
so that the trainer can compute it under autocast (``--precision bf16``,
:mod:`fabula.devices`) and, under ``torchrun``, through ``DistributedDataParallel``
(:mod:`fabula.distributed`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pyro.optim
import torch
from tqdm.auto import tqdm

from fabula import distributed
from fabula.data.corpus import DataParallel
from fabula.devices import autocast, set_precision, tensor_cores
from fabula.errors import DivergenceError, SettingsError
from fabula.settings import NONNEGATIVE, POSITIVE, Range, check_ranges, setting

#: The torch optimizers a trainer builds by name.
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def make_optimizer(optimizer, params, optim_args: dict) -> torch.optim.Optimizer:
    """A torch optimizer over ``params`` from a name in :data:`OPTIMIZERS`, a
    ``torch.optim.Optimizer`` class or a Pyro optimizer.

    Pyro optimizers (``pyro.optim.Adam({"lr": ...})``, ``ClippedAdam``, ...) wrap a torch
    optimizer class and its arguments; fabula uses that class over all of a group's parameters
    at once, so that gradient clipping is by global norm and the state is one ``state_dict``.
    """
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise SettingsError(f"unknown optimizer {optimizer!r}; choose from {sorted(OPTIMIZERS)}")
        optimizer = OPTIMIZERS[optimizer]
    if isinstance(optimizer, pyro.optim.PyroOptim):
        if callable(optimizer.pt_optim_args):
            raise SettingsError("per-parameter optimizer arguments (a callable) are not supported")
        optimizer, optim_args = (
            optimizer.pt_optim_constructor,
            {**optimizer.pt_optim_args, **optim_args},
        )
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        raise SettingsError(
            f"optimizer must be a torch.optim.Optimizer class or a Pyro optimizer, got {optimizer!r}"
        )
    return optimizer(params, **optim_args)


class EpochDecay:
    r"""The learning-rate factor of (0-based) epoch ``e``: :math:`d^{\max(0,\, e + 1 - a)}`, full
    rate for ``after`` epochs and then multiplied by ``decay`` each epoch (the schedule of
    Zaremba et al. 2014's PTB language models). Used with ``torch.optim.lr_scheduler.LambdaLR``."""

    def __init__(self, decay: float = 1.0, after: int = 0):
        if not 0 < decay <= 1:
            raise SettingsError(f"lr_decay must lie in (0, 1], got {decay}")
        if after < 0:
            raise SettingsError(f"decay_after must be >= 0, got {after}")
        self.decay, self.after = decay, after

    def __call__(self, epoch: int) -> float:
        return self.decay ** max(0, epoch + 1 - self.after)


class Trainer:
    """One optimizer per named parameter group (empty groups get none), clipping by the global
    norm of the stepped groups' gradients, and a per-epoch learning-rate schedule."""

    def __init__(
        self,
        groups: dict[str, list[torch.nn.Parameter]],
        optimizer="adam",
        optim_args: dict | None = None,
        clip_norm: float | None = None,
        schedule: EpochDecay | None = None,
    ):
        if clip_norm is not None and not clip_norm > 0:
            raise SettingsError(f"clip_norm must be > 0 (or None for no clipping), got {clip_norm}")
        self.groups = {name: params for name, params in groups.items() if params}
        args = optim_args or {"lr": 1e-3}
        self.optimizers = {name: make_optimizer(optimizer, p, args) for name, p in self.groups.items()}
        schedule = schedule or EpochDecay()
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, schedule) for name, opt in self.optimizers.items()
        }
        self.clip_norm = clip_norm
        self.device, self.precision, self.replicas = None, "fp32", None  # see configure

    def configure(self, device: torch.device, precision: str = "fp32", modules: dict | None = None) -> None:
        """Compute the losses of later steps on ``device`` in ``precision``
        (:data:`~fabula.devices.PRECISIONS`) and, given the trained ``modules`` while a process
        group is running, through ``DistributedDataParallel`` over them."""
        set_precision(device, precision)
        self.device, self.precision = device, precision
        if modules is not None and distributed.active():
            stepped = {id(p) for p in self.parameters}
            trained = {id(p) for m in modules.values() for p in m.parameters() if p.requires_grad}
            # a policy stepping groups on separate losses, or parameters no group steps, leave
            # some parameters without a gradient in a backward pass
            self.replicas = distributed.replicate(modules, len(self.groups) > 1 or trained != stepped)

    @property
    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for params in self.groups.values() for p in params]

    def descend(self, loss: Callable[[], torch.Tensor], *names: str, step: int) -> float:
        """One gradient step of the groups ``names`` on the tensor ``loss()`` returns (their
        gradients clipped together; a group without parameters, a story with none to learn, say,
        is skipped); ``step`` (1-based) names the step in the error a non-finite loss raises. The value returned (and checked) is the loss averaged over the data-parallel
        ranks, so that every rank decides alike from it."""
        with tensor_cores(self.precision):
            with autocast(self.device, self.precision):
                loss = self.replicas(loss) if self.replicas is not None else loss()
            value = loss.detach().float().item()
            if self.replicas is not None:
                value = distributed.all_mean(value)
            if not math.isfinite(value):
                raise DivergenceError(
                    f"non-finite loss {value} at step {step}; lower the learning rate or set a clip norm"
                )
            names = [n for n in names if n in self.optimizers]
            if not names:
                return value
            optimizers = [self.optimizers[n] for n in names]
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for n in names for p in self.groups[n]], self.clip_norm)
        for optimizer in optimizers:
            optimizer.step()
        return value

    def end_epoch(self) -> dict[str, float]:
        """Advance every schedule; returns the learning rate the ending epoch ran with."""
        lrs = [s.get_last_lr()[0] for s in self.schedulers.values()]
        with warnings.catch_warnings():
            # a policy may leave a group unstepped for whole epochs (adversarial training's generator
            # and critic during pre-training): its schedule follows the epochs all the same
            warnings.filterwarnings(
                "ignore", "Detected call of `lr_scheduler.step\\(\\)` before", UserWarning
            )
            for scheduler in self.schedulers.values():
                scheduler.step()
        return {"lr": lrs[0]} if lrs else {}

    def state_dict(self) -> dict:
        return {
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if set(state["optimizers"]) != set(self.optimizers):
            raise SettingsError(
                f"the saved training state has optimizers {sorted(state['optimizers'])}, "
                f"this setup {sorted(self.optimizers)}"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
            self.schedulers[name].load_state_dict(state["schedulers"][name])


def train_epoch(
    trainable, data, batch_size: int, seed: int, epoch: int, epochs: int | None = None, progress: bool = True
) -> dict:
    """One epoch (0-based ``epoch``) of ``trainable`` (a :class:`~fabula.inference.base.Trainable`)
    on ``data``; returns its mean metrics, with ``"epoch"`` counted from 1.

    The batches of epoch ``e`` are ``data.batches(..., shuffle=True, seed=seed, epoch=e)``, a
    function of ``(seed, e)`` only, so a fit resumed from a checkpoint replays the same batches.
    Under data parallelism ``data`` is this rank's part
    (:meth:`~fabula.data.corpus.Corpus.data_parallel`) and the means are taken over every rank's data.
    """
    device = trainable.story.device
    sums: dict[str, float] = {}
    seen = 0
    bar = tqdm(
        data.batches(batch_size, shuffle=True, seed=seed, epoch=epoch, device=device),
        total=data.num_batches(batch_size),
        desc=f"epoch {epoch + 1}/{epochs or epoch + 1}",
        disable=not progress,
        leave=False,
    )
    for batch in bar:
        metrics = trainable.step(batch)
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v * batch.size
        seen += batch.size
        bar.set_postfix(loss=f"{metrics['loss']:.4g}", refresh=False)
    if isinstance(data, DataParallel):
        *totals, seen = distributed.all_sum(*sums.values(), seen)
    else:
        totals = list(sums.values())
    means = {k: v / seen for k, v in zip(sums, totals, strict=True)}
    return {"epoch": epoch + 1, **means, **trainable.end_epoch()}


def fit(
    trainable,
    data,
    epochs: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    start_epoch: int = 0,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``trainable`` for epochs ``start_epoch + 1 .. epochs`` (:func:`train_epoch` each);
    return each epoch's mean metrics. ``on_epoch_end(epoch, metrics)`` runs after each epoch."""
    trainable.begin(data)
    history = []
    for epoch in range(start_epoch, epochs):
        summary = train_epoch(trainable, data, batch_size, seed, epoch, epochs, progress)
        history.append(summary)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, summary)
    return history


@dataclass
class OptimizerSettings:
    """Optimizer: its kind, step size, per-epoch decay and gradient clipping"""

    optimizer: str = setting("adam", "optimizer", choices=sorted(OPTIMIZERS))
    lr: float = setting(1e-3, "learning rate", within=POSITIVE)
    lr_decay: float = setting(
        1.0,
        "multiply the learning rate by this each epoch after --decay-after",
        within=Range(above=0, at_most=1),
    )
    decay_after: int = setting(0, "epochs at the full learning rate before decay", within=NONNEGATIVE)
    clip_norm: float | None = setting(None, "clip gradients to this global norm", within=POSITIVE)

    def __post_init__(self):
        check_ranges(self)

    def training(self) -> dict:
        """The trainer's settings of :class:`~fabula.inference.VariationalInference`."""
        return {
            "optimizer": self.optimizer,
            "optim_args": {"lr": self.lr},
            "clip_norm": self.clip_norm,
            "lr_decay": self.lr_decay,
            "decay_after": self.decay_after,
        }
