"""Block diagrams drawn from the modules themselves, so a picture cannot disagree with the code.

:func:`draw_block` traces a block (or a small network) with ``torch.fx``, runs it on a
real input with ``torch.fx.passes.shape_prop.ShapeProp`` to learn the shape of every
edge, checks that the traced graph computes exactly what the module computes, and draws
the graph top to bottom: parallel branches side by side, the addition as a circled plus,
elementwise multiplication (squeeze-and-excitation's rescaling) as a circled times,
concatenation as its own box, every box labelled with the layer and its settings
("Conv 3x3, 64→128, s2") and every edge with the tensor shape it carries ("128×16×16").
:func:`block_graph` returns the same graph as data, which the tests check.

Why our own layout and not torchview + graphviz: graphviz's ``dot`` is a system binary
that ``pip`` cannot install, and the book's promise is that ``make book`` / ``make test``
(and ``%pip install`` on Colab) install everything. A block is a small, nearly
series-parallel graph, and the textbook convention for drawing it (the main path in one
column, each shortcut or side branch in a column of its own, merged at a marked node) is
a short algorithm: put each node on the layer of its longest path from the input, give
the longest path column 0 and every other branch the nearest free column on the side its
argument order says (``out + shortcut(x)``: the shortcut to the right). matplotlib then
draws it with patches and arrows, and the picture works wherever matplotlib does.

Tracing follows ``torch.fx`` with three additions. Every recorded operation is also run
on the real input, so Python control flow on shapes (``if x.ndim != 4: raise ...``) takes
the branch this input takes instead of stopping the trace. The networks' input check
(``isinstance(x, torch.Tensor)``, false for fx's stand-in) is recorded as one call rather
than entered. And a submodule whose forward still cannot be traced is drawn as one box,
with a warning that names it; if the module's own forward cannot, ``ValueError`` says so.

Typical use in a chapter::

    cnnlearn.draw_block(BasicBlock(64, 128, 2, make_shortcut("B", 64, 128, 2)), (64, 32, 32),
                        title="Basic block, projection shortcut (option B)")
    cnnlearn.draw_block(resnet20(), (3, 32, 32), depth=1)   # a network as its blocks
"""
from __future__ import annotations

import dataclasses
import functools
import heapq
import inspect
import math
import operator
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.fx as fx
import torch.nn as nn
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Circle, FancyBboxPatch
from matplotlib.textpath import TextPath
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ._validate import check_model_input
from .models.efficientnet import StochasticDepth
from .models import layers as _layers
from .models.layers import ChannelShuffle, ConvBNAct, SqueezeExcite, channel_shuffle
from .models.resnet import PadShortcut

__all__ = ["Node", "Edge", "BlockGraph", "DEFAULT_LEAF_MODULES", "block_graph", "draw_block"]

# Drawn as one box each: a conv-BN-activation unit reads as one step of a block (the
# papers' figures draw it so), and the shuffle and option A's shortcut are single ideas
# whose traced form (reshape, transpose, slicing, padding) would hide them.
DEFAULT_LEAF_MODULES: tuple[type[nn.Module], ...] = (ConvBNAct, ChannelShuffle, PadShortcut, StochasticDepth)

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)  # exact types: structure, not layers


# --------------------------------------------------------------------------- the graph as data


@dataclass(frozen=True)
class Node:
    """One box (or circle) of a diagram.

    Attributes:
        name: unique id (``"input"``, ``"output"``, or torch.fx's node name, e.g. ``"conv1"``).
        op: what it computes: ``"input"``, ``"output"``, ``"conv"``, ``"norm"``, ``"act"``,
            ``"pool"``, ``"gap"``, ``"linear"``, ``"add"``, ``"mul"``, ``"cat"``, ``"split"``,
            ``"shuffle"``, ... (``"module"`` / ``"function"`` for anything else).
        kind: colour class: ``"conv"``, ``"norm"``, ``"act"``, ``"pool"``, ``"linear"``,
            ``"merge"``, ``"reshape"``, ``"io"`` or ``"other"``.
        label: the text drawn in the box, lines separated by ``"\\n"``.
        target: the submodule's path (``"shortcut.conv"``) or the function's name (``"add"``).
    """

    name: str
    op: str
    kind: str
    label: str
    target: str


@dataclass(frozen=True)
class Edge:
    """A tensor flowing from one node to another.

    Attributes:
        src: name of the node that produces it.
        dst: name of the node that reads it.
        shape: its shape without the batch dimension, e.g. ``(64, 32, 32)``.
        label: the shape as drawn, e.g. ``"64×32×32"``.
    """

    src: str
    dst: str
    shape: tuple[int, ...]
    label: str


@dataclass(frozen=True)
class BlockGraph:
    """The diagram of a module as data: nodes in execution order, edges in argument order.

    Attributes:
        nodes: the nodes, ``"input"`` first and ``"output"`` last.
        edges: the edges; a node's incoming edges are listed in its arguments' order.
        title: the figure's title.
    """

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    title: str

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r}; nodes: {[n.name for n in self.nodes]}")

    def find(self, op: str) -> list[Node]:
        """The nodes whose ``op`` is ``op``, in execution order."""
        return [n for n in self.nodes if n.op == op]

    def inputs(self, name: str) -> list[Edge]:
        """The edges into node ``name``, in argument order."""
        return [e for e in self.edges if e.dst == name]

    def outputs(self, name: str) -> list[Edge]:
        """The edges out of node ``name``."""
        return [e for e in self.edges if e.src == name]


# --------------------------------------------------------------------------- tracing


class _ValueProxy(fx.Proxy):
    """A proxy that knows its concrete value, so ``len()`` works on it while tracing."""

    def __len__(self) -> int:
        return len(self.tracer.value_of(self))  # type: ignore[attr-defined]


class _ValueTracer(fx.Tracer):
    """``torch.fx`` symbolic tracing that also runs every recorded operation on a real input.

    Each node keeps its concrete value in ``node.meta["value"]``, which resolves Python
    control flow (``if``, ``for``, ``len``) the way this input resolves it.
    """

    def __init__(self, root: nn.Module, example: torch.Tensor, leaf_types: tuple[type, ...],
                 leaf_names: set[str], depth: int | None) -> None:
        # Recorded as one call each, never entered: the shuffle is one idea, and the input
        # check at the top of every network's forward asks isinstance(x, torch.Tensor),
        # which a proxy is not (the recorded call runs on the real input, and passes).
        super().__init__(autowrap_functions=(channel_shuffle, check_model_input))
        # fx patches those names in the globals of each traced forward's module; the
        # networks' check_images calls check_model_input from layers.py, which defines no
        # traced forward, so layers.py is searched as well (fx's own list for autowrap_modules).
        self._autowrap_search.append(_layers)
        self.example = example
        self.leaf_types = leaf_types
        self.leaf_names = leaf_names
        self.depth = depth
        self.levels = _module_levels(root)
        self.failed_in: str | None = None  # innermost module whose forward raised while tracing
        self._evaluating = False
        self._placeholders = 0

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        if qualified_name in self.leaf_names or isinstance(m, self.leaf_types):
            return True
        if self.depth is not None and type(m) not in _CONTAINERS and self.levels.get(qualified_name, 0) >= self.depth:
            return True
        return super().is_leaf_module(m, qualified_name)

    def call_module(self, m, forward, args, kwargs):
        if self._evaluating:  # computing a value: run the module, record nothing
            return forward(*args, **kwargs)
        name = self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module records itself first
                self.failed_in = name
            raise

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._evaluating:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ValueProxy(node, self)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        proxy.node.meta["value"] = self._evaluate(kind, target, args, kwargs)
        return proxy

    def _evaluate(self, kind, target, args, kwargs):
        args, kwargs = fx.node.map_aggregate(
            (args, kwargs), lambda a: self.value_of(a) if isinstance(a, fx.Proxy) else a)
        self._evaluating = True
        try:
            if kind == "placeholder":
                self._placeholders += 1
                return self.example if self._placeholders == 1 else (args[0] if args else None)
            if kind == "get_attr":
                return operator.attrgetter(target)(self.root)
            if kind == "call_function":
                return target(*args, **kwargs)
            if kind == "call_method":
                return getattr(args[0], target)(*args[1:], **kwargs)
            return self.root.get_submodule(target)(*args, **kwargs)  # call_module
        finally:
            self._evaluating = False

    def value_of(self, proxy: fx.Proxy):
        node = proxy.node
        if "value" not in node.meta:
            raise fx.proxy.TraceError(f"no value recorded for {node.format_node()}")
        return node.meta["value"]

    def to_bool(self, obj: fx.Proxy) -> bool:
        return bool(self.value_of(obj))

    def iter(self, obj: fx.Proxy):
        return iter([obj[i] for i in range(len(self.value_of(obj)))])


def _module_levels(root: nn.Module) -> dict[str, int]:
    """Qualified name -> how many non-container modules lie on the path from the root
    (excluded) to it (included): ``depth`` counts layers and blocks, not Sequentials."""
    modules = dict(root.named_modules())
    levels = {}
    for name, m in modules.items():
        if name:
            parts = name.split(".")
            prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
            levels[name] = sum(type(modules[p]) not in _CONTAINERS for p in prefixes)
    return levels


@contextmanager
def _evaluation(module: nn.Module):
    """Eval mode and no gradients while drawing; every module's own mode comes back after,
    so drawing changes neither BatchNorm's running statistics nor the training flags."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training


def _check_arguments(module: nn.Module, input_size: Sequence[int], depth: int | None,
                     max_nodes: int) -> tuple[int, ...]:
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be an nn.Module, got {type(module).__name__}")
    if (not isinstance(input_size, Sequence) or not input_size
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_size)):
        raise ValueError(f"input_size must be the shape of one input without the batch dimension, "
                         f"positive ints such as (64, 32, 32), got {input_size!r}")
    if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 1):
        raise ValueError(f"depth must be None (expand everything) or an int >= 1, got {depth!r}")
    if not isinstance(max_nodes, int) or max_nodes < 2:
        raise ValueError(f"max_nodes must be an int >= 2, got {max_nodes!r}")
    required = [p for p in inspect.signature(module.forward).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) != 1:
        raise ValueError(f"draw_block draws modules whose forward takes one tensor; "
                         f"{type(module).__name__}.forward requires {[p.name for p in required]}")
    return tuple(input_size)


def _first_layer_hint(module: nn.Module) -> str:
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return f"; its first convolution expects {m.in_channels} input channels"
        if isinstance(m, nn.Linear):
            return f"; its first linear layer expects {m.in_features} input features"
    return ""


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _trace(module: nn.Module, x: torch.Tensor, depth: int | None,
           leaf_modules: tuple[type, ...]) -> fx.GraphModule:
    """Trace ``module``; a submodule whose forward cannot be traced becomes a leaf (one box)."""
    name = type(module).__name__
    forced: set[str] = set()
    while True:
        tracer = _ValueTracer(module, x.clone(), leaf_modules, forced, depth)
        try:
            graph = tracer.trace(module)
            return fx.GraphModule(module, graph, class_name=name)
        except Exception as err:  # any failure of the tracer, not of the module: it ran already
            culprit = tracer.failed_in
            if not culprit or culprit in forced:
                where = f"{name}.forward" if not culprit else f"{culprit} ({type(module.get_submodule(culprit)).__name__})"
                fix = ("draw its submodules one by one instead" if not culprit else
                       "pass depth=1, or leaf_modules=(*DEFAULT_LEAF_MODULES, ThatClass), to draw it as one box")
                raise ValueError(
                    f"cannot trace {where}: {type(err).__name__}: {err}. torch.fx follows tensor "
                    f"operations, and this forward does something else with its input (an isinstance "
                    f"check, a conversion to Python numbers or NumPy); {fix}") from err
            forced.add(culprit)
            warnings.warn(f"draw_block: {culprit} ({type(module.get_submodule(culprit)).__name__}) of {name} "
                          f"cannot be traced ({type(err).__name__}: {err}); it is drawn as one box",
                          stacklevel=3)


# --------------------------------------------------------------------------- labels

_ACTIVATIONS = {
    nn.ReLU: "ReLU", nn.ReLU6: "ReLU6", nn.SiLU: "SiLU", nn.Hardswish: "h-swish", nn.Hardsigmoid: "h-sigmoid",
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.GELU: "GELU", nn.ELU: "ELU", nn.PReLU: "PReLU",
    nn.Mish: "Mish", nn.Softmax: "softmax", nn.LogSoftmax: "log-softmax",
}
_FUNCTION_ACTIVATIONS = {
    "relu": "ReLU", "relu_": "ReLU", "relu6": "ReLU6", "silu": "SiLU", "hardswish": "h-swish",
    "hardsigmoid": "h-sigmoid", "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "tanh": "tanh",
    "gelu": "GELU", "elu": "ELU", "leaky_relu": "LeakyReLU", "mish": "Mish", "softmax": "softmax",
    "log_softmax": "log-softmax",
}
_BINARY = {"add": ("add", "+"), "iadd": ("add", "+"), "__add__": ("add", "+"), "__radd__": ("add", "+"),
           "add_": ("add", "+"), "mul": ("mul", "×"), "imul": ("mul", "×"), "__mul__": ("mul", "×"),
           "__rmul__": ("mul", "×"), "mul_": ("mul", "×"), "sub": ("sub", "−"), "isub": ("sub", "−"),
           "__sub__": ("sub", "−"), "truediv": ("div", "÷"), "div": ("div", "÷"), "__truediv__": ("div", "÷")}
_MERGE_CIRCLES = ("add", "mul", "sub", "div")  # drawn as a circled symbol


def _size(t: Sequence[int]) -> str:
    """A kernel or map size: ``3x3``, ``1x7``."""
    return "x".join(map(str, t))


def _setting(t: Sequence[int]) -> str:
    """A stride or dilation: ``2`` for ``(2, 2)``, ``1x2`` otherwise."""
    t = tuple(t)
    return str(t[0]) if len(set(t)) == 1 else "x".join(map(str, t))


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _conv_label(m: nn.modules.conv._ConvNd) -> str:
    k = _size(m.kernel_size)
    cin, cout, g = m.in_channels, m.out_channels, m.groups
    depthwise = g > 1 and g == cin and cout % cin == 0
    if depthwise:
        head, settings = f"depthwise {k}", [f"{cin}→{cout}"]
    else:
        kind = "ConvT" if m.transposed else "Conv"
        head, settings = f"{kind} {k}", [f"{cin}→{cout}"]
    if any(s != 1 for s in m.stride):
        settings.append(f"s{_setting(m.stride)}")
    if g > 1 and not depthwise:
        settings.append(f"g={g}")
    if any(d != 1 for d in m.dilation):
        settings.append(f"d{_setting(m.dilation)}")
    return f"{head}, " + ", ".join(settings)


def _pool_label(m: nn.Module) -> tuple[str, str]:
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 2
        is_max = isinstance(m, nn.AdaptiveMaxPool2d)
        if all(s == 1 for s in size):
            return ("gap", "global max pool") if is_max else ("gap", "GAP")
        return "pool", f"adaptive {'max' if is_max else 'avg'} pool → {_size(size)}"
    kind = "max" if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) else "avg"
    k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
    s = m.stride if isinstance(m.stride, tuple) else (m.stride,) * 2
    stride = "" if all(v == 1 for v in s) else f", s{_setting(s)}"
    return "pool", f"{kind} pool {_size(k)}{stride}"


def _channels_note(in_shape: tuple[int, ...] | None, out_shape: tuple[int, ...] | None) -> str:
    """'16→32, s2' from the shapes around a box we know nothing else about."""
    if not in_shape or not out_shape:
        return ""
    note = f"{in_shape[0]}→{out_shape[0]}"
    if len(in_shape) == 3 and len(out_shape) == 3 and out_shape[1] and in_shape[1] % out_shape[1] == 0 \
            and in_shape[1] != out_shape[1]:
        note += f", s{in_shape[1] // out_shape[1]}"
    return note


def _describe_module(m: nn.Module, in_shape, out_shape) -> tuple[str, str, str]:
    """(op, kind, label) of a call to module ``m``."""
    if isinstance(m, ConvBNAct):
        conv, rest = m[0], [_describe_module(c, None, None)[2] for c in list(m)[1:]]
        return "conv", "conv", _conv_label(conv) + ("\n" + " · ".join(rest) if rest else "")
    if isinstance(m, nn.modules.conv._ConvNd):
        return "conv", "conv", _conv_label(m)
    if isinstance(m, nn.modules.batchnorm._NormBase) and not isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return "norm", "norm", "BN"
    if isinstance(m, nn.GroupNorm):
        return "norm", "norm", f"GN, {m.num_groups} groups"
    if isinstance(m, nn.LayerNorm):
        return "norm", "norm", "LN"
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return "norm", "norm", "IN"
    if isinstance(m, nn.LocalResponseNorm):
        return "norm", "norm", "LRN"
    if isinstance(m, nn.LeakyReLU):
        return "act", "act", f"LeakyReLU {m.negative_slope:g}"
    for cls, name in _ACTIVATIONS.items():
        if type(m) is cls:
            return "act", "act", name
    if isinstance(m, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                      nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        op, label = _pool_label(m)
        return op, "pool", label
    if isinstance(m, nn.Linear):
        return "linear", "linear", f"Linear {m.in_features}→{m.out_features}"
    if isinstance(m, nn.Flatten):
        return "flatten", "reshape", "flatten"
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return "dropout", "other", f"dropout p={m.p:g}"
    if isinstance(m, SqueezeExcite):  # drawn whole only when depth stops at it
        c, r = m.fc1.in_channels, m.fc1.out_channels
        return "se", "other", f"squeeze-excite\n{c}→{r}→{c}"
    if isinstance(m, ChannelShuffle):
        return "shuffle", "reshape", f"channel shuffle g={m.groups}"
    if isinstance(m, PadShortcut):
        return "pad", "reshape", f"zero-pad shortcut\ns{m.stride}, +{m.extra_channels} channels"
    if isinstance(m, StochasticDepth):
        return "drop_path", "other", f"stochastic depth p={m.p:g}"
    if isinstance(m, nn.Upsample):
        return "upsample", "reshape", f"upsample ×{_num(m.scale_factor)}" if m.scale_factor else "upsample"
    note = _channels_note(in_shape, out_shape)
    return "module", "other", type(m).__name__ + (f"\n{note}" if note else "")


def _index_text(index) -> str:
    def one(i):
        if isinstance(i, slice):
            parts = ["" if v is None else str(v) for v in (i.start, i.stop)]
            return ":".join(parts) + (f":{i.step}" if i.step not in (None, 1) else "")
        return "..." if i is Ellipsis else str(i)
    return ", ".join(map(one, index if isinstance(index, tuple) else (index,)))


def _describe_function(node: fx.Node, n_tensor_inputs: int) -> tuple[str, str, str]:
    """(op, kind, label) of a call_function / call_method node."""
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    args, kwargs = node.args, node.kwargs  # args[0] is the tensor, for methods as well
    if name in _BINARY:
        op, sym = _BINARY[name]
        if n_tensor_inputs >= 2:
            return op, "merge", sym
        constant = next((a for a in node.args if not isinstance(a, fx.Node)), None)
        return "affine", "other", f"{sym} {_num(constant)}"
    if name in ("cat", "concat", "concatenate"):
        return "cat", "merge", "concat"
    if name == "stack":
        return "stack", "merge", "stack"
    if name in ("chunk", "split", "tensor_split", "unbind"):
        dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
        return "split", "reshape", "channel split" if dim == 1 else "split"
    if name == "channel_shuffle":
        groups = kwargs.get("groups", args[1] if len(args) > 1 else "?")
        return "shuffle", "reshape", f"channel shuffle g={groups}"
    if name in ("mean", "adaptive_avg_pool2d"):
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if name == "adaptive_avg_pool2d" and dims in (1, (1, 1)):
            return "gap", "pool", "GAP"
        if isinstance(dims, (tuple, list)) and sorted(d % 4 for d in dims) == [2, 3]:  # H and W of (B, C, H, W)
            return "gap", "pool", "GAP"
        return "mean", "pool", "mean"
    if name in ("max_pool2d", "avg_pool2d"):
        k = kwargs.get("kernel_size", args[1] if len(args) > 1 else None)
        stride = kwargs.get("stride", args[2] if len(args) > 2 else None) or k  # PyTorch's default: k
        text = name.replace("_pool2d", " pool")
        if k is not None:
            k2 = k if isinstance(k, (tuple, list)) else (k, k)
            s2 = stride if isinstance(stride, (tuple, list)) else (stride, stride)
            text += f" {_size(k2)}" + ("" if all(v == 1 for v in s2) else f", s{_setting(s2)}")
        return "pool", "pool", text
    if name in _FUNCTION_ACTIVATIONS:
        return "act", "act", _FUNCTION_ACTIVATIONS[name]
    if name == "getitem":
        return "slice", "reshape", f"slice [{_index_text(args[1])}]"
    if name in ("flatten", "view", "reshape", "permute", "transpose", "unsqueeze", "squeeze"):
        return ("flatten" if name == "flatten" else "reshape"), "reshape", name
    if name == "pad":
        value = kwargs.get("value", args[3] if len(args) > 3 else 0)
        return "pad", "reshape", "zero-pad" if not value else f"pad {_num(value)}"
    if name == "interpolate":
        return "upsample", "reshape", "upsample"
    if name == "dropout":
        return "dropout", "other", "dropout"
    if name == "linear":
        return "linear", "linear", "linear"
    if name in ("conv2d", "conv1d", "conv3d"):
        return "conv", "conv", "conv"
    if name == "apply_involution":  # cnnlearn.models.involution: x and the per-pixel kernels
        k = kwargs.get("kernel_size", args[2] if len(args) > 2 else "?")
        return "involution", "conv", f"involution {k}×{k}"
    return "function", "other", name


# --------------------------------------------------------------------------- fx graph -> BlockGraph

_PASSTHROUGH_METHODS = ("contiguous",)


def _meta_shape(meta) -> tuple[int, ...] | None:
    return tuple(meta.shape[1:]) if isinstance(meta, TensorMetadata) else None


def _shape_label(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    """The nodes ``node`` reads, in argument order (lists such as ``cat``'s flattened), once each."""
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return list(dict.fromkeys(found))


def _to_block_graph(gm: fx.GraphModule, title: str) -> BlockGraph:
    graph_nodes = list(gm.graph.nodes)
    output = graph_nodes[-1]
    # Only what the output depends on: shape arithmetic such as `x.ndim != 4` leaves dead nodes.
    needed, stack = set(), [output]
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            stack.extend(n.all_input_nodes)
    names = {n.name for n in graph_nodes}
    nodes: list[Node] = []
    edges: list[Edge] = []
    # fx node -> (drawn node name, shape): what a reader of this fx node is connected to
    source: dict[fx.Node, tuple[str, tuple[int, ...] | None]] = {}

    tuple_meta: dict[str, list] = {}  # drawn name of a split -> the metadata of its outputs

    def connect(n: fx.Node, dst: str) -> None:
        for src, shape in (source[p] for p in _tensor_inputs(n) if p in source):
            if shape is None:  # a whole tuple (rare: cat(x.chunk(2))): label with every shape
                label = ", ".join(_shape_label(_meta_shape(m)) for m in tuple_meta[src])
                edges.append(Edge(src, dst, (), label))
            else:
                edges.append(Edge(src, dst, shape, _shape_label(shape)))

    for n in graph_nodes:
        if n not in needed:
            continue
        meta = n.meta.get("tensor_meta")
        shape = _meta_shape(meta)
        if n.op == "get_attr" and shape is not None:
            shape = tuple(meta.shape)  # a parameter has no batch dimension
        is_multi = isinstance(meta, (tuple, list)) and meta and all(isinstance(m, TensorMetadata) for m in meta)
        if n.op == "placeholder":
            name = "input" if n is graph_nodes[0] and ("input" not in names or n.name == "input") else n.name
            nodes.append(Node(name, "input", "io", "input", n.name))
            source[n] = (name, shape)
            continue
        if n.op == "output":
            connect(n, "output")
            nodes.append(Node("output", "output", "io", "output", "output"))
            continue
        if shape is None and not is_multi:
            continue  # not a tensor: shape arithmetic, drawn nowhere
        inputs = [p for p in _tensor_inputs(n) if p in source]
        # getitem of a split's tuple: an edge from the split, not a box of its own
        if n.target is operator.getitem and inputs and source[inputs[0]][1] is None:
            source[n] = (source[inputs[0]][0], shape)
            continue
        if (n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.Identity)) or \
                (n.op == "call_method" and n.target in _PASSTHROUGH_METHODS) or \
                (getattr(n.target, "__name__", None) in ("cat", "concat") and len(inputs) == 1
                 and source[inputs[0]][1] == shape):
            # identities, and DenseNet's `torch.cat([x], 1)` of a single tensor
            source[n] = source[inputs[0]] if inputs else (n.name, shape)
            continue
        if n.op == "call_module":
            in_shape = source[inputs[0]][1] if inputs else None
            op, kind, label = _describe_module(gm.get_submodule(n.target), in_shape, shape)
            target = str(n.target)
        elif n.op == "get_attr":
            op, kind, label, target = "parameter", "other", f"parameter\n{n.target}", str(n.target)
        else:
            op, kind, label = _describe_function(n, len(inputs))
            target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
        connect(n, n.name)
        nodes.append(Node(n.name, op, kind, label, target))
        source[n] = (n.name, None if is_multi else shape)
        if is_multi:
            tuple_meta[n.name] = list(meta)
    return BlockGraph(tuple(nodes), tuple(edges), title)


def block_graph(module: nn.Module, input_size: Sequence[int], *, depth: int | None = None,
                leaf_modules: Sequence[type[nn.Module]] = DEFAULT_LEAF_MODULES,
                max_nodes: int = 150, title: str | None = None) -> BlockGraph:
    """The diagram of ``module`` as data: its layers, merges and the shape on every edge.

    The module is traced with ``torch.fx`` and run once on a random input of shape
    ``(1, *input_size)`` in eval mode, without gradients (BatchNorm statistics and the
    training flags are left as they were). The traced graph must reproduce the module's
    output on that input, so the drawing shows what the code computes.

    Args:
        module: the block or network, e.g. ``BasicBlock(64, 128, 2, make_shortcut("B", 64, 128, 2))``.
        input_size: the shape of one input without the batch dimension, e.g. ``(64, 32, 32)``.
        depth: ``None`` draws every layer; ``1`` draws each child layer or block of the
            module as one box (``nn.Sequential`` containers do not count as a level), ``2``
            goes one level deeper, and so on. ``depth=1`` draws a network as its blocks.
        leaf_modules: module classes drawn as one box each (not traced into);
            ``()`` draws a ``ConvBNAct`` as its three layers.
        max_nodes: refuse graphs with more nodes than this (a ResNet-20 at full detail
            has 71), which would be too tall to read.
        title: the figure's title; by default the module's class name.

    Returns:
        A :class:`BlockGraph`.

    Raises:
        ValueError: ``input_size`` does not fit the module, an argument is invalid, the
            module's forward cannot be traced, or the graph has more than ``max_nodes`` nodes.
    """
    size = _check_arguments(module, input_size, depth, max_nodes)
    name = type(module).__name__
    param = next(module.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else ("cpu", torch.float32)
    # A fixed random input (not zeros, which would make every ReLU branch look alike), drawn
    # from a private generator so that drawing leaves the global random state alone.
    x = torch.randn((1, *size), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    leaves = tuple(leaf_modules)
    with _evaluation(module):
        try:
            expected = module(x.clone())
        except Exception as err:
            raise ValueError(
                f"input_size={tuple(input_size)} does not fit {name}: running it on a tensor of shape "
                f"{tuple(x.shape)} raised {type(err).__name__}: {err}. Pass the shape of one input "
                f"without the batch dimension{_first_layer_hint(module)}") from err
        gm = _trace(module, x, depth, leaves)
        ShapeProp(gm).propagate(x.clone())
        if not _same(gm(x.clone()), expected):
            raise RuntimeError(f"the traced graph of {name} computes something else than its forward; "
                               f"please report this, and draw it with depth=1 meanwhile")
    graph = _to_block_graph(gm, title if title is not None else name)
    if len(graph.nodes) > max_nodes:
        raise ValueError(f"{name} has {len(graph.nodes)} nodes at this level of detail, more than "
                         f"max_nodes={max_nodes}: pass depth=1 to draw each block as one box, "
                         f"or a larger max_nodes")
    return graph


# --------------------------------------------------------------------------- layout

# Sizes in inches (the figure is drawn at 1 data unit = 1 inch) and points.
_FONT, _EDGE_FONT = 8.5, 7.0
_LINE_H = _FONT * 1.3 / 72
_PAD_W, _PAD_H, _MIN_W = 0.22, 0.14, 0.75
_RADIUS = 0.13  # merge circles
_GAP = 0.44  # between rows: room for an arrow and its shape label
_BEND = 0.12  # where an elbow turns, from the box it leaves or enters
_SEP = 0.3  # between columns
_LABEL_DX = 0.05  # shape labels sit this far right of their line
_MARGIN = 0.2

_COLOURS = {  # kind -> (face, edge)
    "conv": ("#d6e6f7", "#2b6cb0"), "norm": ("#fdf0c4", "#b7791f"), "act": ("#d9f0d9", "#2f855a"),
    "pool": ("#e8dcf7", "#6b46c1"), "linear": ("#fcdcd7", "#c53030"), "merge": ("#f2f2f2", "#333333"),
    "reshape": ("#d5efef", "#2c7a7b"), "io": ("#ffffff", "#8a8a8a"), "other": ("#ececec", "#666666"),
}


@functools.lru_cache(maxsize=1024)
def _text_width(text: str, size: float) -> float:
    """Width in inches of one line of text in the default font."""
    if not text:
        return 0.0
    return TextPath((0, 0), text, size=size, prop=FontProperties()).get_extents().width / 72


@dataclass(frozen=True)
class _Box:
    x: float  # centre
    y: float
    w: float
    h: float
    circle: bool
    anchor: float  # x of its column, where straight edges attach (the centre unless widened)


@dataclass(frozen=True)
class _Route:
    edge: Edge
    points: tuple[tuple[float, float], ...]
    label_at: tuple[float, float]  # left end of the shape label, vertically centred


def _is_circle(node: Node, n_inputs: int) -> bool:
    return node.op in _MERGE_CIRCLES and node.kind == "merge" and n_inputs >= 2


def _layout(graph: BlockGraph) -> tuple[dict[str, _Box], list[_Route]]:
    """Boxes and edge routes of ``graph``, in inches, y upwards (the input at the top, y=0).

    Layers: each node sits on the layer of its longest path from a source. Columns: the
    longest path from the input to the output is column 0; walking it upwards from the
    output, every other input of a node starts a branch (followed upwards through its own
    longest inputs until it reaches a node already placed), placed in the nearest column
    that is free over the branch's layers, left of its parent when its argument comes
    before the main one, right otherwise. An edge that skips layers becomes a chain of
    invisible points, so a shortcut gets a column (a lane) of its own.
    """
    names = [n.name for n in graph.nodes]
    node = {n.name: n for n in graph.nodes}
    ins = {name: graph.inputs(name) for name in names}
    outs = {name: graph.outputs(name) for name in names}
    layer: dict[str, int] = {}
    for name in names:  # nodes are in execution order, a topological order
        layer[name] = max((layer[e.src] + 1 for e in ins[name]), default=0)
    for name in names:  # a parameter sits just above its first reader, not at the top
        if not ins[name] and name != names[0] and outs[name]:
            layer[name] = max(0, min(layer[e.dst] for e in outs[name]) - 1)

    # The main input of a node: the first one on a longest path from the input (a
    # parameter pulled down next to its reader may sit on the same layer, but is no path).
    from_input = {names[0]}
    for name in names:
        if any(e.src in from_input for e in ins[name]):
            from_input.add(name)
    heavy: dict[str, int | None] = {}  # index in ins[name], None for a source
    for name in names:
        candidates = [i for i, e in enumerate(ins[name]) if layer[e.src] == layer[name] - 1]
        heavy[name] = next((i for i in candidates if ins[name][i].src in from_input),
                           candidates[0] if candidates else None)

    # Items are node names or ("~", edge index, layer) points of an edge skipping layers.
    edge_index = {id(e): k for k, e in enumerate(graph.edges)}

    def first_item(e: Edge):
        span = layer[e.dst] - layer[e.src]
        return ("~", edge_index[id(e)], layer[e.dst] - 1) if span > 1 else e.src

    def up(item):
        if isinstance(item, tuple):
            e = graph.edges[item[1]]
            return ("~", item[1], item[2] - 1) if item[2] - 1 > layer[e.src] else e.src
        h = heavy[item]
        return None if h is None else ins[item][h].src

    def item_layer(item) -> int:
        return item[2] if isinstance(item, tuple) else layer[item]

    column: dict = {}
    spans: dict[int, list[tuple[int, int]]] = {}

    def chain_from(item) -> list:
        chain = []
        while item is not None and item not in column:
            chain.append(item)
            item = up(item)
        return chain

    def place(chain: list, col: int) -> None:
        for item in chain:
            column[item] = col
        lays = [item_layer(i) for i in chain]
        spans.setdefault(col, []).append((min(lays), max(lays)))

    def free(col: int, top: int, bottom: int) -> bool:
        # one empty layer between two branches in a column, so they never look connected
        return all(b < top - 1 or a > bottom + 1 for a, b in spans.get(col, []))

    output = names[-1]
    spine = chain_from(output)
    place(spine, 0)
    # Merges from the top down: a branch nested inside another's span is placed first,
    # nearer its parent column, so the two never cross.
    queue = [(item_layer(i), k, i) for k, i in enumerate(spine)]
    heapq.heapify(queue)
    counter = len(queue)
    while queue:
        _, _, item = heapq.heappop(queue)
        if isinstance(item, tuple) or heavy[item] is None:
            continue
        h, parent = heavy[item], column[item]
        others = [i for i in range(len(ins[item])) if i != h]
        # nearest branches first: right ones in argument order, left ones in reverse
        for i in [i for i in others if i > h] + [i for i in reversed(others) if i < h]:
            chain = chain_from(first_item(ins[item][i]))
            if not chain:
                continue  # a direct edge between two placed nodes
            side = 1 if i > h else -1
            step = side if parent == 0 else (1 if parent > 0 else -1)  # branches of branches go outward
            lays = [item_layer(c) for c in chain]
            col = parent + step
            while not free(col, min(lays), max(lays)):
                col += step
            place(chain, col)
            for c in chain:
                heapq.heappush(queue, (item_layer(c), counter, c))
                counter += 1
    for name in names:  # sources that reach the output only through a placed node
        if name not in column:
            place(chain_from(name), max(spans) + 1)

    # sizes
    circle = {name: _is_circle(node[name], len(ins[name])) for name in names}
    size: dict[str, tuple[float, float]] = {}
    for name in names:
        n = node[name]
        if circle[name]:
            size[name] = (2 * _RADIUS, 2 * _RADIUS)
        else:
            lines = n.label.split("\n")
            w = max(_MIN_W, max(_text_width(t, _FONT) for t in lines) + 2 * _PAD_W)
            size[name] = (w, len(lines) * _LINE_H + 2 * _PAD_H)
    label_w = {id(e): _text_width(e.label, _EDGE_FONT) for e in graph.edges}

    # one width for the boxes of a column, as in the papers' figures
    boxed = [name for name in names if not circle[name] and node[name].kind != "io"]
    col_w: dict[int, float] = {}
    for name in boxed:
        col_w[column[name]] = max(col_w.get(column[name], 0.0), size[name][0])
    for name in boxed:
        size[name] = (col_w[column[name]], size[name][1])

    # rows
    n_layers = max(layer.values()) + 1
    row_h = [0.0] * n_layers
    for name in names:
        row_h[layer[name]] = max(row_h[layer[name]], size[name][1])
    y_mid, y = [], 0.0
    for h in row_h:
        y_mid.append(y - h / 2)
        y -= h + _GAP

    # columns: widths from the boxes and the shape labels right of the lines in them
    cols = sorted(spans)
    left = {c: 0.05 for c in cols}
    right = {c: 0.05 for c in cols}
    for item, c in column.items():
        if not isinstance(item, tuple):
            left[c] = max(left[c], size[item][0] / 2)
            right[c] = max(right[c], size[item][0] / 2)

    def lane(e: Edge) -> int:
        """The column an edge runs down in: its own for a skip, else the fork's target's
        or the merge's source's (so the elbow sits at the node with several edges)."""
        if layer[e.dst] - layer[e.src] > 1:
            return column[first_item(e)]
        return column[e.src] if len(ins[e.dst]) > 1 else column[e.dst]

    for e in graph.edges:  # shape labels sit right of the line, in the lane's column
        c = lane(e)
        right[c] = max(right[c], _LABEL_DX + label_w[id(e)] + 0.05)
    x_of = {0: 0.0}
    for c in (c for c in cols if c > 0):
        x_of[c] = x_of[c - 1] + right[c - 1] + _SEP + left[c]
    for c in (c for c in reversed(cols) if c < 0):
        x_of[c] = x_of[c + 1] - left[c + 1] - _SEP - right[c]

    boxes = {name: _Box(x_of[column[name]], y_mid[layer[name]], *size[name], circle[name], x_of[column[name]])
             for name in names}
    # A concatenation spans the branches it joins, a split the branches it feeds (as in
    # the papers' figures), so that each branch meets it straight, unless that would
    # cover another box or a shortcut's lane in its row.
    row_items: dict[int, list] = {}
    for item in column:
        row_items.setdefault(item_layer(item), []).append(item)
    for name in names:
        if node[name].op in ("cat", "stack"):
            xs = [x_of[lane(e)] for e in ins[name]]
        elif node[name].op == "split":
            xs = [x_of[lane(e)] for e in outs[name]]
        else:
            continue
        b = boxes[name]
        lo, hi = min(min(xs) - 0.2, b.x - b.w / 2), max(max(xs) + 0.2, b.x + b.w / 2)
        others = [(boxes[i].x - boxes[i].w / 2, boxes[i].x + boxes[i].w / 2) if isinstance(i, str)
                  else (x_of[column[i]],) * 2 for i in row_items[layer[name]] if i != name]
        if all(b1 < lo - _SEP / 2 or a1 > hi + _SEP / 2 for a1, b1 in others):
            boxes[name] = dataclasses.replace(b, x=(lo + hi) / 2, w=hi - lo)
    return boxes, [_route(e, boxes, x_of[lane(e)], node[e.src].op == "split") for e in graph.edges]


def _route(e: Edge, boxes: dict[str, _Box], lane: float, split: bool) -> _Route:
    """The polyline of one edge: straight down, or an elbow into another column."""
    s, t = boxes[e.src], boxes[e.dst]
    bottom, top = s.y - s.h / 2, t.y + t.h / 2

    def clip(x: float, box: _Box) -> float:
        inner = max(0.0, box.w / 2 - 0.12) if not box.circle else 0.0
        return min(max(x, box.x - inner), box.x + inner)

    # A split's outputs are different tensors: each leaves from its own point of the box.
    # Any other node's edges carry one tensor: they branch off one line just below it.
    start = clip(lane, s) if split else s.anchor
    pts = [(start, bottom)]
    if start != lane:  # into the lane, sideways just below the source
        pts += [(start, bottom - _BEND), (lane, bottom - _BEND)]
    label_at = None
    if t.circle and lane != t.x:  # into a merge circle from the side
        pts += [(lane, t.y), (t.x + math.copysign(t.w / 2, lane - t.x), t.y)]
        label_at = (lane + _LABEL_DX, (pts[-3][1] + t.y) / 2)
    else:
        end = clip(lane, t)
        if end != lane:  # a bus just above a merging box
            pts += [(lane, top + _BEND), (end, top + _BEND)]
            label_at = (lane + _LABEL_DX, (pts[-3][1] + top + _BEND) / 2)
        pts.append((end, top))
        if label_at is None:
            # below the height where a fork's branch turns off this line
            label_at = (end + _LABEL_DX, (min(pts[-2][1], bottom - _BEND) + top) / 2)
    return _Route(e, tuple(pts), label_at)


# --------------------------------------------------------------------------- drawing


def draw_block(module: nn.Module, input_size: Sequence[int], *, ax: plt.Axes | None = None,
               title: str | None = None, depth: int | None = None,
               leaf_modules: Sequence[type[nn.Module]] = DEFAULT_LEAF_MODULES,
               max_nodes: int = 150) -> plt.Figure:
    """Draw a block or a small network from the module itself.

    Boxes are coloured by kind (convolution, normalisation, activation, pooling, linear,
    merge, reshaping), labelled with the layer's settings, and joined by arrows labelled
    with the shape of the tensor they carry (without the batch dimension). Parallel
    branches stand side by side; ⊕ is an addition, ⊗ an elementwise product.

    Args:
        module: the block or network to draw.
        input_size: the shape of one input without the batch dimension, e.g. ``(64, 32, 32)``.
        ax: draw into these axes (their size is then the caller's choice); by default a
            new figure sized to the graph, one data unit per inch.
        title: the title; by default the module's class name.
        depth: see :func:`block_graph`; ``depth=1`` draws a network as its blocks.
        leaf_modules: module classes drawn as one box each, see :func:`block_graph`.
        max_nodes: refuse larger graphs, see :func:`block_graph`.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ValueError: see :func:`block_graph`.
    """
    graph = block_graph(module, input_size, depth=depth, leaf_modules=leaf_modules,
                        max_nodes=max_nodes, title=title)
    boxes, routes = _layout(graph)
    xs = [b.x - b.w / 2 for b in boxes.values()] + [r.label_at[0] for r in routes]
    x_max = max([b.x + b.w / 2 for b in boxes.values()]
                + [r.label_at[0] + _text_width(r.edge.label, _EDGE_FONT) for r in routes])
    x0, x1 = min(xs) - _MARGIN, x_max + _MARGIN
    y0, y1 = min(b.y - b.h / 2 for b in boxes.values()) - _MARGIN, _MARGIN
    if ax is None:
        title_h = 0.45
        width = max(x1 - x0, _text_width(graph.title, 11) + 2 * _MARGIN)
        height = y1 - y0 + title_h
        fig = plt.figure(figsize=(width, height))
        ax = fig.add_axes(((width - (x1 - x0)) / 2 / width, 0, (x1 - x0) / width, (y1 - y0) / height))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(graph.title, fontsize=11, fontweight="bold")
    for r in routes:
        _draw_route(ax, r)
    for n in graph.nodes:
        _draw_node(ax, n, boxes[n.name])
    return ax.figure


def _draw_route(ax: plt.Axes, r: _Route) -> None:
    colour = "#4a4a4a"
    pts = r.points
    if len(pts) > 2:
        ax.plot([p[0] for p in pts[:-1]], [p[1] for p in pts[:-1]], color=colour, lw=1.0,
                solid_joinstyle="miter", zorder=1)
    ax.annotate("", xy=pts[-1], xytext=pts[-2], zorder=1,
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.0, mutation_scale=9,
                                shrinkA=0, shrinkB=0))
    ax.text(*r.label_at, r.edge.label, fontsize=_EDGE_FONT, color="#555555", ha="left", va="center",
            zorder=3)


def _draw_node(ax: plt.Axes, n: Node, b: _Box) -> None:
    face, edge = _COLOURS.get(n.kind, _COLOURS["other"])
    if b.circle:
        ax.add_patch(Circle((b.x, b.y), b.w / 2, facecolor="white", edgecolor="#222222", lw=1.2, zorder=2))
        r = 0.6 * b.w / 2
        if n.op == "add":
            ax.plot([b.x - r, b.x + r], [b.y, b.y], color="#222222", lw=1.2, zorder=3)
            ax.plot([b.x, b.x], [b.y - r, b.y + r], color="#222222", lw=1.2, zorder=3)
        elif n.op == "mul":
            d = r / math.sqrt(2)
            ax.plot([b.x - d, b.x + d], [b.y - d, b.y + d], color="#222222", lw=1.2, zorder=3)
            ax.plot([b.x - d, b.x + d], [b.y + d, b.y - d], color="#222222", lw=1.2, zorder=3)
        else:
            ax.text(b.x, b.y, n.label, ha="center", va="center", fontsize=_FONT + 1, zorder=3)
        return
    style = "round,pad=0,rounding_size=0.06"
    ax.add_patch(FancyBboxPatch((b.x - b.w / 2, b.y - b.h / 2), b.w, b.h, boxstyle=style,
                                facecolor=face, edgecolor=edge, lw=1.0, zorder=2,
                                linestyle="--" if n.kind == "io" else "-"))
    ax.text(b.x, b.y, n.label, ha="center", va="center", fontsize=_FONT, zorder=3, linespacing=1.3,
            color="#333333" if n.kind != "io" else "#666666")
