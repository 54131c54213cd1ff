"""Atomic writes and validated reads for checkpoints and caches.

A file is written next to its destination under a temporary name, flushed to disk and
renamed over the destination in one step (``os.replace``), so a crash or a full disk
never leaves a half-written checkpoint or cache behind; the temporary file of a write
that was killed is removed by the next write of the same file. Reads use
``torch.load(weights_only=True)``, which refuses to run code stored in a file.

A training checkpoint also records what it was trained on: its ``kind`` (``fit`` or
``fit_gan``), its config, and ``records`` of the data and the network (dataset, subset
sizes, a checksum, seed and batch size; the class and every tensor's shape). A resume
with any of them changed is refused with a :class:`CheckpointMismatchError` that names
the difference.
"""
from __future__ import annotations

import glob
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["atomic_save", "safe_load", "load_checkpoint", "save_run", "restore_run", "CorruptFileError",
           "CheckpointMismatchError", "architecture", "loader_record", "data_record"]

# A temporary file older than this is stale whoever wrote it: a write in progress keeps
# touching its file, and no checkpoint or cache takes an hour to write.
_STALE_AFTER_S = 3600


class CorruptFileError(RuntimeError):
    """A checkpoint or cache file exists but cannot be read or fails validation."""


class CheckpointMismatchError(ValueError):
    """A readable checkpoint that belongs to a run with another config: the file is
    fine, the request to resume from it is not."""


def _writer_tag() -> str:
    # Who writes a temporary file, in its name: "<host>-<pid>-". The next write of the same
    # file then knows a leftover of a killed process from a write still in progress.
    host = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: rely on the age alone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to another user
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.<name>.*.tmp`` files next to ``path`` left by writes that were killed (a
    process of this machine that no longer runs, or a file untouched for an hour)."""
    prefix, host = f".{path.name}.", _writer_tag().split("-")[0]
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        try:
            age = time.time() - tmp.stat().st_mtime
            writer = tmp.name[len(prefix):-len(".tmp")].rsplit("-", 2)  # [host, pid, random] or legacy
            dead = len(writer) == 3 and writer[0] == host and writer[1].isdigit() and not _process_alive(int(writer[1]))
            if dead or age > _STALE_AFTER_S:
                tmp.unlink()
        except OSError:  # gone meanwhile, or not ours to delete: leave it
            pass


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically; creates the parent folder and removes the
    temporary files of earlier writes of ``path`` that were killed. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_writer_tag()}", suffix=".tmp", dir=path.parent)
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


def safe_load(path: str | os.PathLike, required_keys: tuple[str, ...] = (),
              fix: str = "delete it to rebuild it") -> dict:
    """Load a dict saved by :func:`atomic_save`, with ``weights_only=True``.

    Args:
        path: the file.
        required_keys: keys the dict must have.
        fix: the advice when a key is missing. The default suits a cache, which is
            rebuilt; a file the user may own (a checkpoint path) needs other advice.

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
        raise CorruptFileError(f"{path} lacks {', '.join(missing)}; {fix}")
    return obj


def load_checkpoint(path: str | os.PathLike, config: dict, required_keys: tuple[str, ...], *,
                    kind: str = "training", records: Mapping[str, Any] | None = None) -> dict:
    """Load a training checkpoint and check it belongs to a run with this ``config``,
    of this ``kind``, and with these ``records``.

    A run resumes only from a checkpoint written by the same recipe on the same data
    with the same network: resuming with any of them changed would silently mix two
    experiments (or end in torch's ``load_state_dict`` error).

    Args:
        path: the checkpoint.
        config: the run's config as a dict; it must equal the stored one.
        required_keys: keys a checkpoint of this kind has.
        kind: who writes such checkpoints (``"fit"``, ``"fit_gan"``), for the messages.
        records: what else must match, e.g. ``{"data": data_record(data),
            "architecture": architecture(model)}``.

    Raises:
        CorruptFileError: the file is unreadable, or is not a checkpoint of this kind.
            The file is never deleted: a checkpoint path may name a file of the user's.
        CheckpointMismatchError: it was written with a different config, kind, data or
            network (the message names what changed).
    """
    state = safe_load(path, (), "")
    saved_kind = state.get("kind")
    if saved_kind is not None and saved_kind != kind:
        raise CheckpointMismatchError(
            f"{path} is a checkpoint of {saved_kind}, not of {kind}; pass another checkpoint path")
    missing = [k for k in (*required_keys, "config") if k not in state]
    if missing and {"config", "epoch"} <= state.keys() and "records" not in state:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written by an older cnnlearn (it lacks {', '.join(missing)}) and cannot be "
            f"resumed; delete it or pass another checkpoint path to start a new run")
    if missing:
        raise CorruptFileError(
            f"{path} is not a {kind} checkpoint (it lacks {', '.join(missing)}); pass another checkpoint "
            f"path: {kind} does not overwrite a file it did not write")
    if state["config"] != config:
        changed = [k for k in sorted({*config, *state["config"]}) if state["config"].get(k) != config.get(k)]
        raise CheckpointMismatchError(
            f"checkpoint {path} was written with a different config (changed: {', '.join(changed)}); "
            f"delete it or pass another checkpoint path to start a new run")
    for name, now in (records or {}).items():
        saved = state.get("records", {}).get(name)
        if saved is None:
            raise CheckpointMismatchError(
                f"checkpoint {path} has no record of its {name} (an older cnnlearn wrote it), so resuming "
                f"cannot be checked; delete it or pass another checkpoint path to start a new run")
        diffs = list(_differences(saved, now))
        if diffs:
            more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
            raise CheckpointMismatchError(
                f"checkpoint {path} was trained with other {name}: {'; '.join(diffs[:3])}{more}. "
                f"Resume with the same {name}, or pass another checkpoint path to start a new run")
    return state


def _differences(saved: Any, now: Any, prefix: str = "") -> Iterator[str]:
    """``"key: A in the checkpoint, B now"`` for every leaf where two records differ."""
    if isinstance(saved, Mapping) and isinstance(now, Mapping):
        for k in list(saved) + [k for k in now if k not in saved]:
            key = f"{prefix}{k}"
            if k not in now:
                yield f"{key} is in the checkpoint only"
            elif k not in saved:
                yield f"{key} is not in the checkpoint"
            else:
                yield from _differences(saved[k], now[k], f"{key}.")
    elif saved != now:
        yield f"{prefix.rstrip('.')}: {_short(saved)} in the checkpoint, {_short(now)} now"


def _short(value: Any) -> str:
    r = repr(tuple(value) if isinstance(value, list) else value)
    return r if len(r) <= 40 else r[:37] + "..."


def architecture(model: nn.Module) -> dict:
    """What identifies a network in a checkpoint: its class and the shape of every tensor
    of its ``state_dict`` (parameters and buffers, which ``load_state_dict`` needs)."""
    return {"class": type(model).__qualname__,
            "parameters": {k: list(v.shape) for k, v in model.state_dict().items()}}


def _checksum(images: torch.Tensor, labels: torch.Tensor) -> str:
    # Cheap, order-independent: the sum of the labels and of every 61st pixel byte. It
    # tells datasets and subsets apart without reading all 150 MB of CIFAR-10.
    pixels = int(images.reshape(-1)[::61].sum(dtype=torch.int64))
    return f"{int(labels.sum())}:{pixels}"


def loader_record(loader: Any) -> dict:
    """What identifies a loader's data in a checkpoint. For a cnnlearn ``DeviceLoader``:
    the number of images, a checksum, the batch size, seed and augmentation (which fix the
    batches of every epoch); for another iterable what it tells (type, batches, size)."""
    images, labels = getattr(loader, "images", None), getattr(loader, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        return {"images": len(labels), "checksum": _checksum(images, labels), "batch_size": loader.batch_size,
                "seed": loader.seed, "augment": bool(loader.augment), "pad": getattr(loader, "pad", None),
                "flip": getattr(loader, "flip", None),
                # only when on, so that checkpoints written before the option existed still match
                **({"alternate_flip": True} if getattr(loader, "alternate_flip", False) else {})}
    record: dict[str, Any] = {"type": type(loader).__name__}
    if hasattr(loader, "__len__"):
        record["batches"] = len(loader)
    dataset = getattr(loader, "dataset", None)
    if hasattr(dataset, "__len__"):
        record["samples"] = len(dataset)
    return record


def data_record(data: Any) -> dict:
    """What identifies a ``Data`` in a checkpoint: the dataset's name, its classes and both
    splits (:func:`loader_record`)."""
    return {"dataset": data.name, "classes": len(data.classes), "train": loader_record(data.train),
            "test": {"images": data.test.num_samples, "checksum": _checksum(data.test.images, data.test.labels)}}


def save_run(path: str | os.PathLike, stateful: dict[str, Any], history: Any, epoch: int,
             config: dict, *, kind: str = "training", records: Mapping[str, Any] | None = None,
             **extra: Any) -> None:
    """Write a training run's checkpoint atomically: the ``state_dict()`` of every object
    in ``stateful`` (models, optimizers, schedulers, scalers) under its key, the history
    (``history.as_dict()``), the number of finished epochs, the CPU random state, the
    ``config``, ``kind`` and ``records`` that :func:`load_checkpoint` compares, and any
    ``extra`` values."""
    atomic_save({**{k: obj.state_dict() for k, obj in stateful.items()},
                 "history": history.as_dict(), "epoch": epoch, "rng": torch.get_rng_state(),
                 "config": config, "kind": kind, "records": dict(records or {}), **extra}, path)


def restore_run(path: str | os.PathLike, stateful: dict[str, Any], config: dict,
                extra_keys: tuple[str, ...] = (), *, kind: str = "training",
                records: Mapping[str, Any] | None = None) -> dict:
    """Read a checkpoint written by :func:`save_run` for a run with this ``config``,
    ``kind`` and ``records``, load every object of ``stateful`` from it, restore the CPU
    random state, and return the checkpoint (for its ``history``, ``epoch`` and
    ``extra_keys``).

    Raises:
        CorruptFileError, CheckpointMismatchError: as :func:`load_checkpoint`.
    """
    state = load_checkpoint(path, config, (*stateful, "history", "epoch", "rng", *extra_keys),
                            kind=kind, records=records)
    for k, obj in stateful.items():
        obj.load_state_dict(state[k])
    torch.set_rng_state(state["rng"])
    return state
