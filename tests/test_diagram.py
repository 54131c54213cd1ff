"""Block diagrams drawn from the modules (cnnlearn.diagram): the graph as data, the layout, the figure."""
import warnings
from functools import partial

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

import cnnlearn  # noqa: E402
from cnnlearn.diagram import _layout, block_graph, draw_block  # noqa: E402
from cnnlearn.models.layers import DepthwiseSeparableConv, SqueezeExcite  # noqa: E402
from cnnlearn.models.mobilenet import InvertedResidual  # noqa: E402
from cnnlearn.models.resnet import BasicBlock, Bottleneck, PreActBasicBlock, make_shortcut, resnet20  # noqa: E402
from cnnlearn.models.shufflenet import ShuffleV1Unit, ShuffleV2Unit  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _upstream(graph, edge):
    """Names of the nodes of the branch that ends in ``edge``: back to the node where the
    branch forks off (excluded) or to a node with several inputs (included)."""
    names, name = [], edge.src
    while len(graph.outputs(name)) == 1 and name != "input":
        names.append(name)
        ins = graph.inputs(name)
        if len(ins) != 1:
            break
        name = ins[0].src
    return names


# --------------------------------------------------------------------------- the graph as data


def test_basic_block_with_projection_has_one_add_and_a_conv_on_the_shortcut():
    block = BasicBlock(64, 128, 2, make_shortcut("B", 64, 128, 2))
    g = block_graph(block, (64, 32, 32))
    (add,) = g.find("add")
    main, shortcut = g.inputs(add.name)  # `out + self.shortcut(x)`: argument order
    shortcut_ops = [(g.node(n).op, g.node(n).target) for n in _upstream(g, shortcut)]
    assert ("conv", "shortcut.conv") in shortcut_ops and ("norm", "shortcut.bn") in shortcut_ops
    assert {g.node(n).target for n in _upstream(g, main)} >= {"conv1", "conv2"}
    assert g.node("shortcut_conv").label == "Conv 1x1, 64→128, s2"
    assert g.node("conv1").label == "Conv 3x3, 64→128, s2"
    assert len(g.find("conv")) == 3


def test_identity_shortcut_is_an_edge_from_the_input_not_a_box():
    g = block_graph(BasicBlock(64, 64), (64, 8, 8))
    (add,) = g.find("add")
    assert [e.src for e in g.inputs(add.name)][1] == "input"
    assert len(g.find("conv")) == 2  # no projection drawn; nn.Identity is left out


def test_option_a_shortcut_is_one_zero_pad_box():
    g = block_graph(BasicBlock(16, 32, 2, make_shortcut("A", 16, 32, 2)), (16, 32, 32))
    (pad,) = g.find("pad")
    assert pad.label == "zero-pad shortcut\ns2, +16 channels"
    assert [e.src for e in g.inputs(g.find("add")[0].name)] == ["bn2", pad.name]


@pytest.mark.parametrize("stride, adds", [(1, 1), (2, 0)])
def test_inverted_residual_adds_its_input_only_at_stride_1(stride, adds):
    g = block_graph(InvertedResidual(24, 24, 144, 3, stride), (24, 16, 16))
    assert len(g.find("add")) == adds
    assert g.node("depthwise").label == f"depthwise 3x3, 144→144{', s2' if stride == 2 else ''}\nBN · ReLU6"
    assert g.node("project").label == "Conv 1x1, 144→24\nBN"  # the linear bottleneck: no activation
    if adds:
        assert [e.src for e in g.inputs(g.find("add")[0].name)] == ["input", "project"]


def test_shufflenet_v2_unit_splits_concatenates_and_shuffles():
    g = block_graph(ShuffleV2Unit(116, 116, 1), (116, 14, 14))
    (split,) = g.find("split")
    (cat,) = g.find("cat")
    (shuffle,) = g.find("shuffle")
    assert split.label == "channel split" and shuffle.label == "channel shuffle g=2"
    left, right = g.inputs(cat.name)
    assert left.src == split.name and left.shape == (58, 14, 14)  # the identity half: straight to concat
    assert len(_upstream(g, right)) == 3  # 1x1, depthwise 3x3, 1x1 on the other half
    assert [e.dst for e in g.outputs(cat.name)] == [shuffle.name]


def test_shufflenet_v2_downsampling_unit_has_two_branches_and_no_split():
    g = block_graph(ShuffleV2Unit(116, 232, 2), (116, 14, 14))
    assert not g.find("split")
    (cat,) = g.find("cat")
    left, right = g.inputs(cat.name)
    assert len(_upstream(g, left)) == 2 and len(_upstream(g, right)) == 3
    assert g.node("branch1_0").label.startswith("depthwise 3x3, 116→116, s2")


def test_shufflenet_v1_unit_shuffles_between_grouped_convolutions():
    g = block_graph(ShuffleV1Unit(240, 480, 2, groups=3), (240, 14, 14))
    assert [n.label for n in g.find("shuffle")] == ["channel shuffle g=3"]
    assert g.node("branch_compress").label == "Conv 1x1, 240→120, g=3\nBN · ReLU"
    (cat,) = g.find("cat")
    assert [g.node(e.src).label for e in g.inputs(cat.name)][0] == "avg pool 3x3, s2"


def test_squeeze_excite_is_pool_two_layers_gate_and_a_product():
    g = block_graph(SqueezeExcite(64, 16), (64, 8, 8))
    assert [n.label for n in g.nodes] == [
        "input", "GAP", "Conv 1x1, 64→16", "ReLU", "Conv 1x1, 16→64", "sigmoid", "×", "output"]
    (mul,) = g.find("mul")
    assert [(e.src, e.shape) for e in g.inputs(mul.name)] == [("input", (64, 8, 8)), ("gate", (64, 1, 1))]


def test_edge_shapes_are_those_of_a_real_forward():
    torch.manual_seed(0)
    blocks = [
        (BasicBlock(16, 32, 2, make_shortcut("B", 16, 32, 2)), (16, 12, 12)),
        (Bottleneck(64, 128, 2, make_shortcut("B", 64, 128, 2)), (64, 9, 9)),
        (ShuffleV2Unit(24, 48, 2), (24, 10, 10)),
        (BasicBlock(16, 16, attn_layer=partial(SqueezeExcite.from_reduction, reduction=4)), (16, 6, 6)),
    ]
    for block, size in blocks:
        shapes = {}

        def record(name):
            def hook(module, inputs, output):
                shapes.setdefault(name, []).append(tuple(output.shape[1:]))
            return hook

        hooks = [m.register_forward_hook(record(name)) for name, m in block.named_modules() if name]
        y = block.eval()(torch.randn(1, *size))
        for h in hooks:
            h.remove()
        g = block_graph(block, size)
        checked = 0
        for e in g.edges:
            target = g.node(e.src).target
            # modules called once (a block's `act` runs twice, at two shapes)
            if g.node(e.src).op not in ("input", "add", "mul", "cat", "split") and len(shapes.get(target, ())) == 1:
                assert e.shape == shapes[target][0], (type(block).__name__, e)
                assert e.label == "×".join(map(str, shapes[target][0]))
                checked += 1
        assert checked >= 5
        assert [e.shape for e in g.inputs("output")] == [tuple(y.shape[1:])]
        assert [e.shape for e in g.outputs("input")][0] == size


def test_python_control_flow_on_shapes_follows_the_input():
    class PoolIfLarge(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            if x.shape[-1] > 8:  # fx alone cannot trace this; the value-tracer takes this input's branch
                x = self.pool(x)
            return torch.relu(x)

    assert [n.op for n in block_graph(PoolIfLarge(), (4, 16, 16)).nodes] == ["input", "pool", "act", "output"]
    assert [n.op for n in block_graph(PoolIfLarge(), (4, 8, 8)).nodes] == ["input", "act", "output"]
    # and a whole network, whose forward checks its input's shape first
    g = block_graph(resnet20(), (3, 32, 32), depth=1)
    assert [n.label for n in g.nodes][2:4] == ["BasicBlock\n16→16", "BasicBlock\n16→16"]
    assert g.node("stages_stage2_0").label == "BasicBlock\n16→32, s2"
    assert [n.op for n in g.nodes][-4:] == ["gap", "flatten", "linear", "output"]


class _NeedsRealTensor(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        if not isinstance(x, torch.Tensor):  # False for fx's proxies: untraceable
            raise TypeError("needs a real tensor")
        return self.conv(x)


def test_untraceable_submodule_is_drawn_as_one_box_with_a_warning():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _NeedsRealTensor()

        def forward(self, x):
            return self.inner(x) + x

    with pytest.warns(UserWarning, match=r"inner \(_NeedsRealTensor\)"):
        g = block_graph(Outer(), (4, 8, 8))
    assert [(n.op, n.label) for n in g.nodes][1:3] == [("module", "_NeedsRealTensor\n4→4"), ("add", "+")]


def test_untraceable_module_raises_a_clear_error():
    with pytest.raises(ValueError, match="cannot trace _NeedsRealTensor.forward.*needs a real tensor"):
        block_graph(_NeedsRealTensor(), (4, 8, 8))


@pytest.mark.parametrize("size, match", [
    ((3, 32, 32), r"input_size=\(3, 32, 32\) does not fit BasicBlock.*expects 64 input channels"),
    ((1, 64, 32, 32), r"does not fit BasicBlock"),
    ((64, 0, 32), r"input_size must be .*positive ints"),
    ("64x32x32", r"input_size must be"),
    ((64.0, 32, 32), r"input_size must be"),
])
def test_bad_input_size_is_a_clear_value_error(size, match):
    with pytest.raises(ValueError, match=match):
        block_graph(BasicBlock(64, 64), size)


def test_max_nodes_and_depth():
    model = resnet20()
    with pytest.raises(ValueError, match=r"ResNet has \d+ nodes .* max_nodes=40: pass depth=1"):
        block_graph(model, (3, 32, 32), max_nodes=40)
    full = block_graph(model, (3, 32, 32))
    assert 60 < len(full.nodes) <= 150 and len(full.find("add")) == 9
    assert len(block_graph(model, (3, 32, 32), depth=1).nodes) == 15
    with pytest.raises(ValueError, match="depth must be"):
        block_graph(model, (3, 32, 32), depth=0)


def test_depth_1_draws_the_children_of_a_block_as_boxes():
    block = BasicBlock(64, 64, attn_layer=partial(SqueezeExcite.from_reduction, reduction=16))
    assert len(block_graph(block, (64, 8, 8)).find("mul")) == 1  # the SE unit's product
    g = block_graph(block, (64, 8, 8), depth=1)
    assert not g.find("mul") and [n.label for n in g.find("se")] == ["squeeze-excite\n64→4→64"]


def test_leaf_modules_choose_the_granularity():
    block = DepthwiseSeparableConv(32, 64, 3, 2)
    assert [n.op for n in block_graph(block, (32, 16, 16)).nodes] == ["input", "conv", "conv", "output"]
    fine = block_graph(block, (32, 16, 16), leaf_modules=())
    assert [n.label for n in fine.nodes][1:-1] == [
        "depthwise 3x3, 32→32, s2", "BN", "ReLU", "Conv 1x1, 32→64", "BN", "ReLU"]


def test_drawing_changes_neither_the_module_nor_the_random_state():
    block = PreActBasicBlock(16, 32, 2, make_shortcut("B", 16, 32, 2), preact_shortcut=True)
    block.train()
    block.bn2.eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in block.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    draw_block(block, (16, 8, 8))
    assert torch.equal(torch.rand(3), expected_next)
    assert all(torch.equal(v, before[k]) for k, v in block.state_dict().items())  # BN statistics untouched
    assert block.training and block.bn1.training and not block.bn2.training


# --------------------------------------------------------------------------- layout and figure


def _overlap(a, b, gap=0.05):
    return (abs(a.x - b.x) < (a.w + b.w) / 2 + gap) and (abs(a.y - b.y) < (a.h + b.h) / 2 + gap)


@pytest.mark.parametrize("block, size", [
    (BasicBlock(64, 128, 2, make_shortcut("B", 64, 128, 2)), (64, 16, 16)),
    (BasicBlock(64, 64, attn_layer=partial(SqueezeExcite.from_reduction, reduction=16)), (64, 8, 8)),
    (ShuffleV2Unit(116, 232, 2), (116, 14, 14)),
    (ShuffleV1Unit(240, 480, 2, groups=3), (240, 14, 14)),
    (InvertedResidual(24, 24, 144, 3, 1), (24, 16, 16)),
])
def test_layout_has_no_overlapping_boxes_and_edges_end_on_their_targets(block, size):
    g = block_graph(block, size)
    boxes, routes = _layout(g)
    names = list(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not _overlap(boxes[a], boxes[b]), (a, b)
    for r in routes:
        t = boxes[r.edge.dst]
        x, y = r.points[-1]
        if t.circle:
            assert abs(((x - t.x) ** 2 + (y - t.y) ** 2) ** 0.5 - t.w / 2) < 1e-9
        else:  # on the top side of the box
            assert abs(y - (t.y + t.h / 2)) < 1e-9 and t.x - t.w / 2 < x < t.x + t.w / 2
        assert all(p[0] == q[0] or p[1] == q[1] for p, q in zip(r.points, r.points[1:]))  # right angles only


def test_layout_puts_parallel_branches_side_by_side():
    g = block_graph(ShuffleV2Unit(116, 232, 2), (116, 14, 14))
    boxes, _ = _layout(g)
    # the two branches' first convolutions: same row, different columns, in argument order
    assert boxes["branch1_0"].y == boxes["branch2_0"].y and boxes["branch1_0"].x < boxes["branch2_0"].x
    # the concatenation spans both branches, so each meets it straight from above
    cat = boxes[g.find("cat")[0].name]
    for name in ("branch1_1", "branch2_2"):
        assert cat.x - cat.w / 2 < boxes[name].x < cat.x + cat.w / 2
    # a shortcut runs beside the main path, not through it
    g = block_graph(BasicBlock(64, 64), (64, 8, 8))
    boxes, routes = _layout(g)
    (shortcut,) = [r for r in routes if r.edge.src == "input" and r.edge.dst == "add"]
    assert min(abs(p[0] - boxes["conv1"].x) for p in shortcut.points[2:-1]) > boxes["conv1"].w / 2


def test_inception_module_from_torchvision_draws_four_branches():
    from torchvision.models.inception import InceptionA

    g = block_graph(InceptionA(192, 32), (192, 35, 35))
    (cat,) = g.find("cat")
    assert [e.shape[0] for e in g.inputs(cat.name)] == [64, 64, 96, 32]
    boxes, _ = _layout(g)
    firsts = [e.dst for e in g.outputs("input")]
    assert len({round(boxes[n].x, 6) for n in firsts}) == 4  # four columns


def test_draw_block_figure_has_title_and_labels_inside_their_boxes():
    block = ShuffleV1Unit(240, 240, 1, groups=3)
    fig = cnnlearn.draw_block(block, (240, 14, 14), title="ShuffleNet v1 unit")
    ax = fig.axes[0]
    assert ax.get_title() == "ShuffleNet v1 unit"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    patches = [p.get_window_extent(renderer) for p in ax.patches if isinstance(p, FancyBboxPatch)]
    labels = {n.label for n in block_graph(block, (240, 14, 14)).nodes}
    boxed = [t for t in ax.texts if t.get_text() in labels and t.get_text() not in ("+", "×")]
    assert len(boxed) == len(patches) == 7
    for t in boxed:
        bb = t.get_window_extent(renderer)
        assert any(p.x0 <= bb.x0 and bb.x1 <= p.x1 and p.y0 <= bb.y0 and bb.y1 <= p.y1 for p in patches), t.get_text()
    # the figure grows with the graph
    small = draw_block(DepthwiseSeparableConv(32, 64), (32, 8, 8)).get_size_inches()
    tall = draw_block(Bottleneck(64, 64, 1, make_shortcut("C", 64, 64, 1)), (64, 8, 8)).get_size_inches()
    wide = draw_block(ShuffleV2Unit(24, 48, 2), (24, 8, 8)).get_size_inches()
    assert tall[1] > small[1] + 2 and wide[0] > small[0] + 1


def test_draw_block_into_given_axes():
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = draw_block(InvertedResidual(16, 16, 64), (16, 8, 8), ax=ax2)
    assert out is fig and ax2.get_title() == "InvertedResidual" and not ax1.patches and ax2.patches


def test_involution_is_one_box_reading_the_input_and_the_generated_kernels():
    from cnnlearn.models.involution import Involution

    g = block_graph(Involution(32, 3, group_channels=16), (32, 8, 8))
    (inv,) = g.find("involution")
    assert g.node(inv.name).label == "involution 3×3"
    sources = {e.src for e in g.inputs(inv.name)}
    assert "input" in sources and len(sources) == 2  # x itself and span's kernels, 2 * 3 * 3 channels
