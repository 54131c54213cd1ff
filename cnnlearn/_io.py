"""Atomic writes and validated reads for checkpoints and caches.

A file is written next to its destination under a temporary name, flushed to disk and
renamed over the destination in one step (``os.replace``), so a crash or a full disk
never leaves a half-written checkpoint or cache behind. Reads use
``torch.load(weights_only=True)``, which refuses to run code stored in a file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "safe_load", "load_checkpoint", "save_run", "restore_run", "CorruptFileError",
           "CheckpointMismatchError"]


class CorruptFileError(RuntimeError):
    """A checkpoint or cache file exists but cannot be read or fails validation."""


class CheckpointMismatchError(ValueError):
    """A readable checkpoint that belongs to a run with another config: the file is
    fine, the request to resume from it is not."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically; creates the parent folder. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def safe_load(path: str | os.PathLike, required_keys: tuple[str, ...] = ()) -> dict:
    """Load a dict saved by :func:`atomic_save`, with ``weights_only=True``.

    Raises:
        FileNotFoundError: there is no such file.
        CorruptFileError: the file is unreadable, not a dict, or lacks a required key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, unsafe pickle: all mean "corrupt"
        raise CorruptFileError(f"{path} is corrupt or not a cnnlearn file ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path} holds a {type(obj).__name__}, expected a dict")
    missing = [k for k in required_keys if k not in obj]
    if missing:
        raise CorruptFileError(f"{path} lacks {', '.join(missing)}; delete it to rebuild it")
    return obj


def load_checkpoint(path: str | os.PathLike, config: dict, required_keys: tuple[str, ...]) -> dict:
    """Load a training checkpoint and check it belongs to a run with this ``config``.

    A run resumes only from a checkpoint written with the same recipe: resuming with a
    changed config would silently mix two experiments.

    Raises:
        CorruptFileError: the file is unreadable or lacks a key.
        CheckpointMismatchError: it was written with a different config (the message
            names the fields that changed).
    """
    state = safe_load(path, (*required_keys, "config"))
    if state["config"] != config:
        changed = [k for k, v in config.items() if state["config"].get(k) != v]
        raise CheckpointMismatchError(
            f"checkpoint {path} was written with a different config (changed: {', '.join(changed)}); "
            f"delete it or pass another checkpoint path to start a new run")
    return state


def save_run(path: str | os.PathLike, stateful: dict[str, Any], history: Any, epoch: int,
             config: dict, **extra: Any) -> None:
    """Write a training run's checkpoint atomically: the ``state_dict()`` of every object
    in ``stateful`` (models, optimizers, schedulers, scalers) under its key, the history
    (``history.as_dict()``), the number of finished epochs, the CPU random state, the
    ``config`` that :func:`load_checkpoint` compares, and any ``extra`` values."""
    atomic_save({**{k: obj.state_dict() for k, obj in stateful.items()},
                 "history": history.as_dict(), "epoch": epoch, "rng": torch.get_rng_state(),
                 "config": config, **extra}, path)


def restore_run(path: str | os.PathLike, stateful: dict[str, Any], config: dict,
                extra_keys: tuple[str, ...] = ()) -> dict:
    """Read a checkpoint written by :func:`save_run` for a run with this ``config``, load
    every object of ``stateful`` from it, restore the CPU random state, and return the
    checkpoint (for its ``history``, ``epoch`` and ``extra_keys``).

    Raises:
        CorruptFileError, CheckpointMismatchError: as :func:`load_checkpoint`.
    """
    state = load_checkpoint(path, config, (*stateful, "history", "epoch", "rng", *extra_keys))
    for k, obj in stateful.items():
        obj.load_state_dict(state[k])
    torch.set_rng_state(state["rng"])
    return state
