"""The linear and k-NN probes on features with known answers, and inside the protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fakes import add_dataset
from threadpoolctl import threadpool_limits

import gksparse.data as datasets
from gksparse.data.containers import VideoData, Videos
from gksparse.evaluation.classifiers import C_GRID, knn_probe, knn_votes, linear_probe, standardise
from gksparse.protocol.pipeline import Protocol, ProtocolConfig, run_protocol


@pytest.fixture(autouse=True)
def one_blas_thread():
    """One BLAS thread: L-BFGS on small matrices is much slower on a busy machine's threads."""
    with threadpool_limits(1):
        yield


def clusters(n: int, classes: int = 3, dim: int = 16, spread: float = 0.1, seed: int = 0):
    """`n` points around `classes` far-apart centres: (features (n, dim), labels (n,))."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim, dtype=np.float32)[:classes] * 5
    labels = np.arange(n) % classes
    x = centres[labels] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x, labels.astype(np.int64)


def probe_all(tx, ty, vx, vy, sx, sy, *, num_classes: int, seed: int) -> dict:
    """Both probes on one labeled split, as the protocol runs them."""
    linear = linear_probe(tx, ty, vx, vy, sx, sy, num_classes=num_classes, seed=seed)
    return {"linear": linear, "knn": knn_probe(tx, ty, sx, sy, num_classes=num_classes)}


def test_separable_clusters_are_classified_right_by_both_probes():
    (tx, ty), (vx, vy), (sx, sy) = clusters(60, seed=1), clusters(30, seed=2), clusters(90, seed=3)
    out = probe_all(tx, ty, vx, vy, sx, sy, num_classes=3, seed=0)
    assert set(out) == {"linear", "knn"}
    assert out["linear"]["accuracy"] == 1.0 and out["linear"]["val_accuracy"] == 1.0
    assert out["linear"]["loss"] < 0.2 and out["linear"]["C"] in C_GRID
    assert out["knn"] == {"accuracy": 1.0, "k": 20}


def test_labels_independent_of_the_features_score_near_chance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1400, 8)).astype(np.float32)
    y = rng.integers(0, 4, 1400)
    out = probe_all(
        x[:600], y[:600], x[600:800], y[600:800], x[800:], y[800:], num_classes=4, seed=0
    )
    for probe in ("linear", "knn"):
        assert 0.15 < out[probe]["accuracy"] < 0.35, (probe, out[probe])  # chance: 0.25
    assert out["linear"]["loss"] > math.log(4) - 0.05  # no better than the uniform guess


def test_the_same_seed_gives_the_same_numbers():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((150, 12)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.standard_normal(150) > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    args = (x[:80], y[:80], x[80:110], y[80:110], x[110:], y[110:])
    first = probe_all(*args, num_classes=4, seed=7)
    assert probe_all(*args, num_classes=4, seed=7) == first
    assert probe_all(*map(torch.from_numpy, args), num_classes=4, seed=7) == first  # tensors too


def test_knn_votes_by_hand():
    # test [1, 0]; training [1, 0] (class 0), [.8, .6] and [.6, .8] (class 1): cosines 1, .8, .6
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[2.0, 0.0]])  # its length does not matter
    for t in (0.07, 1.0):
        votes = knn_votes(train, labels, test, num_classes=2, k=3, temperature=t)
        want = [math.exp(1 / t), math.exp(0.8 / t) + math.exp(0.6 / t)]
        assert votes[0].tolist() == pytest.approx(want, rel=1e-5)
    # DINO's temperature lets the one close neighbour outvote the two farther ones
    sharp = knn_probe(train, labels, test, torch.tensor([0]), num_classes=2, k=3)
    flat = knn_probe(train, labels, test, torch.tensor([0]), num_classes=2, k=3, temperature=1)
    assert (sharp["accuracy"], flat["accuracy"]) == (1.0, 0.0)
    nearest = knn_votes(train, labels, test, num_classes=2, k=2, temperature=1.0)
    assert nearest[0].tolist() == pytest.approx([math.e, math.exp(0.8)], rel=1e-5)


def test_k_is_capped_by_the_training_set():
    x, y = clusters(5, classes=2, seed=0)
    out = knn_probe(x, y, x, y, num_classes=2, k=20)
    assert out["k"] == 5
    votes = knn_votes(
        torch.from_numpy(x),
        torch.from_numpy(y),
        torch.from_numpy(x[:1]),
        num_classes=2,
        k=5,
        temperature=0.07,
    )
    assert (votes > 0).all()  # every training vector voted


def test_c_is_the_one_with_the_best_validation_accuracy():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.standard_normal((260, 40)).astype(np.float32)
    y = (x[:, :3].sum(1) + 1.5 * rng.standard_normal(260) > 0).astype(np.int64)
    tx, vx, sx = x[:60], x[60:160], x[160:]
    out = linear_probe(tx, y[:60], vx, y[60:160], sx, y[160:], num_classes=2, seed=0)
    stx, svx = standardise(tx, vx)
    scores = []
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=1000).fit(stx, y[:60])
        p = model.predict_proba(svx)
        loss = -np.log(np.clip(p[np.arange(100), y[60:160]], 1e-16, 1)).mean()
        scores.append((-model.score(svx, y[60:160]), loss))
    best = C_GRID[scores.index(min(scores))]
    assert out["C"] == best and out["val_accuracy"] == pytest.approx(-min(scores)[0])
    assert len({s[0] for s in scores}) > 1  # the grid's choices differ on validation
    only = linear_probe(tx, y[:60], vx, y[60:160], sx, y[160:], num_classes=2, seed=0, grid=(0.5,))
    assert only["C"] == 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(train_x=np.zeros(10)), "training features must be a non-empty (N, D) array"),
        (dict(test_x=np.zeros((6, 3))), "test features have 3 values each, the training"),
        (dict(val_y=np.zeros(4, np.int64)), "validation labels must be (6,)"),
        (dict(test_y=np.full(6, 9)), "test labels must be whole numbers from 0 to 2"),
        (dict(train_y=np.ones(10, np.int64)), "at least two classes among the training labels"),
    ],
)
def test_bad_input_is_one_sentence(change, message):
    rng = np.random.default_rng(0)
    args = dict(
        train_x=rng.random((10, 4)),
        train_y=np.arange(10) % 3,
        val_x=rng.random((6, 4)),
        val_y=np.arange(6) % 3,
        test_x=rng.random((6, 4)),
        test_y=np.arange(6) % 3,
    )
    args.update(change)
    with pytest.raises(ValueError) as e:
        linear_probe(**args, num_classes=3, seed=0)
    assert message in str(e.value) and str(e.value).endswith(".") and "\n" not in str(e.value)


# -- inside the protocol -------------------------------------------------------------------
@pytest.fixture
def tiny(monkeypatch):
    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    videos = rng.random((90, 3, 1, 8, 8), dtype=np.float32)
    videos *= (0.3 + 0.3 * labels)[:, None, None, None, None].astype(np.float32)
    data = VideoData(Videos(videos, labels), Videos(videos[:30].copy(), labels[:30]), 3, "tiny")
    monkeypatch.setattr(datasets, "load", lambda name, **kw: data)
    add_dataset(monkeypatch, "tiny")
    return data


def tiny_config(**kw) -> ProtocolConfig:
    base = dict(
        dataset="tiny",
        method="groupwtacnn",
        seed=3,
        num_labeled=[30, 60],
        batch_size=10,
        filters=4,
        dec_kernel=5,
        groups=2,
        epochs=1,
        device="cpu",
        progress=False,
        pictures=0,
    )
    return ProtocolConfig(**{**base, **kw})


@pytest.mark.slow
def test_the_protocol_probes_every_budget_without_changing_the_other_numbers(tiny, tmp_path):
    logged = []
    with_probes = run_protocol(tiny_config(), tmp_path / "a", lambda *a: logged.append(a))
    without = run_protocol(tiny_config(probe=False), tmp_path / "b")
    for n in ("30", "60"):
        budget = with_probes["budgets"][n]
        assert set(budget["probe"]) == {"linear", "knn"} and "probe" not in without["budgets"][n]
        assert (
            0 <= budget["probe"]["knn"]["accuracy"] <= 1 and budget["probe"]["linear"]["loss"] > 0
        )
        assert {k: v for k, v in budget.items() if k != "probe"} == without["budgets"][n]
    names = {name for name, _, _ in logged}
    assert {
        "n30.probe.linear.test_accuracy",
        "n60.probe.knn.test_accuracy",
        "n60.probe.seconds",
        "n60.probe.linear.C",
        "n60.probe.features_seconds",
    } <= names


def test_a_probe_leaves_torch_random_state_and_repeats_itself(tiny, tmp_path):
    run_protocol(tiny_config(num_labeled=[30], probe=False), tmp_path)
    protocol = Protocol(tiny_config(num_labeled=[30]), tmp_path)
    cls = protocol.load_data()[1]
    torch.manual_seed(11)
    state = torch.get_rng_state()
    first = protocol.probe(cls, 30)
    assert torch.equal(torch.get_rng_state(), state)
    assert protocol.probe(cls, 30) == first
    resumed = run_protocol(tiny_config(num_labeled=[30]), tmp_path)  # probes the done budget
    assert resumed["budgets"]["30"]["probe"] == first
