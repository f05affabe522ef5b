"""gksparse: group k-sparse temporal convolutional networks for video (PyTorch)."""

from .checkpoint import load_checkpoint, save_checkpoint
from .encoder import TrainedEncoder, load_encoder
from .models import METHODS, Method, ModelConfig, VideoModel, build_model
from .recurrence import ConvMinimalRNN2d
from .sparsity import group_ksparse, group_norms, ksparse

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
