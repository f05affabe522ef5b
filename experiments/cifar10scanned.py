"""Scanned CIFAR-10.

python experiments/cifar10scanned.py with <method> [nospatial|nolifetime] seed=N
"""

from common import main, make_experiment

ex = make_experiment(
    "cifar10scanned",
    {
        "batch_size": 30,
        "filters": 256,
        "enc_kernel": 5,
        "dec_kernel": 7,
        "groups": 64,
        "epochs": 50,
        "num_labeled": [300, 600, 1000, 2000, 5000, 10000, 45000],
    },
    # The whole protocol for one CNN method in about 10 minutes on a 2-core CPU; same shapes.
    # As mnistrotated's small: 100 pretraining steps, so ten times the paper's learning rates.
    small={
        "train_size": 1500,
        "test_size": 500,
        "epochs": 2,
        "lr": 1e-3,
        "finetune_lr": 1e-4,
        "classifier_epochs": 10,
        "num_labeled": [300],
    },
    smoke={
        "train_size": 240,
        "test_size": 60,
        "epochs": 1,
        "num_labeled": [200],
        "pictures": 2,
        "filters": 32,
        "groups": 8,
    },
)

if __name__ == "__main__":
    main(ex)
