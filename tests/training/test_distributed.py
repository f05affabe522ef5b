"""Multi-process training on the CPU with gloo (distributed.py, and DDP in train.py).

Two processes on the same global batches must compute what one process computes: the
global lifetime winners, the losses and the weights after the first steps, the evaluation.
The processes are spawned here (127.0.0.1, a free port); the slow test runs the `smoke`
protocol under torchrun.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from gksparse.data.containers import Videos
from gksparse.model.video import ModelConfig, build_model
from gksparse.ops.lifetime import global_topk_mask, sparse_code
from gksparse.ops.sparsity import (
    group_ksparse,
    group_ksparse_chain,
    ksparse,
    ksparse_chain,
    topk_mask,
)
from gksparse.training import distributed, runtime
from gksparse.training.distributed import shard_bounds
from gksparse.training.engine import (
    ClassificationLoss,
    Stage,
    balanced_class_weights,
    evaluate,
    fit,
    pretrain_loss,
)

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[2]


# -- running a function on 2 ranks ---------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn, args: tuple, out: Path) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        assert distributed.setup(CPU)
        result = fn(*args)
    except BaseException:
        result = {"error": traceback.format_exc()}
    finally:
        distributed.cleanup()
    torch.save(result, out / f"rank{rank}.pt")


def on_ranks(fn, *args, tmp_path: Path, world: int = 2) -> list:
    """`fn(*args)` in `world` gloo processes; the list of what each rank returned."""
    mp.spawn(_worker, args=(world, free_port(), fn, args, tmp_path), nprocs=world)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for r, res in enumerate(results):
        if isinstance(res, dict) and "error" in res:
            pytest.fail(f"rank {r} failed:\n{res['error']}")
    return results


# -- global lifetime sparsity --------------------------------------------------------------
def codes() -> torch.Tensor:
    """A ReLU code `(4, 3, 8, 5, 5)` (N, T, C, H, W) whose samples 0 and 2 are equal, so every
    lifetime winner in sample 0 ties with sample 2, held by the other rank."""
    x = torch.relu(torch.randn(4, 3, 8, 5, 5, generator=torch.Generator().manual_seed(0)))
    x[2] = x[0]
    return x


def first_topk_mask(scores: torch.Tensor, k: int, dims: tuple[int, ...]) -> torch.Tensor:
    """The top-k mask over `dims` that breaks ties towards the first flat index (the dims
    flattened in ascending order), by a stable sort: tf.nn.top_k's rule."""
    dims = tuple(sorted(dims))
    rest = [d for d in range(scores.ndim) if d not in dims]
    moved = scores.permute(*rest, *dims)
    flat = moved.reshape(*moved.shape[: len(rest)], -1)
    order = torch.sort(flat, dim=-1, descending=True, stable=True).indices[..., :k]
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, order, True)
    return mask.reshape(moved.shape).permute(*torch.argsort(torch.tensor([*rest, *dims])))


STEPS = {  # lifetime k: the steps (spatial, lifetime); k = 100 keeps every spatial winner
    1: ((1, (3, 4)), (1, (0, 1))),
    3: ((2, (3, 4)), (3, (0, 1))),
    100: ((1, (3, 4)), (100, (0, 1))),
}


def _sparse_shards() -> dict:
    a, b = shard_bounds(4, distributed.rank(), distributed.world_size())
    out = {}
    for k, steps in STEPS.items():
        # ties across ranks for every k: the one-process rule (the lowest flat index) decides
        shard = codes()[a:b].clone().requires_grad_(True)
        for sparsity in ("plain", "group"):
            y = sparse_code(shard, sparsity, steps, groups=4, global_batch=True)
            (grad,) = torch.autograd.grad(y.sum(), shard)
            out[sparsity, k] = (y.detach(), grad)
            if k == 1:  # the switch off: every rank ranks its own shard
                model = _model(sparsity)
                out[sparsity, "local"] = model.sparsify(shard, global_lifetime=False).detach()
                out[sparsity, "model"] = model.sparsify(shard, global_lifetime=True).detach()
    return out


def _model(sparsity: str):
    method = "groupwtacnn" if sparsity == "group" else "wtacnn"
    return build_model(ModelConfig(method, 1, 5, 5, 3, filters=8, groups=4))


def test_global_lifetime_winners_of_two_ranks_are_those_of_the_whole_batch(tmp_path):
    ranks = on_ranks(_sparse_shards, tmp_path=tmp_path)
    for sparsity in ("plain", "group"):
        for k in STEPS:
            x = codes()
            got = torch.cat([r[sparsity, k][0] for r in ranks])
            grad = torch.cat([r[sparsity, k][1] for r in ranks])
            (ks, sdims), (kl, ldims) = STEPS[k]
            if sparsity == "plain":  # the definition, step by step (METHOD.md section 2)
                want = ksparse(ksparse(x, ks, sdims), kl, ldims)
            else:
                want = group_ksparse(group_ksparse(x, 4, ks, sdims, 2), 4, kl, ldims, 2)
            chain = chain_of(x, sparsity, STEPS[k])
            torch.testing.assert_close(got, want, rtol=0, atol=0)
            torch.testing.assert_close(got, chain, rtol=0, atol=0)
            # the gradient flows through the kept entries, of one rank only at a tie
            x.requires_grad_(True)
            (one_grad,) = torch.autograd.grad(chain_of(x, sparsity, STEPS[k]).sum(), x)
            assert torch.equal(grad, one_grad), (sparsity, k)
        # the tie across ranks (samples 0 and 2 equal) goes to rank 0, once
        x = codes()
        won = torch.cat([r[sparsity, 1][0] for r in ranks])
        assert won[0].any() and not won[2].any()
        # through the model's hook: the same; with the switch off, each rank on its own
        assert torch.equal(torch.cat([r[sparsity, "model"] for r in ranks]), won)
        own = torch.cat([chain_of(x[:2], sparsity), chain_of(x[2:], sparsity)])
        local = torch.cat([r[sparsity, "local"] for r in ranks])
        assert torch.equal(local, own)
        assert not torch.equal(local, won)  # rank 1 keeps its own copy of the tied winners


def chain_of(x: torch.Tensor, sparsity: str, steps=STEPS[1]) -> torch.Tensor:
    """The one-process sparsity chain of `x` (4 groups for 'group')."""
    if sparsity == "plain":
        return ksparse_chain(x, steps)
    return group_ksparse_chain(x, 4, steps, channel_dim=2)


def _tied_topk() -> list[torch.Tensor]:
    # every value appears on both ranks, so the k-th largest is always tied across them
    scores = torch.tensor([[3.0, 1.0], [2.0, 2.0], [1.0, 2.0]]).view(3, 1, 2)
    return [global_topk_mask(scores, k, (0, 1)) for k in (1, 2, 3, 4, 6)]


def test_global_topk_breaks_ties_towards_the_lower_rank_then_the_first_index(tmp_path):
    ranks = on_ranks(_tied_topk, tmp_path=tmp_path)
    both = torch.tensor([[3.0, 1.0], [2.0, 2.0], [1.0, 2.0]]).view(3, 1, 2).repeat(2, 1, 1)
    for i, k in enumerate((1, 2, 3, 4, 6)):
        got = torch.cat([r[i] for r in ranks])
        assert torch.equal(got, first_topk_mask(both, k, (0, 1))), k
        assert got.sum() == k * 2  # exactly k winners per column


def tie_scores(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Scores `(n, 3, 2, 2, 3)` of the levels 0, 1, 2 only: exact ties at every k-th place,
    within and across ranks. fp64: the levels 1 + 1e-12 * (0, 1, 2), equal in fp32."""
    x = torch.randint(0, 3, (n, 3, 2, 2, 3), generator=torch.Generator().manual_seed(n))
    return x.float() if dtype == torch.float32 else 1 + 1e-12 * x.to(dtype)


TIE_DIMS = [(0, 1), (0, 1, 3), (0, 2), (0, 1, 3, 4)]
TIE_KS = (1, 2, 3, 5, 8)


def _tied_global_masks(n: int) -> dict:
    a, b = shard_bounds(n, distributed.rank(), distributed.world_size())
    out = {}
    for dtype in (torch.float32, torch.float64):
        x = tie_scores(n, dtype)[a:b]
        for dims in TIE_DIMS:
            for k in TIE_KS:
                out[dtype, dims, k] = global_topk_mask(x, k, dims)
    return out


@pytest.mark.parametrize("n", [4, 5])  # 5: shards of 3 and 2 samples
def test_global_topk_with_ties_is_the_one_process_mask_of_the_whole_batch(n, tmp_path):
    ranks = on_ranks(_tied_global_masks, n, tmp_path=tmp_path)
    for (dtype, dims, k), mine in ranks[0].items():
        x = tie_scores(n, dtype)
        got = torch.cat([mine, ranks[1][dtype, dims, k]])
        want = topk_mask(x, k, dims)
        assert torch.equal(got, want), (dtype, dims, k)
        assert torch.equal(want, first_topk_mask(x, k, dims)), (dtype, dims, k)
    # the data ties at the k-th place across the ranks' shards
    x = tie_scores(n).flatten(0, 1)
    third = x.topk(3, dim=0).values[-1]
    rows = shard_bounds(n, 0, 2)[1] * 3  # rank 0's rows of the (N*T, ...) batch
    assert ((x[:rows] == third).any(0) & (x[rows:] == third).any(0)).float().mean() > 0.5


# -- training and evaluation -----------------------------------------------------------------
def tiny_videos(n: int, masked: bool = False, seed: int = 0) -> Videos:
    rng = np.random.default_rng(seed)
    labels = np.array([0, 0, 0, 1, 1, 2] * n)[:n]  # unbalanced: class weights matter
    videos = rng.random((n, 4, 1, 8, 8), dtype=np.float32) * (0.4 + 0.3 * labels)[
        :, None, None, None, None
    ].astype(np.float32)
    mask = None
    if masked:  # padded videos of 2, 3 or 4 real frames
        mask = np.arange(4)[None, :] < (2 + np.arange(n) % 3)[:, None]
        videos[~mask] = 0
    return Videos(videos, labels.astype(np.int64), mask)


def _train(method: str, n: int, epochs: int, masked: bool, classify: bool) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(method, 1, 8, 8, 3, filters=8, dec_kernel=5, groups=2, head_dropout=0.0)
    model = build_model(cfg)
    initial = model.encoder.convs[0].weight.detach().clone()
    data, val = tiny_videos(n, masked), tiny_videos(7, masked, seed=1)
    recurrent = method.endswith("rnn")
    stage = Stage(
        "pretrain",
        model.trainable("pretrain"),
        pretrain_loss,
        epochs=epochs,
        batch_size=10,
        lr=1e-3,
        clipnorm=1.0 if recurrent else None,
    )
    gen = torch.Generator().manual_seed(1)
    out = {"pretrain": fit(model, stage, data, device=CPU, generator=gen, progress=False)}
    out["eval"] = evaluate(model, val, pretrain_loss, 3, CPU)
    if classify:
        weighted = ClassificationLoss(balanced_class_weights(data.labels, 3))
        for name, opt in (("stacked", "adam"), ("finetune", "sgd")):
            stage = Stage(
                name,
                model.trainable(name),
                weighted,
                epochs=2,
                batch_size=10,
                optimizer=opt,
                lr=1e-2,
                clipnorm=1.0,
                patience=1,
                val_loss=ClassificationLoss(),
            )
            out[name] = fit(
                model,
                stage,
                data,
                val,
                device=CPU,
                generator=gen,
                progress=False,
                eval_batch_size=3,
            )
            out[name + "_eval"] = evaluate(model, val, ClassificationLoss(), 3, CPU, accuracy=True)
    out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    out["moved"] = float((model.encoder.convs[0].weight.detach() - initial).abs().max())
    return out


CASES = {
    # method, videos, epochs, padded frames, classifier stages
    "cnn": ("groupwtacnn", 20, 2, False, True),
    "crnn, padded frames, a last batch of 1": ("groupwtacrnn", 21, 1, True, False),
    "plain wta": ("wtacnn", 30, 1, False, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_like_one_on_the_same_global_batches(case, tmp_path):
    args = CASES[case]
    ranks = on_ranks(_train, *args, tmp_path=tmp_path)
    one = _train(*args)
    for got in ranks:  # every rank ends with the single process's numbers and weights
        for key in one:
            if key in ("state", "moved"):
                continue
            records = one[key] if isinstance(one[key], list) else [one[key]]
            theirs = got[key] if isinstance(got[key], list) else [got[key]]
            assert len(theirs) == len(records), key
            for a, b in zip(theirs, records, strict=True):
                assert a.keys() == b.keys()
                for m in a.keys() - {"seconds"}:  # wall times differ, of course
                    assert a[m] == pytest.approx(b[m], rel=1e-5, abs=1e-7), (key, m)
        for name, w in one["state"].items():
            torch.testing.assert_close(got["state"][name], w, rtol=1e-5, atol=1e-6, msg=name)
    assert one["pretrain"][0]["loss"] > 0
    assert one["moved"] > 1e-3  # the weights did change, far beyond the tolerance


def _ddp_warnings() -> list[str]:
    """The Python warnings of pretraining steps under DDP, models laid out as on the CPU."""
    caught = []
    for method, in_channels in (("groupwtacnn", 1), ("wtacrnn", 3), ("denoisingcnn", 1)):
        torch.manual_seed(0)
        cfg = ModelConfig(method, in_channels, 8, 8, 3, filters=8, dec_kernel=5, groups=2)
        model = runtime.prepare_model(build_model(cfg), runtime.configure(CPU, allocator=False))
        assert model.decoder.weight.stride()[1] == 1  # channels-last, as on the CPU
        stage = Stage(
            "pretrain", model.trainable("pretrain"), pretrain_loss, epochs=1, batch_size=4
        )
        videos = Videos(np.repeat(tiny_videos(8).videos, in_channels, axis=2))
        with warnings.catch_warnings(record=True) as caught_here:
            warnings.simplefilter("always")
            fit(model, stage, videos, device=CPU, progress=False)
        caught += [f"{method}: {w.category.__name__}: {w.message}" for w in caught_here]
    return caught


def test_ddp_steps_of_channels_last_models_warn_nothing(tmp_path):
    # The sparse decoder returned the kernel gradient of a channels-last (F, 1, k, k) kernel
    # with contiguous strides, the same memory order but other strides in the size-1 dim:
    # DDP warned "Grad strides do not match bucket view strides" on every rank.
    for r, caught in enumerate(on_ranks(_ddp_warnings, tmp_path=tmp_path)):
        assert caught == [], f"rank {r}: " + "\n".join(caught)


def _odd_batch() -> str:
    model = build_model(ModelConfig("groupwtacnn", 1, 8, 8, 3, filters=8, groups=2))
    stage = Stage("pretrain", model.trainable("pretrain"), pretrain_loss, epochs=1, batch_size=5)
    try:
        fit(model, stage, tiny_videos(10), device=CPU, progress=False)
    except ValueError as e:
        return str(e)
    return "no error"


def test_a_global_batch_that_does_not_split_evenly_is_refused(tmp_path):
    for message in on_ranks(_odd_batch, tmp_path=tmp_path):
        assert message.startswith("batch_size=5 is the global batch, split evenly over 2")


def test_shards_are_contiguous_and_even():
    for n in range(0, 9):
        bounds = [shard_bounds(n, r, 3) for r in range(3)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(bounds[i][1] == bounds[i + 1][0] for i in range(2))
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_without_a_process_group_everything_is_one_process():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.all_reduce_sum([1.5, 2]) == [1.5, 2.0]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.run_on_main(lambda: 7) == 7
    x = codes()
    torch.testing.assert_close(
        sparse_code(x, "group", STEPS[1], groups=4, global_batch=True),
        group_ksparse_chain(x, 4, STEPS[1], channel_dim=2),
    )


# -- the experiment script under torchrun ------------------------------------------------------
SCRIPT = str(REPO / "experiments" / "mnistrotated.py")


def torchrun(*args: str) -> list[str]:
    """`torchrun --nproc_per_node=2 experiments/mnistrotated.py with *args` on 127.0.0.1."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2"]
    launcher += ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    return [*launcher, SCRIPT, "with", *args]


def run_torchrun(*args: str, env) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun(*args), capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, GKSPARSE_CACHE=str(tmp_path / "cache"), PYTHONWARNINGS="ignore")


@pytest.mark.slow
def test_smoke_protocol_under_torchrun_on_two_processes(tmp_path, env):
    from runs import SHARED, check_run_folder

    args = ["groupwtacnn", "smoke", "seed=5", f"data_dir={SHARED}", "progress=False"]
    two = run_torchrun(*args, f"results_dir={tmp_path / 'two'}", env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run folder: ") == 2  # rank 0 alone (at the start and the end)
    folder = Path(two.stdout.split("run folder: ")[1].split()[0])
    assert folder.parent == tmp_path / "two" / "mnistrotated"
    assert [p.name for p in (tmp_path / "two" / "mnistrotated").iterdir() if p.name[0] != "_"] == [
        folder.name
    ]
    result = check_run_folder(folder, ["200"])
    assert json.loads((folder / "config.json").read_text())["seed"] == 5

    one = subprocess.run(
        [sys.executable, SCRIPT, "with", *args, f"results_dir={tmp_path / 'one'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    single = json.loads(next((tmp_path / "one").rglob("result.json")).read_text())
    # pretraining has no dropout: two processes train as one on the same global batches
    assert result["pretrain"]["history"] == pytest.approx(single["pretrain"]["history"], rel=1e-4)
    for split in ("train_loss", "test_loss"):
        assert result["pretrain"][split] == pytest.approx(single["pretrain"][split], rel=1e-4)
    assert result["budgets"]["200"]["n_train"] == single["budgets"]["200"]["n_train"]


@pytest.mark.slow
def test_killed_torchrun_run_resumes_to_the_same_result(tmp_path, env):
    from runs import (
        SHARED,
        check_run_folder,
        check_same_result,
        interrupt_in_pretraining,
    )

    args = ("groupwtacnn", "smoke", "epochs=3", "seed=9", f"data_dir={SHARED}", "progress=False")
    whole = run_torchrun(*args, f"results_dir={tmp_path / 'whole'}", env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = json.loads(next((tmp_path / "whole").rglob("result.json")).read_text())

    cut = tmp_path / "cut"
    # SIGTERM, as a job scheduler does: torchrun stops its workers
    folder = interrupt_in_pretraining(
        torchrun(*args, f"results_dir={cut}"), cut, signal.SIGTERM, env
    )
    assert (folder / "pretrain_state.pt").is_file() and not (folder / "pretrained.pt").exists()

    p = run_torchrun("resume=" + str(folder), f"results_dir={cut}", f"data_dir={SHARED}", env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"run folder: {folder}" in p.stdout
    check_same_result(check_run_folder(folder, ["200"]), expected, "200")
