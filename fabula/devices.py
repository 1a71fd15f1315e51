"""Devices and numeric precision: the ``--device`` of every command that computes, defined once
(:class:`DeviceSettings`), and the ``--precision`` of training.

Nothing in fabula creates a tensor on a named device: modules are moved with ``.to(device)``,
and every tensor a computation makes takes its device from the data or from a module's
parameters and buffers. A device is checked when a command starts (:func:`resolve`), so that
``--device cuda`` on a machine without CUDA is one line, not a traceback from deep inside torch.

Precision (:data:`PRECISIONS`) applies to the training steps only:

* ``fp32`` -- float32 throughout (TF32 tensor-core matmuls switched off);
* ``tf32`` -- float32 storage, matmuls and convolutions on CUDA's TF32 tensor cores (10-bit
  mantissa products, float32 accumulation); CUDA only;
* ``bf16`` -- the loss computed under ``torch.autocast`` with bfloat16 (matmuls, LSTM and
  linear layers in bfloat16, reductions and log-softmax in float32), the parameters, their
  gradients and the optimizer state kept in float32. Works on the CPU too.

Evaluation never runs under autocast: the bounds a run reports are computed in float32 (or the
estimator's own float64), whatever precision it was trained in.

References: P. Micikevicius et al. Mixed Precision Training. ICLR 2018.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from fabula.errors import SettingsError
from fabula.settings import setting

#: The precisions a training step may run in (``--precision``).
PRECISIONS = ("fp32", "tf32", "bf16")

LOCAL_RANK = "LOCAL_RANK"  #: set by torchrun for each process on a node


def parse(name: str) -> torch.device:
    """The torch device named ``name`` (``cpu``, ``cuda``, ``cuda:1``, ...), checking the name only."""
    try:
        return torch.device(name)
    except (RuntimeError, TypeError):
        raise SettingsError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None


@dataclass
class DeviceSettings:
    """Device: where the command computes"""

    device: str = setting(
        "cpu", "torch device: cpu, cuda or cuda:N (under torchrun, cuda is each process's cuda:LOCAL_RANK)"
    )

    def __post_init__(self):
        parse(self.device)


def resolve(name: str) -> torch.device:
    """The device ``name`` as this machine (and, under ``torchrun``, this process) has it,
    refusing in one line a device the machine lacks. Under ``torchrun``, ``cuda`` is the
    process's ``cuda:LOCAL_RANK``."""
    device = parse(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(
                f"--device {name}: this machine has no CUDA device torch can use "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); use --device cpu"
            )
        local = os.environ.get(LOCAL_RANK)
        if local is not None:
            if device.index is not None:
                raise SettingsError(
                    f"--device {name}: under torchrun each process takes cuda:LOCAL_RANK; give --device cuda"
                )
            device = torch.device("cuda", int(local))
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SettingsError(f"--device {device}: this machine has {count} CUDA device(s), 0..{count - 1}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(f"--device {name}: this machine has no MPS device; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise SettingsError(f"--device {name}: fabula runs on cpu, cuda or mps")
    return device


def set_precision(device: torch.device, precision: str) -> None:
    """Check ``precision`` (:data:`PRECISIONS`) for ``device``, refusing TF32 off CUDA, and make
    float32 matmuls and convolutions exact outside training steps (TF32 off), so that what is
    evaluated is computed in float32; :func:`tensor_cores` turns TF32 on for a step."""
    if precision not in PRECISIONS:
        raise SettingsError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "tf32" and device.type != "cuda":
        raise SettingsError(f"--precision tf32 uses CUDA's tensor cores; on {device.type} use fp32 or bf16")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@contextlib.contextmanager
def tensor_cores(precision: str):
    """TF32 matmuls and convolutions for the block (a training step's forward and backward pass)
    when ``precision`` is ``tf32``; the previous modes restored after it."""
    if precision != "tf32":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(device: torch.device, precision: str):
    """The context a training loss is computed in: :func:`lower_precision` to bfloat16 for
    ``bf16``, nothing otherwise."""
    if precision == "bf16":
        return lower_precision(device, torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def lower_precision(device: torch.device, dtype: torch.dtype, enabled: bool = True):
    """``torch.autocast(device.type, dtype, enabled)``, except that on a CPU whose oneDNN has no
    bfloat16 kernels (AVX2 without AVX-512, where its LSTM primitive cannot be created) oneDNN
    is off in an enabled block, so that torch's own kernels compute in bfloat16."""
    if not enabled:
        with torch.autocast(device.type, enabled=False):
            yield
        return
    saved = torch.backends.mkldnn.enabled
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        torch.backends.mkldnn.enabled = False
    try:
        with torch.autocast(device.type, dtype=dtype):
            yield
    finally:
        torch.backends.mkldnn.enabled = saved


THREADS = "FABULA_THREADS"
"""The environment variable that sets the torch CPU threads of every ``fabula`` command."""


def cpu_threads(requested: int | None = None) -> int:
    """Torch CPU threads for a command: ``requested`` (``--threads``), else :data:`THREADS` from
    the environment, else half the machine's cores (at least one). Torch's own default takes
    every core, which on a shared machine competes with the other work there: on 2 cores,
    training and evaluating the README's NVDM with 2 threads instead of 1 gained 3% idle and
    lost 5-22% beside one busy 2-thread process (``benchmarks/threads.py``, RESULTS.md)."""
    if requested is not None:
        return requested
    given = os.environ.get(THREADS)
    if given:
        if not (given.isascii() and given.isdigit() and int(given) >= 1):
            raise SettingsError(f"{THREADS}={given!r}: give a whole number of threads, at least 1")
        return int(given)
    return max(1, (os.cpu_count() or 2) // 2)
