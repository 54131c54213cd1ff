"""How much work a chapter does, and where it runs.

``CNNLEARN_BUDGET`` picks one of three work sizes for every chapter:

* ``smoke``: the whole chapter in under a minute on a 2-core CPU; used by CI (nbval)
  to prove that every cell runs. Its numbers mean nothing.
* ``cpu``: the chapter in minutes on a laptop CPU, large enough that the curves and
  comparisons show what the chapter claims. The book's stored outputs use it.
* ``gpu``: the full experiment, for a (free Colab) GPU.

The default is ``gpu`` when CUDA is available and ``cpu`` otherwise. Chapters choose
their sizes with :func:`by_budget`, so each chapter states its work per budget in one
place.
"""
from __future__ import annotations

import os
import random
from typing import TypeVar

import numpy as np
import torch

from . import _validate as V

__all__ = ["BUDGETS", "get_budget", "by_budget", "get_device", "seed_everything", "setup"]

BUDGETS = ("smoke", "cpu", "gpu")
T = TypeVar("T")


def get_budget() -> str:
    """The budget from ``CNNLEARN_BUDGET``; ``gpu`` with CUDA and ``cpu`` without by default."""
    value = os.environ.get("CNNLEARN_BUDGET", "").strip().lower()
    if not value:
        return "gpu" if torch.cuda.is_available() else "cpu"
    if value not in BUDGETS:
        raise ValueError(
            f"CNNLEARN_BUDGET={value!r} is not a budget; use one of {', '.join(BUDGETS)}")
    return value


def by_budget(*, smoke: T, cpu: T, gpu: T, budget: str | None = None) -> T:
    """Pick the value for the current budget (or for ``budget`` when given)."""
    budget = budget or get_budget()
    if budget not in BUDGETS:
        raise ValueError(f"budget={budget!r} is not one of {', '.join(BUDGETS)}")
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[budget]


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The training device: ``device`` or ``$CNNLEARN_DEVICE`` when given, else CUDA,
    then Apple's MPS, then the CPU.

    Raises:
        ValueError: the device given (or the variable's value, which the message names)
            is not a device, or this machine does not have it (CUDA, MPS, a GPU index).
    """
    if device is not None and device != "":
        return V.device("device", device)
    if os.environ.get("CNNLEARN_DEVICE", "").strip():  # a bad value's error names the variable
        return V.device("CNNLEARN_DEVICE", os.environ["CNNLEARN_DEVICE"])
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    V.seed("seed", seed)  # NumPy takes only ints in [0, 2**32)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed: int = 0, verbose: bool = True) -> tuple[str, torch.device]:
    """What every chapter's first cell calls: seeds, sets the figure style
    (:func:`cnnlearn.viz.use_style`), picks the budget and the device, and prints them.

    Returns:
        ``(budget, device)``.
    """
    seed_everything(seed)
    from .viz import use_style  # the book's figure style; here, since viz imports train, which imports this module

    use_style()
    budget, device = get_budget(), get_device()
    if verbose:
        threads = torch.get_num_threads()
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{threads} CPU threads"
        print(f"cnnlearn budget: {budget} | device: {device} ({name}) | torch {torch.__version__}")
    return budget, device
