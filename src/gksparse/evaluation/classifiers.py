"""Probes of frozen features: a linear classifier and a k-nearest-neighbour classifier.

Pure functions on `(N, D)` feature arrays and `(N,)` integer labels (numpy arrays or torch
tensors), as self-supervised learning judges an encoder (DINO, solo-learn, lightly):

- `linear_probe`: multinomial logistic regression (scikit-learn's `LogisticRegression`,
  L-BFGS) on features standardised with the training split's mean and std; its inverse
  regularisation `C` is chosen on the validation split from `C_GRID` (best accuracy, ties to
  the lower log loss, then to the smaller C).
- `knn_probe`: DINO's weighted k-NN in torch: cosine similarity of L2-normalised features,
  the k most similar training videos vote with weight exp(similarity / temperature).

Both are deterministic: L-BFGS draws no random numbers (the seed is passed on all the same),
the k-NN none; neither touches torch's or numpy's global random state.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # the linear probe's choices of C
MAX_ITER = 1000  # L-BFGS iterations of one logistic regression fit
KNN_CHUNK = 1024  # test vectors per similarity matrix product (bounds the memory)
Array = np.ndarray | torch.Tensor


def _numpy(x: Array) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check_split(x: Array, y: Array, name: str, num_classes: int, dim: int | None = None):
    """`(x, y)` as float32 `(N, D)` and int64 `(N,)` numpy arrays; a ValueError sentence
    naming the split when the shapes or labels are wrong (`dim`: the D it must have)."""
    x, y = _numpy(x), _numpy(y)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"the {name} features must be a non-empty (N, D) array, not {x.shape}.")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f"the {name} features have {x.shape[1]} values each, the training features {dim}."
        )
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"the {name} labels must be ({x.shape[0]},) for its features, not {y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"the {name} labels must be whole numbers from 0 to {num_classes - 1}.")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def _check_classes(y: np.ndarray, probe: str) -> None:
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(
            f"the {probe} needs at least two classes among the training labels; they are "
            f"all {int(classes[0])}."
        )


def standardise(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """`(N, D)` arrays minus the training mean, over the training std (1 where it is 0)."""
    mean = train_x.mean(axis=0, dtype=np.float64)
    std = train_x.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    mean, scale = mean.astype(np.float32), (1.0 / std).astype(np.float32)
    return [(x - mean) * scale for x in (train_x, *others)]


def _probabilities(model: Any, x: np.ndarray, num_classes: int) -> np.ndarray:
    """`(N, num_classes)` class probabilities (0 for classes the training split lacks)."""
    p = np.zeros((len(x), num_classes))
    p[:, model.classes_] = model.predict_proba(x)
    return p


def _scores(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, log loss) of `(N, K)` probabilities for labels `(N,)`, clipped as sklearn's
    `log_loss` clips (at float64's eps)."""
    eps = np.finfo(np.float64).eps
    loss = -np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0)).mean()
    return float((p.argmax(axis=1) == y).mean()), float(loss)


def _fit(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    model = LogisticRegression(C=c, solver="lbfgs", max_iter=MAX_ITER, random_state=seed)
    # One BLAS thread: the same numbers on every machine, and no oversubscription (several
    # OpenBLAS threads beside torch's on a busy 2-core CPU made a fit 10x slower).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as `converged`
        return model.fit(x, y)


def linear_probe(
    train_x: Array,
    train_y: Array,
    val_x: Array,
    val_y: Array,
    test_x: Array,
    test_y: Array,
    *,
    num_classes: int,
    seed: int,
    grid: tuple[float, ...] = C_GRID,
) -> dict[str, Any]:
    """Multinomial logistic regression on standardised features, C chosen on validation.

    `*_x`: `(N_split, D)` features, `*_y`: `(N_split,)` labels in `[0, num_classes)`. One
    fit per C of `grid` on the standardised training features; the C with the best
    validation accuracy (ties: lower validation log loss, then the smaller C) is kept, and
    its fit (the refit on train: L-BFGS is deterministic) scored on the test split.

    Returns accuracy and loss (test accuracy and log loss), C, val_accuracy, val_loss and
    converged (whether L-BFGS met its tolerance within MAX_ITER iterations).
    """
    tx, ty = check_split(train_x, train_y, "training", num_classes)
    vx, vy = check_split(val_x, val_y, "validation", num_classes, tx.shape[1])
    sx, sy = check_split(test_x, test_y, "test", num_classes, tx.shape[1])
    _check_classes(ty, "linear probe")
    tx, vx, sx = standardise(tx, vx, sx)
    best: tuple[tuple[float, float], float, Any] | None = None
    for c in grid:
        model = _fit(tx, ty, c, seed)
        accuracy, loss = _scores(_probabilities(model, vx, num_classes), vy)
        if best is None or (-accuracy, loss) < best[0]:
            best = ((-accuracy, loss), c, model)
    assert best is not None, "an empty grid of C"
    (val_accuracy, val_loss), c, model = (-best[0][0], best[0][1]), best[1], best[2]
    accuracy, loss = _scores(_probabilities(model, sx, num_classes), sy)
    return {
        "accuracy": accuracy,
        "loss": loss,
        "C": float(c),
        "val_accuracy": val_accuracy,
        "val_loss": val_loss,
        "converged": bool(np.max(model.n_iter_) < MAX_ITER),
    }


@torch.no_grad()
def knn_votes(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    *,
    num_classes: int,
    k: int,
    temperature: float,
) -> torch.Tensor:
    """`(N_test, num_classes)` summed weights exp(cos / temperature) of the `k` training
    vectors most similar to each test vector (`(N_train, D)`, `(N_train,)`, `(N_test, D)`)."""
    train = F.normalize(train_x.float(), dim=1)
    out = []
    for start in range(0, len(test_x), KNN_CHUNK):
        test = F.normalize(test_x[start : start + KNN_CHUNK].float(), dim=1)
        sims, idx = (test @ train.T).topk(k, dim=1)  # (B, k), most similar first
        votes = torch.zeros(len(test), num_classes, device=test.device)
        out.append(votes.scatter_add_(1, train_y[idx], (sims / temperature).exp()))
    return torch.cat(out)


def knn_probe(
    train_x: Array,
    train_y: Array,
    test_x: Array,
    test_y: Array,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """DINO's weighted k-NN classifier on cosine similarity.

    `train_x` `(N_train, D)`, `test_x` `(N_test, D)` features, `*_y` labels in
    `[0, num_classes)`. Each test vector takes the class with the largest sum of
    exp(similarity / temperature) over its `min(k, N_train)` most similar training vectors
    (a tie: the lower class). The matrix products run on `device` (default CPU), KNN_CHUNK
    test vectors at a time.

    Returns accuracy (on the test split) and k (the neighbours used). No loss: the
    normalised votes are no calibrated probability (a class without votes would get 0).
    """
    tx, ty = check_split(train_x, train_y, "training", num_classes)
    sx, sy = check_split(test_x, test_y, "test", num_classes, tx.shape[1])
    _check_classes(ty, "k-NN probe")
    if not (isinstance(k, int) and k >= 1) or not temperature > 0:
        raise ValueError(
            f"the k-NN probe needs k >= 1 and temperature > 0, not {k}, {temperature}."
        )
    dev = torch.device(device or "cpu")
    k = min(k, len(tx))
    votes = knn_votes(
        torch.from_numpy(tx).to(dev),
        torch.from_numpy(ty).to(dev),
        torch.from_numpy(sx).to(dev),
        num_classes=num_classes,
        k=k,
        temperature=temperature,
    )
    accuracy = (votes.argmax(dim=1).cpu().numpy() == sy).mean()
    return {"accuracy": float(accuracy), "k": k}
