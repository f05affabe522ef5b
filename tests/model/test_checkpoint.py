"""Checkpoints rebuild their own model, load with weights_only and are written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import small_model as tiny_small_model

from gksparse.model.checkpoint import atomic_save, load_checkpoint, save_checkpoint


def small_model(method: str = "groupwtacrnn", seed: int = 0, **overrides):
    kw = {"dec_kernel": 5, "k_spatial": 2, "extra": {"dataset": "toy"}, **overrides}
    return tiny_small_model(method, seed, **kw)


def perturb(model: torch.nn.Module) -> None:
    """Move every weight away from its initial value (biases start at zero)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)


@pytest.mark.parametrize("method", ["groupwtacrnn", "wtacnn", "denoisingcnn", "randominitcrnn"])
def test_save_then_load_rebuilds_an_equal_model(tmp_path, method):
    model = small_model(method)
    perturb(model)
    path = tmp_path / "run" / "model.pt"  # the folder is created
    save_checkpoint(path, model, epoch=3, losses=[0.5, 0.25], note="pretrained")
    loaded, extra = load_checkpoint(path)
    assert extra == {"epoch": 3, "losses": [0.5, 0.25], "note": "pretrained"}
    assert loaded.config == model.config
    assert type(loaded) is type(model)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    model.eval(), loaded.eval()
    x = torch.rand(2, 5, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        if model.decoder is not None:
            assert torch.equal(loaded.pretrain_loss(x), model.pretrain_loss(x))
    # a fresh model of the same config differs: the weights really came from the file
    assert not torch.equal(small_model(method, seed=1)(x), loaded(x))


def test_checkpoint_loads_with_weights_only(tmp_path, monkeypatch):
    model = small_model()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, epoch=1)
    raw = torch.load(path, weights_only=True)  # only tensors and plain values inside
    assert set(raw) == {"config", "state_dict", "extra"}
    assert raw["config"] == model.config.to_dict()
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(path)
    assert calls == [True]


def test_load_to_a_device(tmp_path):
    model = small_model()
    save_checkpoint(tmp_path / "m.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "m.pt", map_location="cpu")
    assert all(p.device.type == "cpu" for p in loaded.parameters())


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    model = small_model()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    save_checkpoint(path, model, epoch=2)  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert load_checkpoint(path)[1] == {"epoch": 2}


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, small_model(), epoch=1)
    old = path.read_bytes()

    def half_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"x": 1}, path)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "new.pt", small_model())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert path.read_bytes() == old


@pytest.mark.parametrize(
    "value",
    [np.float64(0.5), np.int64(3), np.zeros(2), Path("/x"), {"best": [np.float32(1)]}, object()],
)
def test_values_that_would_not_load_back_are_refused_at_save(tmp_path, value):
    # weights_only loading refuses numpy scalars and arbitrary objects: such a checkpoint
    # would be written fine and then fail to load as "corrupt". Refuse it when saving.
    path = tmp_path / "model.pt"
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint(path, small_model(), value=value)
    model = small_model()
    model.config.extra["seen"] = value
    with pytest.raises(TypeError, match="the model config"):
        save_checkpoint(path, model)
    assert not list(tmp_path.iterdir())
    ok = {"t": torch.ones(2), "n": None, "xs": (1, 2.5, "a", True), "d": {"k": [1]}}
    save_checkpoint(path, small_model(), **ok)
    extra = load_checkpoint(path)[1]
    assert torch.equal(extra.pop("t"), ok.pop("t")) and extra == ok


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path)  # a folder is not a checkpoint


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "not_a_checkpoint", "pickle"])
def test_corrupt_checkpoint_is_a_clear_runtime_error(tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint at all" * 10)
    elif kind == "truncated":
        save_checkpoint(path, small_model())
        path.write_bytes(path.read_bytes()[:-200])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_a_checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)  # a valid file of something else
    else:
        torch.save({"config": object()}, path)  # arbitrary objects: refused by weights_only
    with pytest.raises(RuntimeError, match="corrupt or not a gksparse checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_checkpoint_from_another_config_does_not_load_silently(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, small_model())
    raw = torch.load(path, weights_only=True)
    raw["config"]["filters"] = 16  # the weights no longer fit the config
    torch.save(raw, path)
    with pytest.raises(RuntimeError):
        load_checkpoint(path)


@pytest.mark.vgg
def test_vgg19_checkpoint_round_trip_without_downloading(tmp_path):
    model = small_model("vgg19", height=14, width=14)
    perturb(model.head)
    model.config.vgg_weights = "IMAGENET1K_V1"  # as trained; loading must not fetch it again
    save_checkpoint(tmp_path / "vgg.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "vgg.pt")
    assert loaded.config.vgg_weights == "IMAGENET1K_V1"
    x = torch.rand(2, 3, 1, 14, 14, generator=torch.Generator().manual_seed(0))
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
