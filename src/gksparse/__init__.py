"""gksparse: group k-sparse temporal convolutional networks for video (PyTorch).

The package is laid out as the pipeline (see the README's map): `data`, `ops`, `model`,
`training`, `evaluation`, `protocol`, and the commands `run`, `sweep`, `report`, `probe`,
`features`, `cache`. The names below are its public API, imported when first used (so that
`gksparse.report` reads results without importing torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "METHODS": "gksparse.model.methods",
    "Method": "gksparse.model.methods",
    "ModelConfig": "gksparse.model.video",
    "VideoModel": "gksparse.model.video",
    "build_model": "gksparse.model.video",
    "ConvMinimalRNN2d": "gksparse.model.recurrence",
    "load_checkpoint": "gksparse.model.checkpoint",
    "save_checkpoint": "gksparse.model.checkpoint",
    "group_ksparse": "gksparse.ops.sparsity",
    "group_norms": "gksparse.ops.sparsity",
    "ksparse": "gksparse.ops.sparsity",
    "TrainedEncoder": "gksparse.protocol.trained",
    "load_encoder": "gksparse.protocol.trained",
}
__all__ = sorted(_API)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'gksparse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
