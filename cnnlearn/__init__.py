"""cnnlearn: convolutional networks built from scratch, counted, verified and trained.

The public API the book's chapters use; each name is documented in its module:
``budget`` (work sizes, device), ``data`` (datasets on the device), ``train`` (fit,
evaluate), ``measure`` (parameters, MACs, formulas, latency, memory), ``viz``
(figures), ``widgets`` (explorers), ``check`` (exercise checkers), ``models`` (the
registry of every network in the book).
"""
from . import check as checks, measure, models, viz, widgets  # noqa: F401  (submodules as attributes)
from .budget import by_budget, get_budget, get_device, seed_everything, setup
from .check import check, list_exercises
from .data import DataNotFoundError, balanced_subset, load_data, load_images, sample_images
from .gan import GANConfig, GANHistory, fit_gan, interpolate, sample, to_gan_range
from .measure import (
    conv2d_macs, conv2d_output_size, conv2d_params, conv_transpose2d_macs,
    conv_transpose2d_output_size, conv_transpose2d_params, count_macs, count_params,
    latency, linear_params, peak_memory, receptive_field, summary,
)
from .models import create_model, list_models, register_model
from .stats import Verdict, verdict, verdict_paired
from .train import History, TrainConfig, evaluate, evaluate_ten_crop, fastest_precision, fit, predict, recalibrate_bn
from .viz import glue, plot_history, show_feature_maps, show_source
from .diagram import block_graph, draw_block

__version__ = "0.1.0"
