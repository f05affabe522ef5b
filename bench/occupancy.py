"""How far a winner-take-all code's gradient reaches back through the CNN encoder, and
what the sparse encoder backward (`gksparse.ops.sparsebackward`) saves.

1. occupancy: on real Rotated MNIST (and Scanned CIFAR-10 with `--cifar`) batches, after
   `--steps` pretraining steps of the method from scratch (or the model of `--checkpoint`):
   the fraction of the code that is nonzero, of the real frames that hold a winner, of the
   frame positions holding a winner, and per encoder layer (3 = last) the fraction of
   positions whose output gradient is nonzero (`sites`, what the layer's sparse backward
   computes from) and of positions its k x k windows reach (`reached`).
   For the recurrent methods (`--recurrent`): the fraction of positions with a nonzero
   gradient at the recurrence's input and at each convolution's output.
2. threshold: one convolution's backward (kernel and input gradient, 1 thread, CPU time)
   sparse from `S` random sites against the dense backward the encoder runs otherwise
   (oneDNN direct, or the FFT convolution where `fft_pays`), per density S / positions:
   the break-even is `SparseBackwardConvs.max_density`.
3. steps: at the paper's shapes (bench/train_step.py's configs; synthetic uniform videos
   and fresh weights, as there) the pretraining step `a` (fp32, as train_step.py's `a fp32`)
   with the dense and with the sparse encoder backward, and the lower bound `b` (the
   encoder's dense convolutions, forward and backward), alternating within every round,
   median wall time of the rounds after two warm-up rounds; the ratios come from one run.
   Two floors over `b` beside them: `fwd/b`, the convolutions' forward alone (what any step
   pays), and `-last/b`, `b` without the last layer's backward (what an exact step still
   pays where the gradient reaches most positions below the last layer).

    python bench/occupancy.py                 # all three, MNIST; ~15 min on 2 loaded cores
    python bench/occupancy.py --cifar         # also CIFAR-10 (occupancy and steps)
    python bench/occupancy.py --only steps    # one part: occupancy, threshold or steps
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step as ts  # noqa: E402  (the step and lower bound as train_step.py times them)

from gksparse.data.loading import load  # noqa: E402
from gksparse.model.checkpoint import load_checkpoint  # noqa: E402
from gksparse.model.video import VideoModel  # noqa: E402
from gksparse.ops import sparsebackward  # noqa: E402
from gksparse.ops.fftconv import conv2d_same, fft_pays  # noqa: E402
from gksparse.training import runtime  # noqa: E402
from gksparse.training.engine import Stage, StageLoss, pretrain_loss, train_step  # noqa: E402

DATASETS = {"mnistrotated": ts.CONFIGS[0], "cifar10scanned": ts.CONFIGS[1]}


# -- 1. occupancy ----------------------------------------------------------------------------
@contextlib.contextmanager
def recorded_layers() -> Iterator[list[tuple[int, int]]]:
    """Within the block every encoder layer's backward runs sparse and its (sites, reached)
    counts are appended, last layer first."""
    seen: list[tuple[int, int]] = []
    fn = sparsebackward.SparseBackwardConvs
    names = ("max_density", "max_density_fft", "max_density_bf16")
    original, limits = sparsebackward.conv_backward_at, [getattr(fn, n) for n in names]

    def counted(x, weight, pos, g, need_input):
        out = original(x, weight, pos, g, need_input)
        seen.append((pos.numel(), out[2].numel()))
        return out

    sparsebackward.conv_backward_at = counted
    for name in names:  # the FFT layers (CIFAR-10's) and bf16 too
        setattr(fn, name, 1.0)
    try:
        yield seen
    finally:
        sparsebackward.conv_backward_at = original
        for name, value in zip(names, limits, strict=True):
            setattr(fn, name, value)


def occupancy(model: VideoModel, x: torch.Tensor, mask: torch.Tensor | None) -> dict:
    """Occupancy of one pretraining step's code and encoder gradient (see the docstring).

    x: `(N, T, C, H, W)` videos; mask: `(N, T)` real frames or None.
    """
    model.zero_grad(set_to_none=True)
    model.encoder.sparse_backward = True
    with recorded_layers() as seen:
        model.pretrain_loss(x, mask).backward()
    with torch.no_grad():
        code = model.reconstruct(x, mask)[1]
    real = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else mask
    positions = x.shape[0] * x.shape[1] * x.shape[3] * x.shape[4]
    row = {
        "code": float(code.ne(0).float().mean()),
        "frames": float(code.ne(0).flatten(2).any(2)[real].float().mean()),
        "winners": float(code.ne(0).any(2).float().mean()),
    }
    for layer, (sites, reached) in zip((3, 2, 1), seen, strict=True):
        row[f"sites{layer}"], row[f"reached{layer}"] = sites / positions, reached / positions
    return row


def recurrent_spread(model: VideoModel, x: torch.Tensor, mask: torch.Tensor | None) -> dict:
    """For a recurrent method: the fraction of positions with a nonzero gradient at each
    convolution's output (3 = the recurrence's input) in one pretraining step."""
    acts: list[torch.Tensor] = []

    def keep(module, inputs, output):  # the convolution's output, before its ReLU
        output.retain_grad()
        acts.append(output)

    hooks = [conv.register_forward_hook(keep) for conv in model.encoder.convs]
    model.zero_grad(set_to_none=True)
    try:
        model.pretrain_loss(x, mask).backward()
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        code = model.reconstruct(x, mask)[1]
    row = {"code": float(code.ne(0).float().mean())}
    for layer, a in zip((1, 2, 3), acts, strict=True):  # a: (N, T, F, H, W)
        row[f"grad{layer}"] = float(a.grad.ne(0).any(2).float().mean())
    return row


def real_batches(name: str, count: int, n: int, seed: int = 0) -> list[dict]:
    """`count` batches of `n` training videos of dataset `name` (as the protocol loads it)."""
    data = load(name, train_size=count * n, test_size=n, seed=seed, progress=False)
    videos = torch.from_numpy(data.train.videos[: count * n].copy())
    masks = data.train.mask
    out = []
    for i in range(count):
        m = None if masks is None else torch.from_numpy(masks[i * n : (i + 1) * n].copy())
        out.append({"video": videos[i * n : (i + 1) * n], "mask": m, "label": None})
    return out


def pretrained(name: str, method: str, steps: int, batches: list[dict]) -> VideoModel:
    """A fresh model of `method` at the paper's shapes for `name` after `steps` steps."""
    model = ts.build_model(ts.model_config(DATASETS[name], method))
    stage = Stage(
        "pretrain",
        model.trainable("pretrain"),
        pretrain_loss,
        epochs=1,
        batch_size=len(batches[0]["video"]),
        clipnorm=model.method.clipnorm,
    )
    optimizer, runner = stage.make_optimizer(), StageLoss(model, stage.loss)
    model.train()
    for i in range(steps):
        train_step(model, stage, optimizer, batches[i % len(batches)], runner=runner)
    return model


def bench_occupancy(args: argparse.Namespace) -> None:
    names = ["mnistrotated", "cifar10scanned"] if args.cifar else ["mnistrotated"]
    methods = ["groupwtacnn", "wtacnn"] + (["groupwtacrnn"] if args.recurrent else [])
    print(f"occupancy after {args.steps} pretraining steps (fractions; layer 3 = last)")
    for name in names:
        n = DATASETS[name].n
        batches = real_batches(name, 8, n)
        for method in methods:
            start = time.perf_counter()
            if args.checkpoint:
                model = load_checkpoint(args.checkpoint)[0]
            else:
                model = pretrained(name, method, args.steps, batches[:-1])
            held_out = batches[-1]
            fn = recurrent_spread if model.method.recurrent else occupancy
            row = fn(model, held_out["video"], held_out["mask"])
            cells = "  ".join(f"{k} {v:.4f}" for k, v in row.items())
            print(f"{name:<15}{method:<14}{cells}  ({time.perf_counter() - start:.0f} s)")
            sys.stdout.flush()
            if args.checkpoint:
                break


# -- 2. threshold ----------------------------------------------------------------------------
def layer_seconds(shape: tuple[int, ...], density: float, rounds: int) -> tuple[float, float]:
    """(sparse, dense) CPU seconds of one layer's backward (kernel and input gradient) for a
    gradient on `density` of the positions; shape `(B, C, k, H, W)` (C in and out)."""
    b, c, k, h, w = shape
    gen = torch.Generator().manual_seed(0)
    fft = fft_pays(c, c, k)
    fmt = torch.contiguous_format if fft else torch.channels_last
    x = torch.relu(torch.randn(b, c, h, w, generator=gen)).contiguous(memory_format=fmt)
    weight = torch.randn(c, c, k, k, generator=gen) / (c * k * k) ** 0.5
    on = torch.rand(b, 1, h, w, generator=gen) < density
    grad = (torch.randn(b, c, h, w, generator=gen) * on).contiguous(memory_format=fmt)

    def sparse() -> Callable[[], object]:
        def run() -> None:
            pos = grad.ne(0).any(1).view(-1).nonzero().squeeze(1)
            rows = sparsebackward.rows(grad, pos)
            sparsebackward.conv_backward_at(x, weight, pos, rows, True)

        return run

    def dense() -> Callable[[], object]:
        if fft:  # the FFT convolution's own backward; its forward (untimed) records it
            xs, ws = x.detach().requires_grad_(), weight.detach().requires_grad_()
            y = conv2d_same(xs, ws, None, True)
            return lambda: y.backward(grad)
        return lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [k // 2] * 2, [1, 1], False, [0, 0], 1,
            [True, True, False],
        )  # fmt: skip

    times: dict[str, list[float]] = {"sparse": [], "dense": []}
    for r in range(rounds + 1):
        for name, prepare in (("sparse", sparse), ("dense", dense)):
            fn = prepare()
            start = time.thread_time()
            fn()
            if r:
                times[name].append(time.thread_time() - start)
    return statistics.median(times["sparse"]), statistics.median(times["dense"])


def bench_threshold(args: argparse.Namespace) -> None:
    """One thread, CPU time of this thread: the work, not the other jobs' load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print("threshold: one layer's backward, sparse / dense CPU time (1 thread) per density")
    shapes = {"mnistrotated": (1080, 64, 3, 14, 14), "cifar10scanned": (270, 256, 5, 16, 16)}
    for name, shape in shapes.items():
        if name == "cifar10scanned" and not args.cifar:
            continue
        cells = []
        for density in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5):
            s, d = layer_seconds(shape, density, 3)
            cells.append(f"{density:.2f}: {s / d:.2f}")
        print(f"{name:<15}" + "  ".join(cells))
    torch.set_num_threads(threads)


# -- 3. steps --------------------------------------------------------------------------------
def conv_floor(model: VideoModel, x: torch.Tensor, last_backward: bool) -> Callable[[], float]:
    """The CNN encoder's convolutions as `b project` runs them (fp32), forward only
    (`last_backward` False: what any step pays) or forward and backward with the last
    layer's backward left out (what an exact step still pays where the gradient reaches most
    positions below the last layer, as on Scanned CIFAR-10)."""
    enc = copy.deepcopy(model.encoder)
    params = list(enc.parameters())
    nhwc = enc.convs[1].weight.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    frames = x.flatten(0, 1).contiguous(memory_format=fmt)
    grads: list[torch.Tensor] = []

    def step() -> float:
        for p in params:
            p.grad = None
        h = frames
        with torch.set_grad_enabled(last_backward):
            for c in enc.convs[:-1]:
                h = conv2d_same(h, c.weight, c.bias)
        with torch.no_grad():
            conv2d_same(h, enc.convs[-1].weight, enc.convs[-1].bias)
        if last_backward:
            if not grads:
                g = torch.randn(h.shape, generator=torch.Generator().manual_seed(0))
                grads.append(g.contiguous(memory_format=fmt))
            h.backward(grads[0])
        return 0.0

    return step


def bench_steps(args: argparse.Namespace, settings: runtime.Settings) -> list[float]:
    """The step with the dense and the sparse encoder backward against `b`, and the floors
    of `conv_floor` over `b`; returns the sparse step's a/b of every case."""
    print(f"{'config':<15}{'method':<14}{'a dense':>9}{'a sparse':>9}{'b conv':>9}"
          f"{'dense/b':>9}{'sparse/b':>9}{'sparse/dense':>13}"
          f"{'fwd/b':>7}{'-last/b':>8}")  # fmt: skip
    ratios = []
    for name, c in DATASETS.items():
        if name == "cifar10scanned" and not args.cifar:
            continue
        for method in ("groupwtacnn", "wtacnn"):
            base, batch = ts.make_model(c, method, settings), ts.synthetic_batch(c)
            dense, sparse = copy.deepcopy(base), copy.deepcopy(base)
            dense.encoder.sparse_backward = False
            sparse.encoder.sparse_backward = True
            cases = {
                "dense": ts.project_step(dense, batch, False),
                "sparse": ts.project_step(sparse, batch, False),
                "b_direct": ts.conv_lower_bound(base, batch["video"], "direct"),
                "b_project": ts.conv_lower_bound(base, batch["video"], "project"),
                "forward": conv_floor(base, batch["video"], last_backward=False),
                "but_last": conv_floor(base, batch["video"], last_backward=True),
            }
            t, _ = ts.run_rounds(cases, args.repeats or c.repeats)
            b = min(t["b_direct"], t["b_project"])
            ratios.append(t["sparse"] / b)
            times = f"{t['dense']:>9.3f}{t['sparse']:>9.3f}{b:>9.3f}"
            print(f"{name:<15}{method:<14}{times}{t['dense'] / b:>9.2f}{ratios[-1]:>9.2f}"
                  f"{t['sparse'] / t['dense']:>13.2f}{t['forward'] / b:>7.2f}"
                  f"{t['but_last'] / b:>8.2f}")  # fmt: skip
            sys.stdout.flush()
            ts.free_memory()
    return ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["occupancy", "threshold", "steps"], nargs="*")
    parser.add_argument("--cifar", action="store_true", help="also Scanned CIFAR-10")
    parser.add_argument("--recurrent", action="store_true", help="also groupwtacrnn's spread")
    parser.add_argument("--steps", type=int, default=200, help="pretraining steps first")
    parser.add_argument("--checkpoint", help="a model checkpoint instead of pretraining")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case")
    args = parser.parse_args(argv)
    parts = args.only or ["occupancy", "threshold", "steps"]
    settings = runtime.configure(torch.device("cpu"), fast_cpu=True)
    print(f"torch {torch.__version__}; {runtime.describe(settings)}", flush=True)
    if "occupancy" in parts:
        bench_occupancy(args)
    if "threshold" in parts:
        bench_threshold(args)
    if "steps" in parts:
        ratios = bench_steps(args, settings)
        print(f"worst CNN a/b (sparse backward): {max(ratios):.2f}")


if __name__ == "__main__":
    main()
