"""The paper's whole protocol timed on this machine: one epoch of every stage, measured with
the project's own code on the real data, then projected to the configured epochs.

Takes the experiment's configuration (`experiments/<dataset>.py`: the paper's sizes, plus
any `key=value` given here, sacred syntax), runs the protocol once with `epochs=1
classifier_epochs=1` into a temporary folder, and prints per stage the measured epoch
(videos/s for pretraining) and its projection: `epochs` x the epoch + the final
evaluations (+ the stacked stage's feature encoding, done once). Classifier stages are
projected at their most epochs; early stopping usually ends them sooner, so the total is an
upper bound for them. The last line is `projected protocol: X min`.

    python bench/protocol_time.py mnistrotated groupwtacrnn             # paper sizes
    python bench/protocol_time.py mnistrotated groupwtacrnn small       # named configs too
    python bench/protocol_time.py mnistrotated groupwtacnn train_size=3000 device=cpu
    python bench/protocol_time.py mnistrotated groupwtacnn --device cuda   # = device=cuda

The first line names the device and which arithmetic was measured: `autocast=True (bf16:
native)`, `autocast=True (bf16: emulated (slower than fp32 here))` or `autocast=False
(float32; ...)` (`gksparse.training.runtime.native_bf16`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from typing import Any

import torch

from gksparse.protocol.commandline import resolve
from gksparse.protocol.pipeline import Protocol, ProtocolConfig
from gksparse.training.runtime import bf16_case


def experiment_config(dataset: str, words: list[str]) -> dict[str, Any]:
    """The full config `python -m gksparse.run <dataset> with <words>` would run with."""
    try:
        (out,) = resolve(dataset, [words])
    except ValueError as e:  # an unknown dataset
        raise SystemExit(f"error: {e}") from None
    if "error" in out:
        raise SystemExit(f"error: {out['error']}")
    return out["config"]


def project(
    logged: dict[str, dict[int, float]],
    result: dict[str, Any],
    cfg: dict[str, Any],
    pretrain_videos: int,
) -> list[tuple[str, int, float, int, float]]:
    """Rows (stage, training videos, measured epoch seconds, epochs, projected seconds)."""
    epochs = cfg["epochs"]
    cls_epochs = cfg["classifier_epochs"] or epochs
    rows = []
    if result["pretrain"]["pretrained"]:
        epoch = logged["pretrain.seconds"][1]
        once = logged["pretrain.evaluate_seconds"][1]
        rows.append(("pretrain", pretrain_videos, epoch, epochs, epoch * epochs + once))
    for n, budget in result["budgets"].items():
        for stage in ("stacked", "finetune"):
            prefix = f"n{n}.{stage}"
            epoch = logged[f"{prefix}.seconds"][1]
            once = logged[f"{prefix}.evaluate_seconds"][1]
            once += logged.get(f"{prefix}.features_seconds", {}).get(0, 0.0)
            rows.append(
                (f"n={n} {stage}", budget["n_train"], epoch, cls_epochs, epoch * cls_epochs + once)
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="an experiment: mnistrotated, cifar10scanned, ...")
    parser.add_argument("words", nargs="*", help="method, named configs, key=value")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (the same as device=...)")
    args = parser.parse_intermixed_args(argv)
    if args.device is not None:
        if any(w.startswith("device=") for w in args.words):
            raise SystemExit("error: give the device once, as --device or as device=..., not both.")
        args.words.append(f"device={args.device}")
    cfg = experiment_config(args.dataset, args.words)
    measured = {**cfg, "epochs": 1, "classifier_epochs": 1, "pictures": 0, "progress": False}
    logged: dict[str, dict[int, float]] = defaultdict(dict)

    def log_fn(name: str, value: float, step: int) -> None:
        logged[name][step] = value

    with tempfile.TemporaryDirectory() as run_dir:
        try:
            protocol = Protocol(ProtocolConfig.from_dict(measured), run_dir, log_fn)
            start = time.perf_counter()
            pre, _ = protocol.load_data()  # fills the video cache on a first run
            data_seconds = time.perf_counter() - start
            result = protocol.run()
        except (ValueError, RuntimeError, OSError, ImportError) as e:  # as the experiments
            raise SystemExit(f"error: {e}") from None
    device = protocol.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    bf16 = f"bf16: {bf16_case(device)}"
    if not protocol.use_autocast:
        bf16 = f"float32; {bf16} here"
    print(
        f"{cfg['dataset']} {cfg['method']} on {device} ({name}), torch {torch.__version__}, "
        f"autocast={protocol.use_autocast} ({bf16}), threads={torch.get_num_threads()}; "
        f"data {data_seconds:.1f} s (not projected)"
    )
    print(f"{'stage':<18}{'videos':>8}{'epoch':>10}{'videos/s':>10}{'epochs':>8}{'projected':>11}")
    total = 0.0
    for stage, videos, epoch, epochs, projected in project(logged, result, cfg, len(pre.train)):
        print(
            f"{stage:<18}{videos:>8}{epoch:>9.1f}s{videos / epoch:>10.0f}{epochs:>8}"
            f"{projected / 60:>9.2f} m"
        )
        total += projected
    print(f"projected protocol: {total / 60:.1f} min")


if __name__ == "__main__":
    main()
