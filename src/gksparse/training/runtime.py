"""Process-wide runtime settings: the allocator, threads and the fast options per device.

Call `configure(device, fast_cpu=...)` once at start-up, before the first big tensor, then
`prepare_model(model, settings)` after building a model and `train.autocast(device,
settings.autocast)` around forward passes (`fit` and `evaluate` take it as `use_autocast`).

What each setting does and what it gave on the fast step (`bench/train_step.py --levers`,
2-core AVX512-BF16 CPU; noisy machine, ranges over runs):
- allocator (CPU, glibc only): malloc keeps freed memory instead of unmapping every big
  block, so a step stops page-faulting its large tensors afresh: 1.2x on mnistrotated,
  ~3x on cifar10scanned / coil100 (the FFT convolutions' spectra are large). The process
  keeps its peak memory; that is the price.
- autocast: bf16 autocast, only on request (`autocast=True`, or `fast_cpu`; 1.7-2.4x on
  this CPU): the reference trained in float32, and bf16 changes the arithmetic. Losses are
  computed and reported in fp32 either way; first gradients differ from fp32 by a few
  percent of their largest entry, as with plain autocast. TF32 stays PyTorch's default
  (on for cuDNN convolutions, off for matrix products). It pays only where the hardware
  computes bf16 (`native_bf16`): on a CPU without avx512_bf16 or AMX PyTorch emulates it and
  autocast is slower than float32, which `configure` says once per process on stderr.
- channels_last: the per-frame convolutions in NHWC layout, oneDNN's fastest, for models
  whose convolutions all run direct (mnistrotated's 3 x 3: 1.1-1.16x); FFT convolutions
  read NCHW frames, so such models stay NCHW.

The model itself picks its exact fast paths (FFT convolutions, sparse decoder, sparse
last-layer backward, fused recurrence: see `gksparse.model.layers`, `fftconv`, `sparseconv`,
`recurrence`); they need no setting.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass

import torch
from torch import nn

from ..model.layers import uses_fft

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int

# CPU features (`torch.cpu.get_capabilities()` keys) with bf16 arithmetic in hardware:
# x86's AVX512_BF16 and AMX-BF16 (oneDNN's bf16 kernels), Arm's BF16 extension (NEON, SVE)
BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")
SLOW_BF16 = (
    "bf16 autocast will be slower than float32 on this CPU (no avx512_bf16 or AMX, or "
    "$ONEDNN_MAX_CPU_ISA below them: PyTorch emulates bf16); autocast=False is faster here."
)
_said_slow_bf16 = False  # SLOW_BF16 is said once per process
# oneDNN's own caps on the instructions it uses ($ONEDNN_MAX_CPU_ISA, formerly
# $DNNL_MAX_CPU_ISA) that leave out bf16: under them it emulates bf16 on any CPU (measured
# here: a 5 x 5 convolution with 128 channels ran bf16 2.6x slower than float32 under
# AVX512_CORE, 2.3x faster without the cap), so bench/train_step.py can time both cases
NO_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


@dataclass(frozen=True)
class Settings:
    """What `configure` chose; pass it on to `prepare_model` and `train.autocast`."""

    device: torch.device
    autocast: bool  # bf16 autocast around forward passes
    channels_last: bool  # convolutions in NHWC layout
    allocator: bool  # glibc malloc keeps freed memory (CPU)
    threads: int  # torch intra-op threads


def _libc():
    """glibc's handle, or None (another libc, another OS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Tell glibc's malloc never to unmap or trim freed memory. False where not glibc.

    Same as starting with `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`: big blocks
    come from the heap and stay there when freed, so the next step reuses already mapped
    pages instead of page-faulting fresh ones. Call it before the first big tensor; blocks
    mapped before the call keep their old behaviour.
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))


def release_freed_memory() -> bool:
    """Hand the memory that glibc's malloc holds free back to the system (`malloc_trim`).

    `keep_freed_memory` makes a process keep its peak; between workloads of different
    shapes (e.g. the benchmark's configurations) the kept blocks fragment and the process
    grows beyond any one workload's peak. Call this between them. False where not glibc.
    """
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def default_device(setting: str | torch.device | None = None) -> torch.device:
    """The device a run uses: `setting` (a run's `device`, e.g. 'cpu' or 'cuda:1') when
    given, else CUDA when available, else the CPU. The one place that default is decided."""
    if setting:
        return torch.device(setting)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cpu_capabilities() -> dict:
    """This CPU's features as PyTorch detected them (`torch.cpu.get_capabilities`, torch
    2.9+; before it, the few that `torch.cpu` answers); empty where torch says nothing."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        return dict(get())
    older = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    return {key: getattr(torch.cpu, fn)() for key, fn in older.items() if hasattr(torch.cpu, fn)}


def native_bf16(device: str | torch.device | None = None) -> bool:
    """Whether `device` computes bf16 in hardware, so that bf16 autocast pays there.

    CPU: one of `BF16_FEATURES` (AVX512_BF16 or AMX on x86, BF16 on Arm), unless
    $ONEDNN_MAX_CPU_ISA keeps oneDNN below them (`NO_BF16_ISAS`); without them PyTorch
    emulates bf16 and autocast is slower than float32. A CPU whose features torch cannot
    tell counts as native (nothing to say). CUDA: compute capability 8.0 (Ampere) or newer.
    Other devices: True. None: `default_device()`.
    """
    device = default_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu":
        return True
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    if isa.strip().upper() in NO_BF16_ISAS:
        return False
    caps = _cpu_capabilities()
    if not caps:
        return True
    return any(bool(caps.get(key)) for key in BF16_FEATURES)


def bf16_case(device: str | torch.device | None = None) -> str:
    """Which bf16 a run with autocast on `device` gets, for benchmark lines: 'native' or
    'emulated (slower than fp32 here)'."""
    return "native" if native_bf16(device) else "emulated (slower than fp32 here)"


def _say_slow_bf16(device: torch.device) -> None:
    """Say `SLOW_BF16` on stderr, once per process (rank 0 only under torchrun), when bf16
    autocast was asked for on a CPU without native bf16."""
    global _said_slow_bf16
    if _said_slow_bf16 or device.type != "cpu" or native_bf16(device):
        return
    _said_slow_bf16 = True
    if os.environ.get("RANK", "0") == "0":
        print(f"gksparse: {SLOW_BF16}", file=sys.stderr)


def configure(
    device: str | torch.device | None = None,
    fast_cpu: bool = False,
    *,
    autocast: bool | None = None,
    threads: int | None = None,
    allocator: bool = True,
) -> Settings:
    """Apply the process-wide settings for `device` and return them.

    device:   None: CUDA when available, else the CPU.
    fast_cpu: use bf16 autocast (results differ from fp32 within bf16 rounding); the
              benchmarks' fast settings.
    autocast: bf16 autocast on or off; None: off (float32, as the reference) unless `fast_cpu`.
              On a CPU without native bf16 (`native_bf16`) it is slower than float32:
              said once per process on stderr.
    threads:  torch intra-op threads; None: leave torch's default (one per core).
    allocator: on the CPU, `keep_freed_memory()` (False: leave glibc's malloc as it is).
    """
    device = default_device(device)
    cpu = device.type == "cpu"
    if threads is not None:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    allocator = keep_freed_memory() if cpu and allocator else False
    if autocast is None:
        autocast = fast_cpu
    if autocast:
        _say_slow_bf16(device)
    return Settings(
        device=device,
        autocast=bool(autocast),
        channels_last=cpu,
        allocator=allocator,
        threads=torch.get_num_threads(),
    )


def prepare_model(model: nn.Module, settings: Settings) -> nn.Module:
    """Move `model` to the settings' device and memory layout (in place); returns it.

    Channels-last when the settings ask for it and no convolution of the model runs by FFT
    (those read NCHW frames); the parameters' values and the checkpoints are unchanged.
    """
    model.to(settings.device)
    if settings.channels_last and not uses_fft(model, settings.device):
        model.to(memory_format=torch.channels_last)
    return model


def describe(settings: Settings) -> str:
    """One line for logs."""
    return (
        f"device={settings.device} autocast={settings.autocast} "
        f"channels_last={settings.channels_last} allocator={settings.allocator} "
        f"threads={settings.threads} pid={os.getpid()}"
    )
