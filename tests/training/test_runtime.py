"""The process-wide runtime settings."""

from __future__ import annotations

import platform

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
