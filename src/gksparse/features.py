"""Features of your own videos from a trained encoder: one vector per video.

    python -m gksparse.features <run> <videos folder> <out.npz> [options]

The run is a run folder (`results/<dataset>/<id>`), a results folder of runs
(`results/<dataset>`: its newest completed run, so that no run id need be known) or a `.pt`
checkpoint; `--which` picks the checkpoint in the run folder (default `pretrained`).
Every video is read as the encoder was trained: its frame size, channels and whitening, and
a clip of the run's `frames` (the first clip unless `--clip center`). A video's vector is the
mean over the clip's real frames of the 2x2-max-pooled, flattened encoder maps, as the
classifier sees them. The `.npz` holds:

    features  float32 (N, D)
    names     str (N,)     video paths relative to the videos folder
    labels    int64 (N,)   class indices from class subfolders, -1 when unlabeled
    classes   str (K,)     class names in label order (empty when unlabeled)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.videofolder import ClipMode, VideoFolder
from .protocol.trained import TrainedEncoder, load_encoder
from .training.runtime import default_device

DEFAULT_FRAMES = 16  # when neither the caller nor the run's config says


def folder_for(
    encoder: TrainedEncoder,
    root: str | os.PathLike,
    *,
    frames: int | None = None,
    clip: ClipMode = "first",
    **kwargs,
) -> VideoFolder:
    """A `VideoFolder` that reads `root` as `encoder` was trained: size, channels, whitening.

    frames: clip length; default the run config's `frames`, else 16. Other keyword arguments
    (split, classes, labeled, threads) go to `VideoFolder`.
    """
    c, h, w = encoder.frame_shape
    if c not in (1, 3):
        raise ValueError(f"the encoder takes {c}-channel frames; videos give 1 (grey) or 3 (RGB).")
    frames = frames or encoder.run_config.get("frames") or DEFAULT_FRAMES
    return VideoFolder(
        root,
        frames=int(frames),
        size=(h, w),
        grayscale=c == 1,
        clip=clip,
        zca=encoder.zca,
        **kwargs,
    )


@torch.no_grad()
def extract_features(
    encoder: TrainedEncoder,
    folder: VideoFolder,
    *,
    batch_size: int = 16,
    workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """float32 `(N, D)`: `encoder.features` of every clip of `folder`, in the folder's order."""
    device = default_device(device)
    encoder.to(device).eval()
    out = []
    loader = folder.loader(batch_size, workers=workers)
    for batch in tqdm(loader, desc="features", disable=not progress, leave=False):
        video = batch["video"].to(device)
        mask = batch["mask"].to(device)
        out.append(encoder.features(video, mask).float().cpu().numpy())
    return np.concatenate(out)


def save_features(path: str | os.PathLike, features: np.ndarray, folder: VideoFolder) -> Path:
    """Write `features` `(N, D)` with the folder's names, labels and classes to an `.npz`."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")  # what np.savez would do silently
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = folder.labels if folder.labels is not None else np.full(len(folder), -1, np.int64)
    np.savez(
        path,
        features=features.astype(np.float32),
        names=np.array(folder.names, dtype=str),
        labels=labels,
        classes=np.array(folder.classes or [], dtype=str),
    )
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    """The command line; returns the written file (errors propagate: see `cli`)."""
    parser = argparse.ArgumentParser(
        prog="python -m gksparse.features",
        description="Write one feature vector per video of a folder, from a trained encoder.",
    )
    parser.add_argument(
        "run",
        help="a run folder (results/<dataset>/<id>), a results folder of runs "
        "(results/<dataset>: its newest run whose run.json says COMPLETED) or a .pt file",
    )
    parser.add_argument("videos", help="a folder of videos (class subfolders or a flat set)")
    parser.add_argument("out", help="the .npz file to write")
    parser.add_argument(
        "--which", default="pretrained", help="checkpoint in the run folder, e.g. finetune_n300"
    )
    parser.add_argument("--frames", type=int, default=None, help="clip length (default: run's)")
    parser.add_argument("--clip", choices=["first", "center"], default="first")
    parser.add_argument("--split", default=None, help="a UCF-101-style split list to use")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader decoding workers")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args(argv)

    encoder = load_encoder(args.run, args.which)
    folder = folder_for(encoder, args.videos, frames=args.frames, clip=args.clip, split=args.split)
    features = extract_features(
        encoder,
        folder,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=sys.stderr.isatty(),
    )
    path = save_features(args.out, features, folder)
    print(
        f"wrote {features.shape[0]} feature vectors of {features.shape[1]} values "
        f"({folder.frames}-frame clips, {encoder.path}) to {path}"
    )
    return path


def cli(argv: Sequence[str] | None = None) -> int:
    """`main`, with a one-line message and exit status 2 instead of a traceback on bad input."""
    try:
        main(argv)
    except (OSError, ValueError, RuntimeError, ImportError) as e:  # DataError is a RuntimeError
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
