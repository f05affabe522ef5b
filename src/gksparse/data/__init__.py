"""Datasets: official files -> float32 videos `(N, T, C, H, W)` in [0, 1] (before whitening).

`load(name)` returns a `VideoData` for one of `DATASETS`; the videos are generated once,
cached on disk under the data root and read back as memory maps. One module per dataset
(`mnistrotated`, `cifar10scanned`, `coil100`, `necanimal`) holds its generation and public
helpers; `zca` whitens, `splits` draws subsets and labeled splits, `download` fetches and
unpacks with checksums, `videocache` writes entries atomically; `videos` reads your own
folder of videos (`ownvideos`, through `videofolder`, `discovery` and `decoding`).
"""

from .containers import VideoData, Videos
from .errors import DataError, DataWarning
from .loading import DATASETS, load
from .paths import cache_root, data_root
from .splits import coil_split, random_split, subset_index
from .zca import ZCA, fit_zca

__all__ = [
    "DATASETS",
    "DataError",
    "DataWarning",
    "VideoData",
    "Videos",
    "ZCA",
    "cache_root",
    "coil_split",
    "data_root",
    "fit_zca",
    "load",
    "random_split",
    "subset_index",
]
