"""Argument checks for every public function, written once per kind of value.

Each checker takes an argument's name and value and either returns the value in its
plain form (a NumPy or one-element tensor int becomes a Python ``int``, a list pair a
tuple) or raises with a message that names the argument, the value and the fix:

* :class:`ArgumentTypeError` when the value is of the wrong kind (a string for a number,
  a model's name for a model). It subclasses both ``TypeError`` and ``ValueError``.
* ``ValueError`` when it is of the right kind but out of range (a negative stride, a NaN
  learning rate, a folder where a file path is needed).

So every bad argument is a ``ValueError``, as the package's docstrings say, and
``except TypeError`` still catches the wrong types.

Configs validate their fields from a table (:func:`check_fields`): a new field is
validated by adding its entry to the table.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    # numbers and other values
    "ArgumentTypeError", "integer", "positive_int", "non_negative_int", "real", "positive_float",
    "non_negative_float", "boolean", "one_of", "choice", "interval", "seed", "betas", "per_channel",
    "optional", "int_pair",
    # objects
    "module", "trainable", "loader", "data", "batches", "instance", "function", "tensor", "class_indices",
    # files and the environment
    "writable_file", "device", "env_folder",
    # configs, models, training
    "check_fields", "check_model_input", "check_classifier", "check_gan_pair", "explained_forward",
    "check_loss", "DIVERGENCE_FACTOR",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: a ``TypeError`` that is also a ``ValueError``."""


def _show(value: Any) -> str:
    """``repr`` cut to a readable length, with the type where the repr hides it."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # arrays and tensors: their repr is long
        return f"{_a(type(value).__name__)} of shape {tuple(value.shape)} and dtype {value.dtype}"
    r = repr(value)
    if len(r) > 60:
        r = r[:57] + "..."
    if isinstance(value, (bool, int, float, str)) or value is None:
        return r
    return f"{r} ({_a(type(value).__name__)})"


def _plain(value: Any) -> Any:
    """NumPy scalars and one-element tensors -> Python numbers; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
        return value.item()
    item = getattr(value, "item", None)
    if type(value).__module__ == "numpy" and callable(item) and getattr(value, "size", 0) == 1:
        return item()
    return value


def _is_number_text(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _a(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _fail(name: str, value: Any, need: str, fix: str = "", kind: type[Exception] = ValueError) -> Exception:
    return kind(f"{name} must be {need}, got {_show(value)}" + (f"; {fix}" if fix else ""))


# --------------------------------------------------------------------------- numbers


def integer(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
            fix: str = "") -> int:
    """An int (NumPy ints and one-element integer tensors too; never a bool or a float)."""
    need = ("an int" if minimum is None else
            "a positive int" if minimum == 1 and maximum is None else
            "a non-negative int" if minimum == 0 and maximum is None else
            f"an int in [{minimum}, {maximum}]" if maximum is not None else f"an int >= {minimum}")
    v = _plain(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        hint = fix or (f"write {int(v)}" if isinstance(v, float) and math.isfinite(v) and v == int(v) else "")
        raise _fail(name, value, need, hint, ArgumentTypeError)
    v = int(v)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise _fail(name, value, need, fix)
    return v


def positive_int(name: str, value: Any, fix: str = "") -> int:
    """An int >= 1."""
    return integer(name, value, minimum=1, fix=fix)


def non_negative_int(name: str, value: Any, fix: str = "") -> int:
    """An int >= 0."""
    return integer(name, value, minimum=0, fix=fix)


def real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False, fix: str = "") -> float:
    """A finite number (int or float, not bool) in the given interval, as a float."""
    if low is not None and high is not None:
        need = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        need = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        need = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        need = "a finite number"
    v = _plain(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise _fail(name, value, need, fix or ("write it without quotes" if _is_number_text(v) else ""),
                    ArgumentTypeError)
    v = float(v)
    if not math.isfinite(v):
        raise _fail(name, value, need, fix or "NaN and infinity are not values to train with")
    if low is not None and (v < low or (low_open and v == low)):
        raise _fail(name, value, need, fix)
    if high is not None and (v > high or (high_open and v == high)):
        raise _fail(name, value, need, fix)
    return v


def positive_float(name: str, value: Any, fix: str = "") -> float:
    """A finite number > 0."""
    return real(name, value, low=0.0, low_open=True, fix=fix)


def non_negative_float(name: str, value: Any, fix: str = "") -> float:
    """A finite number >= 0."""
    return real(name, value, low=0.0, fix=fix)



# --------------------------------------------------------------------------- other values


def boolean(name: str, value: Any) -> bool:
    """``True`` or ``False`` (a NumPy bool too). A string such as ``"no"`` is refused:
    ``bool("no")`` is true, which is how ``augment="no"`` once turned augmentation on."""
    v = _plain(value)
    if not isinstance(v, bool):
        raise _fail(name, value, "True or False", f"write {name}=False or {name}=True without quotes"
                    if isinstance(v, str) else "", ArgumentTypeError)
    return v


def one_of(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of ``choices`` (compared with ``==``; a wrong type is a wrong value here)."""
    choices = tuple(choices)
    if not any(type(value) is type(c) and value == c for c in choices):
        raise _fail(name, value, "one of " + ", ".join(map(repr, choices)))
    return value


def choice(*choices: Any) -> Callable[[str, Any], Any]:
    """A checker for :func:`one_of` these ``choices``, for a rules table."""
    def checked(name: str, value: Any) -> Any:
        return one_of(name, value, choices)
    checked.__doc__ = "one of " + ", ".join(map(repr, choices))
    return checked


def interval(low: float, high: float, *, high_open: bool = True,
             low_open: bool = False) -> Callable[[str, Any], float]:
    """A checker for a number in an interval (default ``[low, high)``), for a rules table."""
    def checked(name: str, value: Any) -> float:
        return real(name, value, low=low, high=high, low_open=low_open, high_open=high_open)
    return checked


def seed(name: str, value: Any) -> int:
    """A random seed: an int in [0, 2**32) (every generator of NumPy and PyTorch takes it)."""
    return integer(name, value, minimum=0, maximum=2**32 - 1)


def betas(name: str, value: Any) -> tuple[float, float]:
    """Adam's ``(beta1, beta2)``: a pair of numbers in [0, 1), as a tuple of floats."""
    need, fix = "a pair (beta1, beta2) of numbers in [0, 1)", "e.g. (0.5, 0.999), DCGAN's"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise _fail(name, value, need, fix, ArgumentTypeError if not isinstance(value, (tuple, list)) else ValueError)
    try:
        return tuple(real(f"{name}[{i}]", b, low=0.0, high=1.0, high_open=True) for i, b in enumerate(value))
    except ValueError as e:  # name the pair, as it was written
        raise _fail(name, value, need, fix, type(e)) from None


def per_channel(name: str, value: Any, channels: int, *, positive: bool = False) -> tuple[float, ...]:
    """One finite number per channel (``> 0`` if ``positive``), as a tuple of floats."""
    v = _plain(value)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = (v,)
    if isinstance(v, torch.Tensor):
        v = v.tolist()
    if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
        raise _fail(name, value, f"a sequence of {channels} numbers, one per channel", "", ArgumentTypeError)
    v = list(v)
    if len(v) != channels:
        raise ValueError(f"{name} needs one value per channel ({channels}), got {len(v)}: {_show(value)}")
    fix = "a standard deviation of 0 would divide the pixels by zero" if positive else ""
    check = positive_float if positive else real
    return tuple(check(f"{name}[{i}]", x, fix=fix) for i, x in enumerate(v))


def optional(check: Callable[..., Any]) -> Callable[..., Any]:
    """A checker that also accepts ``None``."""
    def checked(name: str, value: Any) -> Any:
        return None if value is None else check(name, value)
    checked.__doc__ = f"None, or {check.__doc__ or check.__name__}"
    return checked


def int_pair(name: str, value: Any, *, minimum: int = 0) -> tuple[int, int]:
    """An int or a pair ``(height, width)`` of ints, each >= ``minimum``, as a pair."""
    v = _plain(value)
    items = list(v) if isinstance(v, (tuple, list)) else [v, v]
    if len(items) != 2 or any(isinstance(i, bool) or not isinstance(_plain(i), numbers.Integral) for i in items):
        raise _fail(name, value, "an int or a pair (height, width) of ints", "e.g. 3 or (3, 3)", ArgumentTypeError)
    pair = tuple(int(_plain(i)) for i in items)
    if min(pair) < minimum:
        raise ValueError(f"{name}={value!r} is out of range: need {name} >= {minimum}"
                         + (" (0 would make the formula meaningless)" if minimum == 1 and min(pair) == 0 else ""))
    return pair


def module(name: str, value: Any) -> nn.Module:
    """An ``nn.Module`` instance (a model's name or class gets a hint)."""
    if isinstance(value, nn.Module):
        return value
    if isinstance(value, str):
        fix = f"build it first, e.g. cnnlearn.create_model({value!r}, num_classes=10)"
    elif isinstance(value, type) and issubclass(value, nn.Module):
        fix = f"pass an instance, {value.__name__}(...), not the class"
    elif isinstance(value, Mapping):
        fix = "that looks like a state_dict: build the model, then model.load_state_dict(it)"
    else:
        fix = ""
    raise _fail(name, value, "an nn.Module (a network)", fix, ArgumentTypeError)


def trainable(name: str, value: Any) -> nn.Module:
    """An ``nn.Module`` with at least one parameter that requires a gradient."""
    value = module(name, value)
    if not any(p.requires_grad for p in value.parameters()):
        raise ValueError(f"{name} ({type(value).__name__}) has no trainable parameters: there is nothing to train; "
                         f"pass the network itself (with requires_grad on its parameters)")
    return value


def loader(name: str, value: Any) -> Any:
    """A :class:`cnnlearn.data.DeviceLoader` (a ``Data`` gets the hint to pick a split)."""
    from .data import Data, DeviceLoader

    if isinstance(value, DeviceLoader):
        return value
    fix = "pass data.test (or data.train), one of its loaders" if isinstance(value, Data) else \
        "use the loaders of cnnlearn.load_data(...), e.g. data.test"
    raise _fail(name, value, "a cnnlearn DeviceLoader", fix, ArgumentTypeError)


def data(name: str, value: Any) -> Any:
    """A :class:`cnnlearn.data.Data` from ``load_data`` (a loader gets a hint)."""
    from .data import Data, DeviceLoader

    if isinstance(value, Data):
        return value
    fix = ("pass the whole Data from cnnlearn.load_data(...) (it holds the test loader too), "
           "not one of its loaders") if isinstance(value, DeviceLoader) else \
        "load it with cnnlearn.load_data(...)"
    raise _fail(name, value, "the Data from cnnlearn.load_data(...)", fix, ArgumentTypeError)


def batches(name: str, value: Any) -> Any:
    """A re-iterable source of batches (a loader, a list of tensors); a ``Data`` gets the
    hint to pick a split, a one-shot iterator is refused (a second epoch would be empty)."""
    from .data import Data

    if isinstance(value, Data):
        raise _fail(name, value, "a loader of batches", "pass data.train, the training loader of the Data",
                    ArgumentTypeError)
    if isinstance(value, (torch.Tensor, str, bytes)) or not hasattr(value, "__iter__"):
        raise _fail(name, value, "a re-iterable loader of batches, e.g. data.train or a list of image tensors", "",
                    ArgumentTypeError)
    if isinstance(value, Iterator):  # a generator: its second pass would be empty
        raise _fail(name, value, "re-iterable (each epoch iterates it again)",
                    "pass a loader or a list instead of a generator or iterator", ArgumentTypeError)
    return value


def instance(name: str, value: Any, cls: type, fix: str = "") -> Any:
    """An instance of ``cls`` (a config, say); a dict gets the hint to unpack it."""
    if isinstance(value, cls):
        return value
    if not fix and isinstance(value, Mapping):
        fix = f"build one from the dict: {cls.__name__}(**your_dict)"
    raise _fail(name, value, f"a {cls.__name__}", fix, ArgumentTypeError)


def function(name: str, value: Any) -> Any:
    """A callable or ``None``."""
    if value is not None and not callable(value):
        raise _fail(name, value, "a function or None", "", ArgumentTypeError)
    return value


def tensor(name: str, value: Any, *, ndim: int | None = None, integer_dtype: bool = False) -> torch.Tensor:
    """A tensor (a NumPy array or a list becomes one), of ``ndim`` dimensions and, if
    ``integer_dtype``, of an integer type."""
    if not isinstance(value, torch.Tensor):
        if type(value).__module__ == "numpy" or isinstance(value, (list, tuple)):
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError) as e:
                raise _fail(name, value, "a tensor", f"it cannot become one ({e})", ArgumentTypeError) from None
        else:
            raise _fail(name, value, "a tensor", "", ArgumentTypeError)
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension{'s' * (ndim != 1)}, got shape {tuple(value.shape)}")
    if integer_dtype and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise ArgumentTypeError(f"{name} must hold integers (class indices), got dtype {value.dtype}; "
                                f"use {name}.long() or .argmax(1) of logits")
    return value


def class_indices(name: str, value: Any, num_classes: int) -> torch.Tensor:
    """Class indices: a 1-D integer tensor (a NumPy array or list becomes one) with every
    value in ``[0, num_classes)``, on the CPU."""
    t = tensor(name, value, integer_dtype=True)
    if t.ndim == 2 and t.shape[1] == num_classes:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, which looks like logits; pass {name}.argmax(1)")
    if t.ndim != 1:
        raise ValueError(f"{name} must be a 1-D tensor of class indices, got shape {tuple(t.shape)}")
    t = t.cpu().long()
    if len(t) and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}) for {num_classes} classes, got values in "
                         f"[{int(t.min())}, {int(t.max())}]; pass the classes the labels index")
    return t


def writable_file(name: str, value: Any) -> Path:
    """A path where a file can be written now: not a folder, not under a file, in a
    folder (existing, or creatable under one) where a test file can be created.
    ``~`` is expanded. Nothing is left behind by the check."""
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise _fail(name, value, "a file path (a str or a pathlib.Path)", "", ArgumentTypeError)
    if not str(value).strip():
        raise _fail(name, value, "a file path", "e.g. 'runs/resnet20.pt'")
    try:
        path = Path(value).expanduser()
    except RuntimeError as e:  # "~user" of an unknown user
        raise ValueError(f"{name}={str(value)!r} cannot be expanded ({e}); give a full path") from None
    if path.is_dir():
        raise ValueError(f"{name}={str(value)!r} is a folder; give a file path in it, e.g. {str(path / 'run.pt')!r}")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{name}={str(value)!r} lies under {str(folder)!r}, which is a file, not a folder; "
                         f"choose another path")
    try:  # the only sure test: os.access is wrong for root, read-only mounts and some network drives
        fd, probe = tempfile.mkstemp(prefix=".cnnlearn-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{name}={str(value)!r} cannot be written: folder {str(folder)!r} refuses new files "
                         f"({e.strerror or e}); choose a writable folder") from None
    return path


# --------------------------------------------------------------------------- the environment


_DEVICE_TYPES = ("cpu", "cuda", "mps")


def device(name: str, value: Any) -> torch.device:
    """A device this machine has: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` (or a
    ``torch.device``). ``name`` is the argument or environment variable it came from."""
    unset = f", or unset {name}" if name.isupper() else ""  # an environment variable
    if not isinstance(value, (str, torch.device)):
        raise ArgumentTypeError(f"{name} must be a device such as 'cpu' or 'cuda', got {_show(value)}")
    try:
        dev = torch.device(value.strip() if isinstance(value, str) else value)
    except RuntimeError:
        raise ValueError(f"{name}={str(value)!r} is not a device; use 'cpu', 'cuda', 'cuda:0' or 'mps'{unset}") from None
    if dev.type not in _DEVICE_TYPES:
        raise ValueError(f"{name}={str(value)!r}: cnnlearn runs on {', '.join(_DEVICE_TYPES)}; use one of them{unset}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={str(value)!r} asks for CUDA but CUDA is not available; use 'cpu'{unset}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={str(value)!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0; use 'cuda:0'{unset}")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name}={str(value)!r} asks for Apple's MPS, which this machine does not have; "
                             f"use 'cpu'{unset}")
    return dev


def env_folder(variable: str) -> Path | None:
    """The folder an environment variable names (``~`` expanded), or ``None`` when it is
    unset or empty. Refuses a value that cannot be expanded or that names a file."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return None
    try:
        path = Path(value).expanduser()
    except RuntimeError as e:
        raise ValueError(f"{variable}={value!r} cannot be expanded ({e}); set it to a full path or unset it") from None
    if path.exists() and not path.is_dir():
        raise ValueError(f"{variable}={value!r} is a file, not a folder; set it to a folder or unset it")
    return path


# --------------------------------------------------------------------------- configs and models


def check_fields(config: Any, rules: Mapping[str, Callable[[str, Any], Any]]) -> None:
    """Validate every field of a frozen dataclass with its rule, storing the plain value
    the rule returns (so ``epochs=np.int64(3)`` is saved in a checkpoint as ``3``)."""
    import dataclasses

    # A field without a rule is left alone here (a config must still import while a field
    # is being added); tests/test_validation.py fails for every field without one.
    for f in dataclasses.fields(config):
        if f.name in rules:
            object.__setattr__(config, f.name, rules[f.name](f.name, getattr(config, f.name)))


def _autocast(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no argument (CUDA) and has a CPU twin
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_model_input(x: Any, model_name: str, channels: int | None = None,
                      weight: torch.Tensor | None = None, min_size: int | None = None) -> None:
    """The check at the top of a network's ``forward``: ``x`` is a float tensor
    ``(B, channels, H, W)`` of the parameters' dtype (and at least ``min_size`` pixels
    high and wide), with a message saying how to convert what was passed."""
    if not isinstance(x, torch.Tensor):
        fix = "convert it with torch.from_numpy(x).float()" if type(x).__module__ == "numpy" else \
            "pass a batch of images as a torch tensor"
        raise ArgumentTypeError(f"{model_name} expects a float tensor (B, C, H, W), got {_show(x)}; {fix}")
    want = f"(B, {channels if channels is not None else 'C'}, H, W)"
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        fix = "; add the batch dimension with x.unsqueeze(0)" if x.ndim == 3 else ""
        raise ValueError(f"{model_name} expects images of shape {want}, got {tuple(x.shape)}{fix}")
    if x.dtype not in _FLOATS:
        raise ArgumentTypeError(
            f"{model_name} expects float images, got dtype {x.dtype}; convert uint8 pixels with x.float() / 255 "
            f"and normalise them as the loaders do (data.train.normalize(x))")
    if weight is not None and x.dtype != weight.dtype and not _autocast(x.device.type):
        raise ArgumentTypeError(f"{model_name} has {weight.dtype} parameters but got {x.dtype} images; "
                                f"use x.to({weight.dtype}) (or model.to({x.dtype}))")
    if min_size is not None and min(x.shape[2:]) < min_size:
        raise ValueError(f"{model_name} needs images of at least {min_size}x{min_size} pixels, got "
                         f"{x.shape[2]}x{x.shape[3]}; resize them or use the CIFAR variant of the network")


@torch.no_grad()
def check_classifier(model: nn.Module, data: Any, autocast: torch.dtype | None = None) -> None:
    """Before the first step of ``fit``: the model takes the data's images and returns
    one float logit per class. One forward pass of two training images in eval mode
    without gradients, which changes nothing (BatchNorm updates its statistics only in
    train mode); the model's mode is restored. ``autocast``: the dtype training will
    autocast to (None: float32), so the pass computes as the training steps will."""
    num_classes, loader = len(data.classes), data.train
    if len(loader) == 0:
        raise ValueError(f"data.train yields no batches ({loader.num_samples} images, batch_size={loader.batch_size}, "
                         f"drop_last={loader.drop_last}); use a smaller batch_size")
    masks = bool(getattr(loader, "has_masks", False))
    for split in (data.train, data.test):
        labels = split.labels[split.labels != 255] if masks else split.labels  # 255: unlabelled pixels
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
            raise ValueError(f"the labels of the data must lie in [0, {num_classes}) for its {num_classes} classes, "
                             f"got [{int(labels.min())}, {int(labels.max())}]")
    x = loader.normalize(loader.images[:2])  # (2, C, H, W) float32, as the batches are
    name, was_training = type(model).__name__, model.training
    model.eval()
    try:
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            out = model(x)
    except torch.cuda.OutOfMemoryError:
        raise  # the device is full: not a mismatch between model and data
    except (RuntimeError, ValueError, TypeError, IndexError) as e:  # this model does not fit this data
        precision = "float32" if autocast is None else f"{autocast} autocast"
        raise ValueError(f"{name} cannot take the images of this data, shape {tuple(x.shape[1:])} on "
                         f"{x.device} in {precision}: {type(e).__name__}: {e}") from e
    finally:
        model.train(was_training)
    if masks:
        size = tuple(loader.labels.shape[-2:])
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or len(out) != len(x) or tuple(out.shape[-2:]) != size:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{name} must return per-pixel logits of shape (B, {num_classes}, {size[0]}, {size[1]}) "
                             f"for this segmentation data, got {shape} for a batch of {len(x)}; use a segmentation "
                             f"network (e.g. fcn8s_small) that upsamples its scores to the input size")
    elif not isinstance(out, torch.Tensor) or out.ndim != 2 or len(out) != len(x):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must return logits of shape (B, {num_classes}), got {shape} for a batch of "
                         f"{len(x)}; end the network with a head such as nn.Flatten() and nn.Linear(..., {num_classes})")
    if out.shape[1] != num_classes:
        raise ValueError(f"{name} has {out.shape[1]} outputs but the data has {num_classes} classes; "
                         f"build it with num_classes={num_classes}")
    if not out.is_floating_point():
        raise ValueError(f"{name} returns {out.dtype} logits; cross-entropy needs floats")


@torch.no_grad()
def check_gan_pair(generator: nn.Module, discriminator: nn.Module, real: torch.Tensor, nz: int) -> None:
    """Before the first update of ``fit_gan``: the generator's images have the real
    images' shape and the discriminator returns one float logit per image. Both run once
    in eval mode (no statistic changes) on two fixed latent vectors (no random state used)."""
    z = torch.randn(2, nz, generator=torch.Generator().manual_seed(0)).to(real.device)
    nets = {"generator": generator, "discriminator": discriminator}
    modes = {k: m.training for k, m in nets.items()}
    for m in nets.values():
        m.eval()
    try:
        fake = generator(z)
        if not isinstance(fake, torch.Tensor) or tuple(fake.shape[1:]) != tuple(real.shape[1:]):
            shape = tuple(fake.shape[1:]) if isinstance(fake, torch.Tensor) else type(fake).__name__
            raise ValueError(f"the generator draws images of shape {shape} but the loader's are "
                             f"{tuple(real.shape[1:])}; build both networks for the data's image_size and channels")
        try:
            logits = discriminator(real[:2])
        except Exception as e:
            raise ValueError(f"the discriminator cannot take the loader's images, shape {tuple(real.shape[1:])}: "
                             f"{type(e).__name__}: {e}") from e
    finally:
        for k, m in nets.items():
            m.train(modes[k])
    if not isinstance(logits, torch.Tensor) or logits.numel() != len(real[:2]) or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the discriminator must return one float logit per image, shape (B,); got {shape} "
                         f"for a batch of {len(real[:2])}")


@contextlib.contextmanager
def explained_forward(model: nn.Module, input_size: tuple[int, ...],
                      errors: tuple[type[Exception], ...] = (RuntimeError, ValueError, TypeError, IndexError),
                      ) -> Iterator[None]:
    """Around a forward pass on an example input: an error (of ``errors``) becomes a
    ``ValueError`` that says which network could not take which input size (AlexNet at
    32x32, a ResNet given one channel), with torch's own message kept."""
    try:
        yield
    except errors as e:
        root = e
        while root.__cause__ is not None:  # torchinfo wraps the model's error in its own
            root = root.__cause__
        raise ValueError(
            f"{type(model).__name__} cannot take an input of size {tuple(input_size)} "
            f"({type(root).__name__}: {root}); pass the size of one input it was built for, without the batch "
            f"dimension: e.g. (3, 224, 224) for the ImageNet networks, (3, 32, 32) for the CIFAR ones") from e


# The divergence guard. An epoch whose mean training loss exceeds DIVERGENCE_FACTOR times
# the larger of two references has diverged: the run's first loss (a network can start
# badly scaled) and a floor (fit: ln(num_classes), the loss of a uniform guess; fit_gan:
# 10 nats). Learning lowers the loss, and even a noisy run with a learning-rate spike
# stays within a few times its start; a run at lr=1e6 reaches 1e17 within an epoch.
DIVERGENCE_FACTOR = 10.0


def check_loss(loss: float, epoch: int, *, start: float | None, floor: float, what: str, fix: str) -> None:
    """Raise ``FloatingPointError`` when an epoch's mean ``loss`` is NaN, infinite, or
    above ``DIVERGENCE_FACTOR * max(start, floor)`` (see above)."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"{what} became {loss} in epoch {epoch}: {fix}")
    reference = max(abs(start), floor) if start is not None and math.isfinite(start) else floor
    if abs(loss) > DIVERGENCE_FACTOR * reference:
        raise FloatingPointError(
            f"{what} diverged in epoch {epoch}: its mean {loss:.4g} is more than {DIVERGENCE_FACTOR:g}x "
            f"its reference {reference:.4g} (the larger of the first loss and {floor:.4g}): {fix}")
