"""The training engine (train.py): losses, clipping, early stopping, divergence, freezing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import small_model as tiny_small_model
from torch import nn

from gksparse.data.containers import Videos
from gksparse.model.video import masked_mse
from gksparse.training import engine
from gksparse.training.engine import (
    ClassificationLoss,
    Stage,
    TrainingDiverged,
    balanced_class_weights,
    batches,
    epoch_line,
    evaluate,
    fit,
    pretrain_loss,
)

CPU = torch.device("cpu")


class Scalar(nn.Module):
    """One parameter `w`; the loss pulls it towards the batch's mean pixel value."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))


def pull(model: nn.Module, batch) -> torch.Tensor:
    return (model.w - batch["video"].mean()).square()


def constant_videos(value: float, n: int = 4) -> Videos:
    return Videos(np.full((n, 1, 1, 1, 1), value, dtype=np.float32))


def small_model(method: str = "wtacnn", seed: int = 0):
    return tiny_small_model(method, seed)


def labeled(n: int = 6, t: int = 4, seed: int = 0, mask: bool = False) -> Videos:
    rng = np.random.default_rng(seed)
    videos = rng.random((n, t, 1, 6, 6), dtype=np.float32)
    labels = np.arange(n) % 3
    m = None
    if mask:
        m = np.ones((n, t), dtype=bool)
        m[::2, t // 2 :] = False
    return Videos(videos, labels, m)


# -- class weights -------------------------------------------------------------------------
def test_balanced_class_weights_hand_case():
    w = balanced_class_weights(np.array([0, 0, 0, 1, 2, 2]), 3)
    # n / (classes * count) = 6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2)
    torch.testing.assert_close(w, torch.tensor([2 / 3, 2.0, 1.0]))
    assert w.dtype == torch.float32


def test_balanced_class_weights_formula():
    labels = np.random.default_rng(0).integers(0, 5, size=200)
    counts = np.bincount(labels, minlength=5)
    assert (counts > 0).all()
    w = balanced_class_weights(labels, 5)
    torch.testing.assert_close(w, torch.tensor(200 / (5 * counts), dtype=torch.float32))
    # weighted counts are equal: every class carries the same total weight
    torch.testing.assert_close(
        w * torch.tensor(counts, dtype=torch.float32), torch.full((5,), 40.0)
    )


def test_balanced_class_weights_absent_class_gets_zero():
    w = balanced_class_weights(np.array([0, 0, 2]), 4)
    torch.testing.assert_close(w, torch.tensor([3 / (2 * 2), 0.0, 3 / (2 * 1), 0.0]))


def test_weighted_loss_divides_by_the_batch_size_as_keras():
    # Two samples, weights 2 and 0.5: Keras gives (2 * l0 + 0.5 * l1) / 2, not / (2 + 0.5).
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    l0 = math.log(1 + math.exp(-2.0))  # cross-entropy of sample 0
    l1 = math.log(1 + math.exp(-1.0))
    got = ClassificationLoss(torch.tensor([2.0, 0.5])).from_logits(logits, labels)
    assert got.item() == pytest.approx((2 * l0 + 0.5 * l1) / 2, rel=1e-6)
    plain = ClassificationLoss().from_logits(logits, labels)
    assert plain.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    assert got.item() != pytest.approx(
        F.cross_entropy(logits, labels, weight=torch.tensor([2.0, 0.5])).item(), rel=1e-3
    )


def test_fit_clips_the_global_norm_of_all_gradients():
    # With plain SGD at lr 1 a parameter moves by exactly its (clipped) gradient. Keras'
    # clipnorm scales ALL gradients by clipnorm / global norm: here 0.5 / 200.00003.
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(4))
    model.b = nn.Parameter(torch.zeros(2))

    def loss(m, batch):
        return 100 * m.a.sum() + 0.1 * m.b.sum()

    stage = Stage(
        "clip", [model.a, model.b], loss, 1, 4, optimizer="sgd", lr=1.0, momentum=0.0, clipnorm=0.5
    )
    fit(model, stage, constant_videos(0.0), progress=False)
    norm = math.sqrt(4 * 100**2 + 2 * 0.1**2)
    torch.testing.assert_close(model.a.detach(), torch.full((4,), -100 * 0.5 / norm))
    torch.testing.assert_close(model.b.detach(), torch.full((2,), -0.1 * 0.5 / norm))
    whole = torch.cat([model.a.detach(), model.b.detach()]).norm().item()
    assert whole == pytest.approx(0.5, rel=1e-5)


@pytest.mark.parametrize("clipnorm", [None, 0.0])
def test_no_clipnorm_leaves_the_gradients(clipnorm):
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(3))
    stage = Stage(
        "x", [model.a], lambda m, b: 10 * m.a.sum(), 1, 4, "sgd", 1.0, 0.0, clipnorm=clipnorm
    )
    fit(model, stage, constant_videos(0.0), progress=False)
    torch.testing.assert_close(model.a.detach(), torch.full((3,), -10.0))


def test_fit_continues_a_given_optimizer():
    # Two fits of one step each with one SGD optimizer carried over equal one fit of two
    # steps: the momentum buffer goes on (as the reference's classifier between budgets).
    def run(split: bool) -> torch.Tensor:
        model = Scalar()
        stage = Stage("s", [model.w], pull, 2 if not split else 1, 4, "sgd", 0.1, 0.9)
        optimizer = stage.make_optimizer()
        for _ in range(2 if split else 1):
            fit(model, stage, constant_videos(1.0), progress=False, optimizer=optimizer)
        return model.w.detach().clone()

    torch.testing.assert_close(run(split=True), run(split=False))
    model = Scalar()  # and a fresh optimizer per fit differs: no momentum in step 2
    stage = Stage("s", [model.w], pull, 1, 4, "sgd", 0.1, 0.9)
    for _ in range(2):
        fit(model, stage, constant_videos(1.0), progress=False)
    assert not torch.allclose(model.w.detach(), run(split=True))


def test_classifier_records_have_the_validation_accuracy_and_epoch_lines(capsys):
    model = small_model()
    stage = Stage("stacked", model.trainable("stacked"), ClassificationLoss(), 2, 3, lr=1e-2)
    history = fit(model, stage, labeled(), labeled(seed=1), progress=True, desc="n=6 stacked")
    assert [set(r) for r in history] == [
        {"epoch", "loss", "val_loss", "val_accuracy", "seconds"}
    ] * 2
    assert all(0 <= r["val_accuracy"] <= 1 for r in history)
    lines = [line for line in capsys.readouterr().out.splitlines() if "epoch" in line]
    assert [line.split(":")[0] for line in lines] == [f"n=6 stacked epoch {e}/2" for e in (1, 2)]
    assert "val_accuracy" in lines[0] and "val_loss" in lines[0]
    assert epoch_line("p", {"epoch": 3, "loss": 0.5}, 9) == "p epoch 3/9: loss 0.5"


def test_early_stopping_restores_best_val_weights():
    # SGD on (w - 1)^2 from w = 0 with lr 0.1: w_e = 1 - 0.8^e = 0.2, 0.36, 0.488, 0.5904...
    # The validation target is 0.3, so the val loss (w - 0.3)^2 is best after epoch 2
    # and worse after that; patience 2 stops after epoch 4 and restores w = 0.36.
    model = Scalar()
    stage = Stage("toy", [model.w], pull, 20, 4, optimizer="sgd", lr=0.1, momentum=0.0, patience=2)
    history = fit(model, stage, constant_videos(1.0), constant_videos(0.3), progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    want_val = [(1 - 0.8**e - 0.3) ** 2 for e in (1, 2, 3, 4)]
    assert [r["val_loss"] for r in history] == pytest.approx(want_val, rel=1e-5)
    assert [r["loss"] for r in history] == pytest.approx([0.8 ** (2 * e) for e in range(4)])
    assert model.w.item() == pytest.approx(0.36, rel=1e-6)


def test_without_patience_training_runs_all_epochs_and_keeps_the_last_weights():
    model = Scalar()
    stage = Stage("toy", [model.w], pull, 6, 2, optimizer="sgd", lr=0.1, momentum=0.0)
    seen = []
    history = fit(
        model,
        stage,
        constant_videos(1.0),  # 2 steps per epoch
        constant_videos(0.3),
        progress=False,
        on_epoch=lambda e, r: seen.append((e, dict(r))),
    )
    assert len(history) == 6 and [e for e, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert seen[-1][1] == history[-1]
    assert model.w.item() == pytest.approx(1 - 0.8**12, rel=1e-5)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_loss_raises_training_diverged(bad):
    model = Scalar()
    model.extra = nn.Parameter(torch.ones(2), requires_grad=False)

    def loss(m, batch):
        return m.w * 0 + bad

    stage = Stage("pretrain", [model.w], loss, epochs=3, batch_size=2)
    with pytest.raises(
        TrainingDiverged, match=r"pretrain loss became (nan|inf) at epoch 1, step 1"
    ):
        fit(model, stage, constant_videos(1.0), progress=False)
    assert issubclass(TrainingDiverged, RuntimeError)
    assert model.w.item() == 0.0  # no step was taken with the bad loss
    assert model.w.requires_grad and not model.extra.requires_grad  # flags restored


# float32 from four 0x7f bytes, what a cache file overwritten with 0x7f holds: 3.4e38
BYTES_7F = float(np.frombuffer(b"\x7f" * 4, np.float32)[0])


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (np.nan, r"the input batch holds 3 NaN values, so the data, not the training, is at"),
        (np.inf, r"the input batch holds 3 infinite values, so"),
        (BYTES_7F, r"holds 3 values up to 3\.4e\+38, far outside the data's range \(videos lie"),
    ],
    ids=["nan", "inf", "0x7f"],
)
def test_bad_input_videos_are_blamed_on_the_data_not_the_learning_rate(bad, named):
    model = small_model()
    videos = labeled()
    videos.videos[2, 1, 0, 3, :3] = bad  # e.g. a damaged cache file, or a negative zca_epsilon
    stage = Stage("pretrain", model.trainable("pretrain"), pretrain_loss, 1, 6)
    with pytest.raises(TrainingDiverged, match=named) as e:
        fit(model, stage, videos, progress=False)
    message = str(e.value)
    assert message.startswith("the pretrain loss became ")
    assert message.endswith(
        "check it or generate it again (remove the cached videos with "
        "`python -m gksparse.cache clear`, and check zca_epsilon, which must be >= 0)."
    )
    assert "learning rate" not in message


def test_bad_input_on_another_rank_is_named_on_every_rank(monkeypatch):
    # Under a process group every rank sees the same non-finite global loss and gathers the
    # counts of all shards: this rank's shard is clean, the other holds 2 NaN and 1e5.
    monkeypatch.setattr(engine.distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(engine.distributed, "all_gather_object", lambda own: [own, (2, 0, 1, 1e5)])
    batch = {"video": torch.full((2, 1, 1, 2, 2), 0.5), "mask": None, "label": None}
    message = engine._diverged("finetune", math.nan, 3, 7, batch)
    assert message.startswith(
        "the finetune loss became nan at epoch 3, step 7: the input batch holds 2 NaN values "
        "and 1 value up to 1e+05, far outside"
    )


@pytest.mark.parametrize("value", [1.0, -60.0], ids=["raw", "whitened"])
def test_a_huge_learning_rate_on_clean_data_keeps_the_learning_rate_sentence(value):
    # SGD on (w - v)^2 from w = 0 with lr 1e20: w = 2e20 v after step 1; step 2's loss
    # (2e20 v - v)^2 overflows float32. Inputs of a few tens are whitened data, not damage.
    model = Scalar()
    stage = Stage("pretrain", [model.w], pull, 1, 2, optimizer="sgd", lr=1e20, momentum=0.0)
    with pytest.raises(TrainingDiverged) as e:
        fit(model, stage, constant_videos(value), progress=False)
    assert str(e.value) == (
        "the pretrain loss became inf at epoch 1, step 2; lower the learning rate, enable "
        "clipping (clipnorm=1) or check the data."
    )


def test_stacked_stage_trains_only_the_head_and_restores_flags():
    model = small_model("groupwtacrnn")
    model.decoder.bias.requires_grad_(False)  # an unusual flag that must survive
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = labeled()
    stage = Stage("stacked", model.trainable("stacked"), ClassificationLoss(), 2, 3, lr=1e-2)
    seen_flags = []

    def spy(epoch, record):
        seen_flags.append({n for n, p in model.named_parameters() if p.requires_grad})

    fit(model, stage, data, data, progress=False, on_epoch=spy)
    assert seen_flags[0] == {"head.dense.weight", "head.dense.bias"}  # frozen while training
    for name, p in model.named_parameters():
        if name.startswith("head."):
            assert not torch.equal(p, before[name]), name
        else:
            assert torch.equal(p, before[name]), name
            assert p.grad is None, name  # not even a gradient was computed
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_finetune_stage_trains_encoder_and_head_not_decoder():
    model = small_model("wtacrnn")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = labeled()
    stage = Stage(
        "finetune",
        model.trainable("finetune"),
        ClassificationLoss(),
        epochs=1,
        batch_size=3,
        optimizer="sgd",
        lr=1e-2,
    )
    fit(model, stage, data, progress=False)
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        if name.startswith("decoder."):
            assert not changed, name
        elif name.endswith("weight"):
            assert changed, name


def test_fit_pretraining_lowers_the_loss_on_padded_videos():
    model = small_model("groupwtacnn")
    data = labeled(mask=True)
    stage = Stage("pretrain", model.trainable("pretrain"), pretrain_loss, 4, 3, lr=1e-2)
    loss0 = evaluate(model, data, pretrain_loss, 3, CPU)["loss"]
    history = fit(model, stage, data, data, progress=False)
    assert history[-1]["val_loss"] < loss0
    assert set(history[0]) == {"epoch", "loss", "val_loss", "seconds"}
    assert all(r["seconds"] > 0 for r in history)


# -- masked losses ---------------------------------------------------------------------------
def test_masked_mse_hand_case():
    out = torch.zeros(2, 3, 1, 1, 2)
    target = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0])
    target = target.view(2, 3, 1, 1, 2)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # real frames hold 1, 2, 3, 4 (sample 0) and 7, 8 (sample 1)
    want = (1 + 4 + 9 + 16 + 49 + 64) / 6
    assert masked_mse(out, target, mask).item() == pytest.approx(want)
    assert masked_mse(out, target, None).item() == pytest.approx(
        sum(i * i for i in range(1, 13)) / 12
    )


@pytest.mark.parametrize(
    "method",
    ["wtacnn", "wtacrnn", "groupwtacnn", "groupwtacrnn", "denoisingcrnn", "slowgroupwtacnn"],
)
def test_pretrain_loss_ignores_padded_frames(method):
    model = small_model(method).eval()
    data = labeled(n=4, t=5, mask=True)
    batch = next(batches(data, 4, CPU))
    changed = dict(batch)
    video = batch["video"].clone()
    pad = ~batch["mask"]
    assert pad.any()
    video[pad] = torch.rand(video[pad].shape) * 10  # new content, large enough to win
    changed["video"] = video
    with torch.no_grad():
        a, b = pretrain_loss(model, batch), pretrain_loss(model, changed)
        unmasked = pretrain_loss(model, {**changed, "mask": None})
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert unmasked.item() != pytest.approx(a.item(), rel=1e-3)  # the padding would matter


def frames_equal_to_time(t: int, n: int = 2) -> torch.Tensor:
    """Frame t of every video is constant 0.5 * t."""
    return (0.5 * torch.arange(t, dtype=torch.float32)).view(1, t, 1, 1, 1).expand(n, t, 1, 6, 6)


@pytest.mark.parametrize(("method", "want"), [("wtacnn", 0.0), ("wtacrnn", 0.25)])
def test_next_frame_target_is_shifted_by_one(method, want, monkeypatch):
    # With a decoder that returns its input, reconstruction is perfect and next-frame
    # prediction misses by the difference between consecutive frames (0.5, squared 0.25).
    model = small_model(method)
    monkeypatch.setattr(model, "reconstruct", lambda x, mask=None, global_lifetime=False: (x, x))
    x = frames_equal_to_time(5)
    assert model.pretrain_loss(x).item() == pytest.approx(want)
    padded = x.clone()
    padded[:, 3:] = 100.0
    mask = torch.tensor([[True] * 3 + [False] * 2] * 2)
    assert model.pretrain_loss(padded, mask).item() == pytest.approx(want)  # pairs (0,1), (1,2)


def test_next_frame_loss_on_a_real_model():
    model = small_model("groupwtacrnn").eval()
    x = torch.rand(2, 5, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, _ = model.reconstruct(x)
        torch.testing.assert_close(model.pretrain_loss(x), (out[:, :-1] - x[:, 1:]).square().mean())


# -- evaluate and batches ------------------------------------------------------------------
class SignClassifier(nn.Module):
    """Logits (v, -v) from the mean pixel v of each video; records its training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.modes: list[bool] = []

    def forward(self, video, mask=None):
        self.modes.append(self.training)
        v = video.mean(dim=(1, 2, 3, 4))
        return torch.stack([v, -v], dim=1) + self.p


def test_evaluate_accuracy_and_loss():
    values = np.array([1.0, 2.0, -1.0, -3.0, 0.5], dtype=np.float32)
    videos = np.broadcast_to(values.reshape(5, 1, 1, 1, 1), (5, 2, 1, 2, 2)).copy()
    labels = np.array([0, 1, 1, 1, 0])  # predictions 0, 0, 1, 1, 0: 4 of 5 right
    model = SignClassifier().train()
    out = evaluate(model, Videos(videos, labels), ClassificationLoss(), 2, CPU, accuracy=True)
    assert out["accuracy"] == pytest.approx(0.8)
    logits = torch.stack([torch.tensor(values), -torch.tensor(values)], dim=1)
    want = F.cross_entropy(logits, torch.tensor(labels)).item()
    assert out["loss"] == pytest.approx(want, rel=1e-6)  # batches of 2, 2, 1: weighted mean
    assert model.modes == [False, False, False] and model.training  # eval, then restored
    loss_only = evaluate(model, Videos(videos, labels), ClassificationLoss(), 5, CPU)
    assert set(loss_only) == {"loss"} and loss_only["loss"] == pytest.approx(want, rel=1e-6)


def test_batches_cover_every_video_once_with_aligned_labels_and_masks():
    n = 7
    videos = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1, 1) * np.ones((1, 2, 1, 1, 1))
    mask = np.ones((n, 2), dtype=bool)
    mask[:, 1] = np.arange(n) % 2 == 0
    data = Videos(videos.astype(np.float32), np.arange(n), mask)
    for shuffle in (False, True):
        g = torch.Generator().manual_seed(0)
        seen = []
        for b in batches(data, 3, CPU, shuffle=shuffle, generator=g):
            assert b["video"].dtype == torch.float32 and b["label"].dtype == torch.long
            assert b["mask"].dtype == torch.bool
            ids = b["video"][:, 0, 0, 0, 0].long()
            assert torch.equal(ids, b["label"])
            assert torch.equal(b["mask"][:, 1], ids % 2 == 0)
            seen += ids.tolist()
        assert sorted(seen) == list(range(n))
        assert (seen == list(range(n))) == (not shuffle)
