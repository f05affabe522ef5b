"""Pictures of a run: reconstructions, decoder filters, accuracy against label budget."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..data.files import atomic_write_bytes  # noqa: E402

if TYPE_CHECKING:
    from ..evaluation.statistics import Summary


def _to_image(x: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """`(C, H, W)` -> an `(H, W)` or `(H, W, 3)` image in [0, 1], min-max scaled.

    Scaling (to `[lo, hi]`, by default the image's own range) makes whitened frames and
    filters visible.
    """
    lo = float(x.min()) if lo is None else lo
    hi = float(x.max()) if hi is None else hi
    x = np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(x)
    return x[0] if x.shape[0] == 1 else np.moveaxis(x[:3], 0, -1)


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    """Write `fig` to `path` (format from its suffix) atomically, with the umask's mode."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=Path(path).suffix[1:] or "png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def save_reconstructions(
    inputs: np.ndarray,
    outputs: np.ndarray,
    path: str | os.PathLike,
    *,
    shift: int = 0,
    mask: np.ndarray | None = None,
    max_frames: int = 12,
    labels: list[str] | None = None,
) -> None:
    """Rows of input frames, each followed by the model's output for the same frames.

    inputs, outputs: `(K, T, C, H, W)`. With `shift = 1` (next-frame prediction) the output
    shown under input frame t is the one computed from frame t-1. Padded frames are blank.
    labels: one per video (e.g. 'train', 'test'), written in its rows' titles.
    """
    k, t = inputs.shape[:2]
    cols = min(t, max_frames)
    step = max(1, t // cols)
    fig, axes = plt.subplots(2 * k, cols, figsize=(cols * 0.9, 2 * k * 0.9), squeeze=False)
    for v in range(k):
        lo, hi = float(inputs[v].min()), float(inputs[v].max())  # one scale for both rows
        for j in range(cols):
            f = j * step
            shows = (inputs[v, f], outputs[v, f - shift] if f - shift >= 0 else None)
            for r, img in enumerate(shows):
                ax = axes[2 * v + r, j]
                ax.axis("off")
                if img is not None and (mask is None or mask[v, f]):
                    ax.imshow(_to_image(img, lo, hi), cmap="gray", interpolation="nearest")
            if j == 0:
                name = f"{labels[v]} " if labels else ""
                axes[2 * v, 0].set_title(f"{name}input", fontsize=6, loc="left")
                axes[2 * v + 1, 0].set_title(f"{name}output", fontsize=6, loc="left")
    _save(fig, path)


def save_filters(weight: np.ndarray, path: str | os.PathLike, *, groups: int = 1) -> None:
    """The decoder's filters as a mosaic; with `groups > 1`, one row per channel group.

    weight: the transposed convolution's `(F, C_out, k, k)`: filter f is the patch the
    decoder adds for feature f.
    """
    f = weight.shape[0]
    rows = groups if groups > 1 else int(np.ceil(np.sqrt(f)))
    cols = f // groups if groups > 1 else int(np.ceil(f / rows))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.5, rows * 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < f:
            ax.imshow(_to_image(weight[i]), cmap="gray", interpolation="nearest")
    _save(fig, path)


DODGE = 1.02  # the factor between neighbouring rows' points at one budget (log axis)


def _curve(
    ax: plt.Axes, name: str, points: dict[int, Summary], color: Any, shift: float = 1.0
) -> None:
    """One row's test accuracy (%) against the labels, with its 95% interval at the budgets
    where it has one (n >= 2): a bar at each, and a band between neighbouring ones.

    shift: the row's points are drawn at `shift` times their budget (log axis), so that the
    bars of several rows at one budget stand side by side."""
    budgets = sorted(points)
    xs = [x * shift for x in budgets]
    means = [100 * points[x].mean for x in budgets]
    ax.plot(xs, means, marker="o", color=color, label=name)
    cis = [points[x].ci95 for x in budgets]
    if any(ci is not None for ci in cis):
        low = [m if ci is None else 100 * ci[0] for m, ci in zip(means, cis, strict=True)]
        high = [m if ci is None else 100 * ci[1] for m, ci in zip(means, cis, strict=True)]
        has = [ci is not None for ci in cis]
        ax.fill_between(xs, low, high, where=has, color=color, alpha=0.15, linewidth=0)
        # the bars: a band has no width at a lone budget (a one-budget dataset has only those)
        at = [i for i, h in enumerate(has) if h]
        ax.vlines([xs[i] for i in at], [low[i] for i in at], [high[i] for i in at], color=color)


def save_accuracy_curves(
    panels: dict[str, dict[str, dict[int, Summary]]],
    path: str | os.PathLike,
    *,
    title: str = "",
    xlabel: str = "number of labels",
) -> None:
    """Test accuracy in % against the number of labels: a panel per classifier, in order, and
    in each a line per named row, with the 95% confidence band of its mean where it has one.

    panels: classifier -> row name -> {number of labels: summary of the test accuracies as
    fractions, as in result.json}. A row has one color in every panel.
    """
    names = list(dict.fromkeys(name for curves in panels.values() for name in curves))
    colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    for ax, (classifier, curves) in zip(axes.flat, panels.items(), strict=False):
        for i, (name, points) in enumerate(curves.items()):
            shift = DODGE ** (i - (len(curves) - 1) / 2)
            _curve(ax, name, points, colors(names.index(name) % colors.N), shift)
        budgets = sorted({x for points in curves.values() for x in points})
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(x) for x in budgets])  # the budgets, not powers of ten
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(classifier)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.remove()
    fig.suptitle(title)
    fig.tight_layout()
    # beside the panels: names with a setting are long and would hide the lines
    handles = {h.get_label(): h for ax in fig.axes for h in ax.get_lines()}
    fig.legend(
        [handles[n] for n in names], names, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1)
    )
    _save(fig, path)
