"""One pretraining step of the paper's configurations: the project's step against a lower
bound (its convolutions alone) and against a naive reference step written here.

For mnistrotated, cifar10scanned and coil100 at their paper batch sizes and shapes, with the
group methods `groupwtacnn` and `groupwtacrnn` (k_spatial = k_lifetime = 1), on synthetic
uniform [0, 1) videos, all in this one process (so all cases share the allocator setting):

  a fp32  the project's full pretraining step (`VideoModel.pretrain_loss`, backward, the
          method's global-norm clipping and Keras' Adam from `train.Stage`) with the settings of
          `gksparse.training.runtime.configure(device)` and `runtime.prepare_model`, autocast off;
  a fast  the same with the project's fastest settings (bf16 autocast: `fast_cpu=True`,
          `autocast=True` in the experiments);
  b conv  a lower bound: the encoder's convolutions alone (and the recurrent layer's input
          and state convolutions for the CRNN), forward and backward, fp32: the smaller of
          `b direct` (oneDNN, NHWC; cuDNN on CUDA) and `b project` (the project's own
          convolution paths: on the CPU FFT for the 5 x 5 layers, the state convolution as
          the fused recurrence runs it);
  c naive a reference step written in this file: dense transposed-convolution decoder,
          `torch.topk` + scatter masks, the recurrence frame by frame as the formulas read,
          fp32, NCHW, torch's Adam (clip_grad_norm_ for the CRNN).

Cases alternate within every round, so drifting load hits them alike; each time is the
median over the rounds after two warm-up rounds. `check` compares the first gradients of
`a fp32` and `c`, which start from the same weights and batch (first and last encoder
convolution, U, decoder; largest difference relative to the largest entry): both compute
the same thing. `fast-32` compares `a fast` (bf16) with `a fp32` the same way.

Then the classifier steps as `train.fit` runs them, fp32 and fast: stacked (the head on the
frozen encoder, without the protocol's feature cache; Adam) and end-to-end (encoder and
head, SGD with momentum, clipped for the CRNN). The last line is
`worst a/b: X.XX  min c/a: Y.YY  worst CNN a/b: Z.ZZ`, with a = a fp32 for a/b and a = a
fast for c/a; the last over the CNN configs alone ('-' when none ran).

    python bench/train_step.py            # everything, about 12 minutes on 2 quiet cores
    python bench/train_step.py --quick    # mnistrotated CNN only, a first look
    python bench/train_step.py --levers   # each lever of `a fast` turned off in turn
    python bench/train_step.py --device cuda   # the same on a GPU (times after a sync)

The second line says which bf16 `a fast` measured: `native` (AVX512_BF16 or AMX, a GPU of
compute capability 8.0+) or `emulated (slower than fp32 here)` (`runtime.native_bf16`).
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gksparse.model.layers import FrameConv2d
from gksparse.model.methods import get_method
from gksparse.model.recurrence import ConvMinimalRNN2d, StateConv
from gksparse.model.video import ModelConfig, VideoModel, build_model
from gksparse.ops.fftconv import conv2d_same, use_fft
from gksparse.training import runtime
from gksparse.training.engine import ClassificationLoss, Stage, StageLoss, pretrain_loss, train_step

DEVICE = torch.device("cpu")  # `--device`


@dataclass(frozen=True)
class Config:
    name: str
    n: int  # batch (videos)
    t: int
    c: int
    h: int
    w: int
    filters: int
    enc_kernel: int
    dec_kernel: int
    groups: int
    classes: int
    repeats: int  # timed rounds after the warm-up rounds (fewer for the big ones)


CONFIGS = (
    Config("mnistrotated", 30, 36, 1, 14, 14, 64, 3, 11, 16, 10, repeats=5),
    Config("cifar10scanned", 30, 9, 3, 16, 16, 256, 5, 7, 64, 10, repeats=3),
    Config("coil100", 10, 72, 3, 32, 32, 128, 5, 7, 32, 100, repeats=2),
)
METHODS = ("groupwtacnn", "groupwtacrnn")


def model_config(c: Config, method: str) -> ModelConfig:
    return ModelConfig(
        method,
        c.c,
        c.h,
        c.w,
        c.classes,
        filters=c.filters,
        enc_kernel=c.enc_kernel,
        dec_kernel=c.dec_kernel,
        groups=c.groups,
    )


# -- (a) the project's step ---------------------------------------------------------------
def probed(model: VideoModel | NaiveModel) -> list[torch.Tensor]:
    """The weights whose first gradients `check` compares: first and last encoder
    convolution, state kernel U, decoder."""
    if isinstance(model, NaiveModel):
        extra = [model.u] if model.recurrent else []
        return [model.convs[0].weight, model.convs[-1].weight, *extra, model.dec.weight]
    enc = model.encoder
    extra = [] if enc.rnn is None else [enc.rnn.recurrent_weight]
    return [enc.convs[0].weight, enc.convs[-1].weight, *extra, model.decoder.weight]


def grad_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Largest difference of two lists of gradients, relative to each one's largest entry."""
    return max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a, b, strict=True))


def stage_step(
    model: VideoModel, stage: Stage, batch: dict, use_autocast: bool, first: list | None = None
) -> Callable[[], float]:
    """One training step of `stage` as `train.fit` runs it (`train.train_step`): only
    `stage.params` train; the loss under autocast, backward, global-norm clip, optimizer step.

    first: filled with the gradients of `probed(model)` of the first call.
    """
    trainable = {id(p) for p in stage.params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    optimizer = stage.make_optimizer()
    runner = StageLoss(model, stage.loss)
    model.train()

    def keep_first() -> None:
        if first is not None and not first:
            first.extend(p.grad.detach().float().clone() for p in probed(model))

    def step() -> float:
        return train_step(
            model,
            stage,
            optimizer,
            batch,
            runner=runner,
            device=DEVICE,
            use_autocast=use_autocast,
            after_backward=keep_first,
        )

    return step


def project_step(
    model: VideoModel, batch: dict, use_autocast: bool, first: list | None = None
) -> Callable[[], float]:
    """The pretraining step of `train.fit`: loss under autocast, backward, clip, Adam.

    first: filled with the gradients of `probed(model)` of the first call.
    """
    stage = Stage(
        "pretrain",
        model.trainable("pretrain"),
        pretrain_loss,
        epochs=1,
        batch_size=len(batch["video"]),
        clipnorm=model.method.clipnorm,
    )
    return stage_step(model, stage, batch, use_autocast, first)


# -- (b) the convolutions alone -----------------------------------------------------------
def conv_lower_bound(model: VideoModel, x: torch.Tensor, impl: str) -> Callable[[], float]:
    """Forward and backward of the encoder's convolutions only, fp32, no ReLU, no sparsity.

    impl 'direct': oneDNN's convolutions in the NHWC layout (its fastest here).
    impl 'project': the project's own convolution paths in the model's layout
    (`fftconv.conv2d_same`: FFT where that pays; the recurrent layer's state convolution per
    step as `_MinimalRNN` runs it, its kernel gradient once over all steps).
    """
    enc = copy.deepcopy(model.encoder)
    direct = impl == "direct"
    nhwc = enc.convs[1].weight.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if direct or nhwc else torch.contiguous_format
    enc.to(memory_format=fmt)
    params = [p for p in enc.parameters()]
    for p in params:
        p.requires_grad_(True)
    frames = x.flatten(0, 1).contiguous(memory_format=fmt)
    n, t = x.shape[:2]
    pad = enc.convs[0].padding
    grads: dict[int, torch.Tensor] = {}

    def grad_like(i: int, y: torch.Tensor) -> torch.Tensor:
        if i not in grads:
            g = torch.Generator().manual_seed(i)
            grad = torch.randn(y.shape, generator=g).to(DEVICE)
            grads[i] = grad.contiguous(memory_format=fmt)
        return grads[i]

    def conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if direct:
            return F.conv2d(h, weight, bias, padding=pad)
        return conv2d_same(h, weight, bias)

    def step() -> float:
        for p in params:
            p.grad = None
        h = frames
        for c in enc.convs:
            h = conv(h, c.weight, c.bias)
        if enc.rnn is None:
            h.backward(grad_like(0, h))
            return 0.0
        rnn = enc.rnn
        wx = conv(h, rnn.weight, rnn.bias)
        states = h.unflatten(0, (n, t))[:, :-1]  # h_1 .. h_{T-1} feed U
        if direct:  # U per step with autograd: input and kernel gradients per step
            outs = [wx] + [F.conv2d(s, rnn.recurrent_weight, padding=pad) for s in states.unbind(1)]
            torch.autograd.backward(outs, [grad_like(i, y) for i, y in enumerate(outs)])
            return 0.0
        # as _MinimalRNN runs it: per step forward and input gradient, one kernel gradient
        hw = tuple(x.shape[-2:])
        fft = use_fft("auto", rnn.recurrent_weight, DEVICE)
        state_conv = StateConv(rnn.recurrent_weight, torch.float32, fft, hw, t - 1)
        state_conv.record = True
        outs = [state_conv(s) for s in states.detach().unbind(1)]
        g = grad_like(1, outs[0])
        for _ in reversed(outs):
            state_conv.input_grad(g)
        flat = h.detach()  # frame j's state with frame j + 1's gradient, as _MinimalRNN
        state_conv.kernel_grad(flat[:-1], grad_like(2, flat)[1:])
        wx.backward(grad_like(0, wx))
        return 0.0

    return step


# -- (c) the naive reference step ---------------------------------------------------------
class NaiveModel(nn.Module):
    """The method written plainly from METHOD.md, independent of the project's layers."""

    def __init__(self, c: Config, recurrent: bool) -> None:
        super().__init__()
        k, f = c.enc_kernel, c.filters
        self.groups, self.recurrent = c.groups, recurrent
        self.convs = nn.ModuleList(nn.Conv2d(i, f, k, padding=k // 2) for i in (c.c, f, f))
        if recurrent:
            self.w = nn.Parameter(torch.empty(f, f, k, k))
            self.b = nn.Parameter(torch.empty(f))
            self.u = nn.Parameter(torch.empty(f, f, k, k))
        self.dec = nn.ConvTranspose2d(f, c.c, c.dec_kernel, padding=c.dec_kernel // 2)

    def load_from(self, model: VideoModel) -> NaiveModel:
        """Copy the project model's weights, so that both compute the same first loss."""
        with torch.no_grad():
            for mine, theirs in zip(self.convs, model.encoder.convs, strict=True):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
            if self.recurrent:
                rnn = model.encoder.rnn
                self.w.copy_(rnn.weight)
                self.b.copy_(rnn.bias)
                self.u.copy_(rnn.recurrent_weight)
            self.dec.weight.copy_(model.decoder.weight)
            self.dec.bias.copy_(model.decoder.bias)
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        h = x.reshape(n * t, *x.shape[2:])
        for conv in self.convs:
            h = torch.relu(conv(h))
        h = h.reshape(n, t, *h.shape[1:])
        if not self.recurrent:
            return h
        p = self.w.shape[-1] // 2
        state = torch.zeros_like(h[:, 0])
        states = []
        for i in range(t):
            x_t = h[:, i]
            u = torch.sigmoid(
                F.conv2d(x_t, self.w, self.b, padding=p) + F.conv2d(state, self.u, padding=p)
            )
            state = (1 - u) * state + u * x_t
            states.append(state)
        return torch.stack(states, dim=1)

    def group_ksparse(self, code: torch.Tensor, k: int, spatial: bool) -> torch.Tensor:
        n, t, f, h, w = code.shape
        g = self.groups
        grouped = code.reshape(n, t, g, f // g, h, w)
        norms = torch.sqrt(grouped.pow(2).sum(dim=3) + 1e-7)  # (n, t, g, h, w)
        if spatial:  # per sample, frame and group: winners over (h, w)
            flat = norms.reshape(n, t, g, h * w)
            idx = torch.topk(flat, k, dim=-1).indices
            mask = torch.zeros_like(flat).scatter_(-1, idx, 1.0).reshape(norms.shape)
        else:  # per group and pixel: winners over (n, t)
            flat = norms.permute(2, 3, 4, 0, 1).reshape(g, h, w, n * t)
            idx = torch.topk(flat, k, dim=-1).indices
            mask = torch.zeros_like(flat).scatter_(-1, idx, 1.0)
            mask = mask.reshape(g, h, w, n, t).permute(3, 4, 0, 1, 2)
        return (grouped * mask.detach().unsqueeze(3)).reshape(code.shape)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        code = self.encode(x)
        code = self.group_ksparse(code, 1, spatial=True)
        code = self.group_ksparse(code, 1, spatial=False)
        out = self.dec(code.reshape(n * t, *code.shape[2:])).reshape(x.shape)
        if self.recurrent:
            out, x = out[:, :-1], x[:, 1:]
        return F.mse_loss(out, x)


def naive_step(
    model: VideoModel, c: Config, x: torch.Tensor, first: list | None = None
) -> Callable[[], float]:
    recurrent = model.method.recurrent
    naive = NaiveModel(c, recurrent).to(DEVICE).load_from(model)
    params = list(naive.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-4)

    def step() -> float:
        loss = naive.loss(x)
        optimizer.zero_grad()
        loss.backward()
        if first is not None and not first:
            first.extend(p.grad.detach().clone() for p in probed(naive))
        if recurrent:
            nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return float(loss.detach())

    return step


# -- classifier steps ---------------------------------------------------------------------
def classifier_step(
    model: VideoModel, batch: dict, stage_name: str, use_autocast: bool
) -> Callable[[], float]:
    """One step of the stacked (head only) or end-to-end stage, as `train.fit` runs it."""
    stacked = stage_name == "stacked"
    stage = Stage(
        stage_name,
        model.trainable(stage_name),
        ClassificationLoss(),
        epochs=1,
        batch_size=len(batch["video"]),
        optimizer="adam" if stacked else "sgd",
        lr=1e-4 if stacked else 1e-5,
        clipnorm=model.method.clipnorm,
    )
    return stage_step(model, stage, batch, use_autocast)


# -- timing -------------------------------------------------------------------------------
# Untimed rounds first: the process's heap grows over the first two or three steps of a
# big configuration (coil100's fp32 step page-faulted ~5 GB in its second step, none later).
WARMUP = 2


def run_rounds(
    cases: dict[str, Callable[[], float]], repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(median seconds per case over `repeats` rounds after `WARMUP` rounds, first loss per
    case)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    first: dict[str, float] = {}
    for r in range(WARMUP + repeats):
        for name, step in cases.items():
            start = time.perf_counter()
            value = step()
            if DEVICE.type == "cuda":  # the step's kernels may still be running
                torch.cuda.synchronize(DEVICE)
            elapsed = time.perf_counter() - start
            if r == 0:
                first[name] = value
            if r >= WARMUP:
                times[name].append(elapsed)
    return {k: statistics.median(v) for k, v in times.items()}, first


def make_model(c: Config, method: str, settings: runtime.Settings) -> VideoModel:
    torch.manual_seed(0)
    return runtime.prepare_model(build_model(model_config(c, method)), settings)


def synthetic_batch(c: Config) -> dict:
    g = torch.Generator().manual_seed(1)
    video = torch.rand(c.n, c.t, c.c, c.h, c.w, generator=g).to(DEVICE)
    label = torch.randint(0, c.classes, (c.n,), generator=g).to(DEVICE)
    return {"video": video, "mask": None, "label": label}


def bench_pretrain(c: Config, method: str, settings: runtime.Settings, repeats: int) -> dict:
    batch = synthetic_batch(c)
    x = batch["video"]
    base = make_model(c, method, settings)
    g_c, g_32, g_fast = [], [], []
    cases = {
        "c": naive_step(base, c, x, g_c),
        "a32": project_step(copy.deepcopy(base), batch, False, g_32),
        "afast": project_step(copy.deepcopy(base), batch, settings.autocast, g_fast),
        "b_direct": conv_lower_bound(base, x, "direct"),
        "b_project": conv_lower_bound(base, x, "project"),
    }
    times, _ = run_rounds(cases, repeats)
    return {
        "config": c.name,
        "method": method,
        "a32": times["a32"],
        "afast": times["afast"],
        "b": min(times["b_direct"], times["b_project"]),
        "b_direct": times["b_direct"],
        "b_project": times["b_project"],
        "c": times["c"],
        "check": grad_difference(g_32, g_c),
        "fast_vs_32": grad_difference(g_fast, g_32),
    }


def bench_classifier(c: Config, method: str, settings: runtime.Settings, repeats: int) -> dict:
    batch = synthetic_batch(c)
    base = make_model(c, method, settings)
    cases = {
        f"{stage}_{kind}": classifier_step(copy.deepcopy(base), batch, stage, kind == "fast")
        for stage in ("stacked", "finetune")
        for kind in ("fp32", "fast")
    }
    times, _ = run_rounds(cases, repeats)
    return {"config": c.name, "method": method, **times}


PRE_HEADER = (
    f"{'config':<15}{'method':<14}{'a fp32':>9}{'a fast':>9}{'b conv':>9}{'c naive':>9}"
    f"{'a32/b':>8}{'c/afast':>8}{'check':>9}{'fast-32':>9}"
    f"{'b direct':>10}{'b project':>10}"
)
CLS_HEADER = (
    f"{'config':<15}{'method':<14}{'stacked fp32':>13}{'stacked fast':>13}"
    f"{'e2e fp32':>10}{'e2e fast':>10}"
)


def print_pretrain(row: dict) -> None:
    print(
        f"{row['config']:<15}{row['method']:<14}{row['a32']:>8.3f}s{row['afast']:>8.3f}s"
        f"{row['b']:>8.3f}s{row['c']:>8.3f}s{row['a32'] / row['b']:>8.2f}"
        f"{row['c'] / row['afast']:>8.2f}{row['check']:>9.1e}{row['fast_vs_32']:>9.1e}"
        f"{row['b_direct']:>9.3f}s{row['b_project']:>9.3f}s",
        flush=True,
    )


def print_classifier(row: dict) -> None:
    print(
        f"{row['config']:<15}{row['method']:<14}{row['stacked_fp32']:>12.3f}s"
        f"{row['stacked_fast']:>12.3f}s{row['finetune_fp32']:>9.3f}s{row['finetune_fast']:>9.3f}s",
        flush=True,
    )


# -- levers: the fast step with one lever off at a time -----------------------------------
def set_fft(model: VideoModel, fft: bool | str) -> None:
    for m in model.modules():
        if isinstance(m, FrameConv2d | ConvMinimalRNN2d):
            m.fft = fft


def bench_levers(c: Config, method: str, settings: runtime.Settings, repeats: int) -> None:
    """Each lever's gain: time of `a fast` with that lever off / time of `a fast`."""
    batch = synthetic_batch(c)
    base = make_model(c, method, settings)
    recurrent = base.method.recurrent

    def variant(
        use_autocast=settings.autocast,
        sparse=True,
        fast_mask=True,
        flip_layout=False,
        fft="auto",
        fused=True,
        sparse_backward="auto",
    ) -> Callable[[], float]:
        model = copy.deepcopy(base)
        model.fast_masks = fast_mask
        model.decoder.sparse = "auto" if sparse else False
        model.encoder.sparse_backward = sparse_backward
        set_fft(model, fft)
        if recurrent:
            model.encoder.rnn.fused = fused
        if flip_layout:
            nhwc = model.encoder.convs[1].weight.is_contiguous(memory_format=torch.channels_last)
            model.to(memory_format=torch.contiguous_format if nhwc else torch.channels_last)
        return project_step(model, batch, use_autocast)

    cases = {
        "fast": variant(),
        "no bf16": variant(use_autocast=False),
        "no sparse decoder": variant(sparse=False),
        "no sparse backward": variant(sparse_backward=False),
        "no FFT convolutions": variant(fft=False),
        "no k=1 argmax mask": variant(fast_mask=False),
        "NCHW <-> NHWC": variant(flip_layout=True),
    }
    if recurrent:
        cases["no fused recurrence"] = variant(fused=False)
    times, _ = run_rounds(cases, repeats)
    print(f"levers on {c.name} {method} (median of {repeats}; ratio = variant / all on)")
    for name, t in times.items():
        print(f"  {name:<22}{t:>8.3f}s{t / times['fast']:>7.2f}x", flush=True)
    if DEVICE.type != "cpu":
        return
    # The allocator is process-wide and cannot be undone in place: time the fast step in
    # two fresh processes, with and without it, one after the other.
    fresh = {
        flag: fast_step_in_subprocess(c, method, repeats, flag) for flag in ("keep", "default")
    }
    print(
        f"  {'no allocator':<22}{fresh['default']:>8.3f}s"
        f"{fresh['default'] / fresh['keep']:>7.2f}x  (fresh processes: "
        f"{fresh['keep']:.3f}s with it)",
        flush=True,
    )


def fast_step_in_subprocess(c: Config, method: str, repeats: int, malloc: str) -> float:
    """Median fast-step time measured by a fresh `--fast-only` process of this script."""
    cmd = [sys.executable, __file__, "--fast-only", "--configs", c.name, "--methods", method]
    cmd += ["--repeats", str(repeats)] + (["--default-malloc"] if malloc == "default" else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.split("FAST")[-1].split()[0])


def bench_fast_only(c: Config, method: str, settings: runtime.Settings, repeats: int) -> None:
    """Print `FAST <median seconds>` of the fast step alone (for `--levers`)."""
    model = make_model(c, method, settings)
    times, _ = run_rounds({"fast": project_step(model, synthetic_batch(c), True)}, repeats)
    print(f"FAST {times['fast']:.6f}")


def free_memory() -> None:
    """Between cases of different shapes: give the heap they left back to the system. With
    the allocator setting the process would otherwise keep every case's blocks, fragmented,
    and grow past any one case's peak (it once ran out of 24 GB on coil100)."""
    gc.collect()
    runtime.release_freed_memory()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="mnistrotated CNN only")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--levers", action="store_true", help="ablate the levers instead")
    parser.add_argument("--configs", nargs="*", help="subset of config names")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), help="methods to run")
    parser.add_argument("--repeats", type=int, default=None, help="override timed rounds")
    parser.add_argument("--no-classifier", action="store_true", help="skip classifier steps")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc")
    parser.add_argument("--fast-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    settings = runtime.configure(DEVICE, fast_cpu=True, allocator=not args.default_malloc)
    configs = [c for c in CONFIGS if not args.configs or c.name in args.configs]
    methods = args.methods
    if args.quick:
        configs, methods = configs[:1], methods[:1]
    if args.fast_only:
        bench_fast_only(configs[0], methods[0], settings, args.repeats or configs[0].repeats)
        return
    print(f"torch {torch.__version__}; {runtime.describe(settings)}")
    print(f"bf16 ('a fast', autocast): {runtime.bf16_case(DEVICE)}", flush=True)
    start = time.perf_counter()
    if args.levers:
        for c in configs:
            for method in methods:
                bench_levers(c, method, settings, args.repeats or c.repeats)
        print(f"total {time.perf_counter() - start:.0f} s")
        return
    print(PRE_HEADER)
    rows = []
    for c in configs:
        for method in methods:
            rows.append(bench_pretrain(c, method, settings, args.repeats or c.repeats))
            print_pretrain(rows[-1])
            free_memory()
    if not args.no_classifier:
        print(CLS_HEADER)
        for c in configs:
            for method in methods:
                reps = max(1, (args.repeats or c.repeats) - 1)
                print_classifier(bench_classifier(c, method, settings, reps))
                free_memory()
    print(f"total {time.perf_counter() - start:.0f} s")
    worst = max(r["a32"] / r["b"] for r in rows)
    least = min(r["c"] / r["afast"] for r in rows)
    cnn = [r["a32"] / r["b"] for r in rows if not get_method(r["method"]).recurrent]
    worst_cnn = f"{max(cnn):.2f}" if cnn else "-"
    print(f"worst a/b: {worst:.2f}  min c/a: {least:.2f}  worst CNN a/b: {worst_cnn}")


if __name__ == "__main__":
    main()
