"""gksparse: group k-sparse temporal convolutional networks for video (PyTorch)."""

from .model.checkpoint import load_checkpoint, save_checkpoint
from .model.methods import METHODS, Method
from .model.recurrence import ConvMinimalRNN2d
from .model.video import ModelConfig, VideoModel, build_model
from .ops.sparsity import group_ksparse, group_norms, ksparse
from .protocol.trained import TrainedEncoder, load_encoder

__all__ = [
    "METHODS",
    "ConvMinimalRNN2d",
    "Method",
    "ModelConfig",
    "TrainedEncoder",
    "VideoModel",
    "build_model",
    "group_ksparse",
    "group_norms",
    "ksparse",
    "load_checkpoint",
    "load_encoder",
    "save_checkpoint",
]

__version__ = "0.1.0"
