"""The process-wide runtime settings."""

from __future__ import annotations

import platform

import pytest
import torch

from gksparse.model.video import ModelConfig, build_model
from gksparse.training import runtime


def test_runtime_configure_and_prepare_model():
    settings = runtime.configure("cpu")
    assert settings.device == torch.device("cpu")
    assert not settings.autocast  # fp32 unless asked
    assert runtime.configure("cpu", fast_cpu=True).autocast
    assert not runtime.configure("cpu", fast_cpu=True, autocast=False).autocast
    assert isinstance(settings.allocator, bool)
    direct = build_model(ModelConfig("groupwtacnn", 1, 8, 8, 5, filters=8, groups=4))
    runtime.prepare_model(direct, settings)
    assert direct.encoder.convs[1].weight.is_contiguous(memory_format=torch.channels_last)
    # 5 x 5 kernels on 32 filters run by FFT, which reads NCHW frames: no channels-last
    fft = build_model(ModelConfig("groupwtacnn", 1, 8, 8, 5, filters=32, enc_kernel=5, groups=4))
    runtime.prepare_model(fft, settings)
    assert fft.encoder.convs[1].weight.is_contiguous()
    assert "threads=" in runtime.describe(settings)


def test_allocator_setting_is_glibc_only():
    assert runtime.keep_freed_memory() == (
        platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    )
    assert not runtime.configure("cpu", allocator=False).allocator
    assert runtime.release_freed_memory() == runtime.keep_freed_memory()


def fake_cpu(monkeypatch, arch: str = "x86_64", **features: bool) -> None:
    """Make torch report a CPU of `arch` with (only) `features`; the slow-bf16 line unsaid."""
    caps = {"architecture": arch, **features}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    monkeypatch.setattr(runtime, "_said_slow_bf16", False)
    monkeypatch.delenv("RANK", raising=False)
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)


def slow_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if runtime.SLOW_BF16 in line]


def test_bf16_autocast_on_a_cpu_without_native_bf16_is_said_once(monkeypatch, capsys):
    fake_cpu(monkeypatch, avx512_f=True, avx512_bf16=False, amx_bf16=False)
    assert not runtime.native_bf16("cpu")
    assert runtime.bf16_case("cpu") == "emulated (slower than fp32 here)"
    runtime.configure("cpu", allocator=False)  # fp32: nothing to say
    assert slow_lines(capsys.readouterr().err) == []
    runtime.configure("cpu", autocast=True, allocator=False)
    runtime.configure("cpu", fast_cpu=True, allocator=False)  # once per process
    err = capsys.readouterr().err
    assert slow_lines(err) == [f"gksparse: {runtime.SLOW_BF16}"]
    assert "autocast=False is faster here" in err


def test_bf16_autocast_on_a_cpu_with_native_bf16_says_nothing(monkeypatch, capsys):
    for features in ({"avx512_bf16": True}, {"amx_bf16": True}):
        fake_cpu(monkeypatch, **features)
        assert runtime.native_bf16("cpu")
        assert runtime.bf16_case("cpu") == "native"
        assert runtime.configure("cpu", autocast=True, allocator=False).autocast
    fake_cpu(monkeypatch, "arm64", bf16=True)  # an Arm CPU with the BF16 extension
    assert runtime.native_bf16("cpu")
    assert slow_lines(capsys.readouterr().err) == []


@pytest.mark.parametrize(
    ("name", "isa", "native"),
    [
        ("ONEDNN_MAX_CPU_ISA", "avx512_core", False),  # how bench/train_step.py times both
        ("DNNL_MAX_CPU_ISA", "AVX2", False),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", True),
        ("ONEDNN_MAX_CPU_ISA", "ALL", True),
    ],
)
def test_onednn_capped_below_bf16_emulates_it(monkeypatch, capsys, name, isa, native):
    fake_cpu(monkeypatch, avx512_bf16=True, amx_bf16=True)
    monkeypatch.setenv(name, isa)
    assert runtime.native_bf16("cpu") is native
    runtime.configure("cpu", autocast=True, allocator=False)
    assert bool(slow_lines(capsys.readouterr().err)) is not native


def test_the_slow_bf16_line_is_for_cpus_only(monkeypatch, capsys):
    fake_cpu(monkeypatch)
    runtime._say_slow_bf16(torch.device("cuda"))  # CUDA: not this line's business
    runtime._say_slow_bf16(torch.device("meta"))
    assert slow_lines(capsys.readouterr().err) == []
    monkeypatch.setenv("RANK", "1")  # under torchrun rank 0 alone says it
    runtime._say_slow_bf16(torch.device("cpu"))
    assert slow_lines(capsys.readouterr().err) == []
    assert runtime.native_bf16("meta")
    monkeypatch.setattr(torch.cpu, "get_capabilities", dict)  # torch tells nothing: no line
    assert runtime.native_bf16("cpu")
