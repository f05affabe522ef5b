"""The methods table, ModelConfig, VideoModel and its parts (METHOD.md sections 3-4)."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from tiny_models import small_config, small_model

from gksparse.model.methods import METHODS, get_method
from gksparse.model.video import ClassifierHead, build_model, stretch_frames
from gksparse.ops.sparsity import group_ksparse, group_norms, ksparse

PRETRAINED = sorted(name for name, m in METHODS.items() if m.pretrained)
NOT_PRETRAINED = sorted(name for name, m in METHODS.items() if not m.pretrained)


def batch(t: int, c: int = 1, h: int = 6, w: int = 6, n: int = 2, seed: int = 0):
    return torch.rand((n, t, c, h, w), generator=torch.Generator().manual_seed(seed))


def method_params(names):
    return [pytest.param(n, marks=pytest.mark.vgg) if n == "vgg19" else n for n in names]


# -- every method: build, forward, a few pretraining steps ----------------------------------
def test_methods_table_is_the_papers():
    paper = {
        "wtacnn",
        "wtacrnn",
        "groupwtacnn",
        "groupwtacrnn",
        "denoisingcnn",
        "denoisingcrnn",
        "randominitcnn",
        "randominitcrnn",
        "vgg19",
        "slowgroupwtacnn",
    }
    assert set(METHODS) == paper
    assert set(NOT_PRETRAINED) == {"randominitcnn", "randominitcrnn", "vgg19"}
    for name, m in METHODS.items():
        assert m.recurrent == name.endswith("crnn"), name
        assert (m.target == "next") == m.recurrent, name
        assert (m.target is None) == (name == "vgg19"), name  # randominit*: a random decoder
        # METHOD.md 5.1: Keras clipnorm 1 for these three only (not denoisingcrnn)
        assert m.clipnorm == (1.0 if name in ("wtacrnn", "groupwtacrnn", "randominitcrnn") else 0)
        assert m.whiten == (name != "vgg19"), name  # the reference never whitened for vgg19
        assert (m.input_dropout == 0.3) == name.startswith("denoising"), name
        assert m.sparsity == ("group" if "group" in name else "plain" if "wta" in name else "none")
    assert METHODS["slowgroupwtacnn"].slowness == 1e-4


@pytest.mark.parametrize("t", [5, 9])
@pytest.mark.parametrize("method", PRETRAINED)
def test_every_pretrained_method_forwards_and_pretraining_lowers_the_loss(method, t):
    model = small_model(method)
    x = batch(t)
    logits = model(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    out, code = model.reconstruct(x)
    assert out.shape == x.shape and code.shape == (2, t, 8, 6, 6)

    params = model.trainable("pretrain")
    optimizer = torch.optim.Adam(params, lr=1e-2)

    def loss_eval() -> float:  # without dropout, so the comparison is not noise
        model.eval()
        with torch.no_grad():
            return float(model.pretrain_loss(x))

    before = loss_eval()
    model.train()
    for _ in range(8):
        optimizer.zero_grad()
        loss = model.pretrain_loss(x)
        loss.backward()
        assert all(p.grad is not None for p in params), "every pretrained parameter learns"
        optimizer.step()
    after = loss_eval()
    assert math.isfinite(before) and after < 0.9 * before, (method, t, before, after)


@pytest.mark.parametrize("t", [5, 9])
@pytest.mark.parametrize("method", method_params(NOT_PRETRAINED))
def test_methods_without_pretraining_say_so(method, t):
    kw = dict(height=14, width=14) if method == "vgg19" else {}
    model = small_model(method, **kw)
    x = batch(t, h=kw.get("height", 6), w=kw.get("width", 6))
    assert model(x).shape == (2, 3)
    with pytest.raises(ValueError, match="no pretraining"):
        model.trainable("pretrain")
    if method == "vgg19":
        assert model.decoder is None
        with pytest.raises(ValueError, match="no pretraining"):
            model.reconstruct(x)
        with pytest.raises(ValueError, match="no pretraining"):
            model.pretrain_loss(x)
    else:  # the reference reported the losses of their random decoder
        out, code = model.reconstruct(x)
        assert out.shape == x.shape and code.shape == (2, t, 8, 6, 6)
        assert torch.isfinite(model.pretrain_loss(x))


def test_one_model_serves_every_sequence_length():
    model = small_model("groupwtacrnn").eval()
    x = batch(9)
    full = model.encoder(x)
    torch.testing.assert_close(model.encoder(x[:, :5]), full[:, :5])  # causal, any T
    assert model(x[:, :1]).shape == (2, 3)


# -- ModelConfig ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["groupwtacnn", "groupwtacrnn", "slowgroupwtacnn"])
def test_config_rejects_groups_not_dividing_filters(method):
    for groups in (3, 5, 0, -4):
        with pytest.raises(ValueError, match="must divide filters=8"):
            small_config(method, groups=groups)
    assert small_config(method, groups=8).groups == 8


def test_config_rejects_unknown_methods_naming_the_valid_ones():
    with pytest.raises(ValueError, match="unknown method 'groupwta'") as info:
        small_config("groupwta")
    for name in METHODS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown method"):
        get_method("WTACNN")


def test_config_rejects_k_below_one():
    with pytest.raises(ValueError, match="at least 1"):
        small_config("wtacnn", k_spatial=0)
    with pytest.raises(ValueError, match="at least 1"):
        small_config("groupwtacnn", k_lifetime=0)


def test_config_round_trips_through_a_plain_dict():
    config = small_config("groupwtacrnn", extra={"dataset": "mnistrotated"})
    d = config.to_dict()
    assert d["method"] == "groupwtacrnn" and d["extra"] == {"dataset": "mnistrotated"}
    assert build_model(d).config == config


# -- which parameters each stage trains ------------------------------------------------------
def ids(params) -> set[int]:
    return {id(p) for p in params}


@pytest.mark.parametrize("method", ["groupwtacrnn", "wtacnn", "randominitcrnn"])
def test_trainable_sets(method):
    model = small_model(method)
    enc, head = ids(model.encoder.parameters()), ids(model.head.parameters())
    assert ids(model.trainable("stacked")) == head
    assert ids(model.trainable("finetune")) == enc | head
    if model.decoder is not None:
        dec = ids(model.decoder.parameters())
        if METHODS[method].pretrained:
            assert ids(model.trainable("pretrain")) == enc | dec
        assert not dec & ids(model.trainable("finetune"))
    if METHODS[method].recurrent:
        assert ids(model.encoder.rnn.parameters()) <= ids(model.trainable("finetune"))
    with pytest.raises(ValueError, match="unknown stage"):
        model.trainable("linear")


# -- the classifier head -------------------------------------------------------------------
def test_head_averages_logits_over_real_frames_only():
    torch.manual_seed(0)
    head = ClassifierHead(in_features=2 * 2 * 3, classes=4, dropout=0.3, pool=True).eval()
    h = torch.randn(3, 5, 2, 4, 6)  # (N, T, F, H, W): pooled to 2 x 2 x 3
    per_frame = torch.stack([head(h[:, t : t + 1]) for t in range(5)], dim=1)  # (N, T, classes)
    for t in range(5):  # one frame: max-pool, flatten, dense
        want = head.dense(F.max_pool2d(h[:, t], 2).flatten(1))
        torch.testing.assert_close(per_frame[:, t], want)
    torch.testing.assert_close(head(h), per_frame.mean(1))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    want = torch.stack([per_frame[0].mean(0), per_frame[1, :2].mean(0), per_frame[2, 0]], dim=0)
    torch.testing.assert_close(head(h, mask), want)
    torch.testing.assert_close(head(h, torch.ones(3, 5, dtype=torch.bool)), head(h))
    padded = h.clone()
    padded[1, 2:] = 1e3  # the content of padded frames does not matter
    torch.testing.assert_close(head(padded, mask), head(h, mask))


def test_head_dropout_only_while_training():
    torch.manual_seed(0)
    model = small_model("randominitcnn")
    x = batch(5)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_head_pools_odd_frames_down():
    model = small_model("wtacnn", height=7, width=5)
    assert model.head.dense.in_features == 8 * 3 * 2
    assert model(batch(3, h=7, w=5)).shape == (2, 3)


def test_model_forward_masks_padded_frames():
    model = small_model("wtacrnn").eval()
    x = batch(6)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    padded = x.clone()
    padded[1, 3:] = 0.7
    torch.testing.assert_close(model(padded, mask), model(x, mask))
    torch.testing.assert_close(model(x, mask)[1], model(x[1:, :3])[0])


# -- sparsity in pretraining only ------------------------------------------------------------
@pytest.mark.parametrize("method", ["groupwtacnn", "groupwtacrnn", "wtacnn", "wtacrnn"])
def test_classification_does_not_sparsify(method, monkeypatch):
    model = small_model(method).eval()
    x = batch(5)
    h = model.encoder(x)
    torch.testing.assert_close(model(x), model.head(h))
    assert not torch.allclose(model(x), model.head(model.sparsify(h)))

    def boom(*args, **kwargs):
        raise AssertionError("sparsify called")

    monkeypatch.setattr(model, "_sparse_code", boom)  # sparsify and reconstruct use it
    model(x)  # never reaches the WTA step
    with pytest.raises(AssertionError, match="sparsify called"):
        model.pretrain_loss(x)


@pytest.mark.parametrize(("k_spatial", "k_lifetime"), [(1, 1), (2, 3)])
def test_group_code_is_spatial_then_lifetime_group_ksparse(k_spatial, k_lifetime):
    model = small_model("groupwtacnn", k_spatial=k_spatial, k_lifetime=k_lifetime).eval()
    x = batch(5, n=3)
    with torch.no_grad():
        h = model.encoder(x)
        _, code = model.reconstruct(x)
    want = group_ksparse(h, 4, k_spatial, (3, 4), 2, fast=False)
    want = group_ksparse(want, 4, k_lifetime, (0, 1), 2, fast=False)
    assert torch.equal(code, want)
    alive = group_norms(code, 4, 2) > 1e-3  # (N, T, G, H, W): group on at a point
    assert alive.any()
    assert alive.flatten(3).sum(-1).max() <= k_spatial  # per sample, frame and group
    assert alive.flatten(0, 1).sum(0).max() <= k_lifetime  # per group and position
    # whole groups switch on and off together: each group is either all h or all zero
    same = (code == h).unflatten(2, (4, 2)).all(3)
    off = (code == 0).unflatten(2, (4, 2)).all(3)
    assert (same | off).all()


@pytest.mark.parametrize("method", ["groupwtacnn", "wtacnn"])
def test_code_of_black_background_videos_keeps_k_winners(method):
    # Rotated MNIST and COIL-100 frames are mostly black. Once the conv biases are nonzero,
    # every all-black neighbourhood gives the same activation vector, so the lifetime contest
    # at such a position is an exact tie among all N*T entries. METHOD.md 5.1: keep
    # k_lifetime of them (the first ones, as tf.nn.top_k), not all.
    model = small_model(method, height=8, width=8).eval()
    with torch.no_grad():
        for conv in model.encoder.convs:
            conv.bias.fill_(0.05)
    x = torch.zeros(3, 5, 1, 8, 8)
    x[1:, :, :, 5:, 5:] = batch(5, n=2, h=3, w=3)  # ink in one corner; video 0 all black
    with torch.no_grad():
        _, code = model.reconstruct(x)
    on = code != 0 if method == "wtacnn" else group_norms(code, 4, 2) > 1e-3
    assert on.flatten(0, 1).sum(0).max().item() <= 1  # k_lifetime = 1 per position
    assert on.flatten(3).sum(-1).max().item() <= 1  # k_spatial = 1 per frame


@pytest.mark.parametrize("method", ["wtacnn", "wtacrnn"])
def test_plain_code_is_spatial_then_lifetime_ksparse(method):
    model = small_model(method, k_spatial=2, k_lifetime=2).eval()
    x = batch(5, n=3)
    with torch.no_grad():
        h = model.encoder(x)
        _, code = model.reconstruct(x)
    want = ksparse(ksparse(h, 2, (3, 4), fast=False), 2, (0, 1), fast=False)
    assert torch.equal(code, want)
    assert (code != 0).sum().item() < (h != 0).sum().item()


def test_nospatial_keeps_every_position():
    # nospatial: k_spatial = H * W, only the lifetime step remains
    model = small_model("groupwtacnn", k_spatial=36).eval()
    x = batch(5)
    with torch.no_grad():
        h = model.encoder(x)
        _, code = model.reconstruct(x)
    assert torch.equal(code, group_ksparse(h, 4, 1, (0, 1), 2, fast=False))


@pytest.mark.parametrize("method", ["denoisingcnn", "denoisingcrnn"])
def test_denoising_code_is_dense_and_input_dropout_trains_only(method):
    model = small_model(method).eval()
    x = batch(5)
    with torch.no_grad():
        _, code = model.reconstruct(x)
        assert torch.equal(code, model.encoder(x))
        model.train()
        assert not torch.equal(model.encoder(x), model.encoder(x))  # dropout on the pixels
        model.eval()
        assert torch.equal(model.encoder(x), model.encoder(x))


def test_sparsify_zeroes_padded_frames_before_the_lifetime_contest():
    model = small_model("groupwtacnn").eval()
    x = batch(5)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    loud = x.clone()
    loud[1, 2:] = 50.0  # padded frames with huge activations must not win
    with torch.no_grad():
        _, code = model.reconstruct(loud, mask)
        _, ref = model.reconstruct(x, mask)
    assert torch.equal(code[1, 2:], torch.zeros_like(code[1, 2:]))
    assert torch.equal(code, ref)


def test_slowness_penalty_on_group_norms():
    model = small_model("slowgroupwtacnn").eval()
    x = batch(5)
    with torch.no_grad():
        out, code = model.reconstruct(x)
        g = group_norms(code, 4, channel_dim=2)
        want = (out - x).square().mean() + 1e-4 * (g[:, 1:] - g[:, :-1]).abs().mean()
        torch.testing.assert_close(model.pretrain_loss(x), want)
        plain = small_model("groupwtacnn").eval()  # same seed, same weights
        assert model.pretrain_loss(x) > plain.pretrain_loss(x)


# -- initialisation --------------------------------------------------------------------------
def glorot_limit(w: torch.Tensor) -> float:
    receptive = w[0, 0].numel() if w.ndim > 2 else 1
    return math.sqrt(6 / ((w.shape[0] + w.shape[1]) * receptive))


def test_initialisation_glorot_orthogonal_zero_bias():
    model = small_model("groupwtacrnn", filters=16, groups=4, enc_kernel=3, dec_kernel=5)
    weights = [conv.weight for conv in model.encoder.convs]
    weights += [model.encoder.rnn.weight, model.decoder.weight, model.head.dense.weight]
    for w in weights:
        limit = glorot_limit(w)
        assert w.abs().max() <= limit
        if w.numel() >= 1000:  # uniform on [-limit, limit]
            assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.1)
    u = model.encoder.rnn.recurrent_weight.detach().reshape(16, 16 * 9)
    torch.testing.assert_close(u @ u.T, torch.eye(16), rtol=0, atol=1e-5)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name


# -- vgg19 ---------------------------------------------------------------------------------
def test_vgg19_without_torchvision_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` fails
    with pytest.raises(ImportError, match=r"gksparse\[vgg\]"):
        build_model(small_config("vgg19", height=14, width=14))


@pytest.fixture(scope="module")
def vgg_grey():
    return small_model("vgg19", height=14, width=14, in_channels=1).eval()


@pytest.mark.vgg
@pytest.mark.parametrize("t", [5, 9])
def test_vgg19_forward_grey_14x14_and_rgb_32x32(vgg_grey, t):
    assert vgg_grey.head.dense.in_features == 512 and not vgg_grey.head.pool
    with torch.no_grad():
        assert vgg_grey(batch(t, c=1, h=14, w=14)).shape == (2, 3)
        rgb = small_model("vgg19", height=32, width=32, in_channels=3).eval()
        logits = rgb(batch(t, c=3, h=32, w=32))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@pytest.mark.vgg
def test_vgg19_grey_is_repeated_and_padded_bottom_right(vgg_grey):
    x = batch(2, c=1, h=14, w=14)
    with torch.no_grad():
        feats = vgg_grey.encoder(x)
        assert feats.shape == (2, 2, 512, 1, 1)
        as_rgb = vgg_grey.encoder(x.expand(-1, -1, 3, -1, -1))
        padded = vgg_grey.encoder(F.pad(x, (0, 18, 0, 18)))  # zeros bottom/right to 32x32
        shifted = vgg_grey.encoder(F.pad(x, (18, 0, 18, 0)))
    torch.testing.assert_close(as_rgb, feats)
    torch.testing.assert_close(padded, feats)
    assert not torch.allclose(shifted, feats)


def test_frames_for_vgg19_are_stretched_to_their_range_and_quantised():
    f = torch.tensor([[[[0.2, 0.4], [0.6, 0.3]]], [[[-1.0, -1.0], [-1.0, -1.0]]]])  # (2,1,2,2)
    got = stretch_frames(f)
    # frame 0: (x - 0.2) / 0.4 * 255, truncated as uint8 does: 0, 127, 255, 63
    want = torch.tensor([[[[0, 127], [255, 63]]], [[[0, 0], [0, 0]]]]) / 255
    torch.testing.assert_close(got, want.float())
    scaled = stretch_frames(3 * f[:1] + 7)  # any affine contrast gives the same frame
    torch.testing.assert_close(scaled, got[:1])


@pytest.mark.vgg
def test_vgg19_sees_each_frame_stretched_then_normalised_for_imagenet(vgg_grey):
    seen = []
    hook = vgg_grey.encoder.features.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x = batch(2, c=1, h=14, w=14) * 0.01 - 3.0  # dim, shifted frames (e.g. whitened)
    with torch.no_grad():
        vgg_grey.encoder(x)
    hook.remove()
    f = seen[0] * vgg_grey.encoder.std + vgg_grey.encoder.mean  # undo ImageNet's normalisation
    assert f.shape == (4, 3, 32, 32)
    lo, hi = f.amin(dim=(1, 2, 3)), f.amax(dim=(1, 2, 3))
    torch.testing.assert_close(hi, torch.ones(4))  # each frame stretched to 0..1
    torch.testing.assert_close(lo, torch.zeros(4))
    torch.testing.assert_close(f * 255, (f * 255).round(), atol=1e-4, rtol=0)  # 0..255 steps


@pytest.mark.vgg
def test_vgg19_trainable_sets(vgg_grey):
    head = ids(vgg_grey.head.parameters())
    last = vgg_grey.encoder.last_conv
    convs = [m for m in vgg_grey.encoder.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 16 and last is convs[-1]  # block 5, conv 4
    assert (last.in_channels, last.out_channels) == (512, 512)
    assert ids(vgg_grey.trainable("stacked")) == head
    assert ids(vgg_grey.trainable("finetune")) == ids(last.parameters()) | head
