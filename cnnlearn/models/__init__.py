"""Every network in the book, by name.

The registry itself lives in :mod:`cnnlearn.models.registry`; the family modules import
``register_model`` from there, so no module imports the package that imports it. Importing
this package imports every family, which fills the registry.
"""
from .registry import create_model, list_models, register_model  # noqa: F401

# Importing the model modules fills the registry. Keep one import per family.
from . import alexnet  # noqa: E402,F401
from . import shufflenet  # noqa: E402,F401
from . import dcgan  # noqa: E402,F401  (not registered: generator/discriminator are no classifiers)
from . import resnet  # noqa: E402,F401
from . import mobilenet, efficientnet  # noqa: E402,F401
from . import senet  # noqa: E402,F401
from . import speedrun  # noqa: E402,F401
from . import inception  # noqa: E402,F401
from . import segmentation  # noqa: E402,F401
from . import resnext, wide_resnet, densenet, dpn, hardnet  # noqa: E402,F401  (chapter 3: beyond ResNet)
from . import res2net, resnest, sknet, involution  # noqa: E402,F401  (chapter 3: inside the block)
