"""Rotated MNIST.

python experiments/mnistrotated.py with <method> [nospatial|nolifetime] seed=N
"""

from common import main, make_experiment

ex = make_experiment(
    "mnistrotated",
    {
        "batch_size": 30,
        "filters": 64,
        "enc_kernel": 3,
        "dec_kernel": 11,
        "groups": 16,
        "epochs": 50,
        "num_labeled": [300, 600, 1000, 2000, 5000, 10000, 54000],
    },
    # The whole protocol for one CNN method in about 8 minutes on a 2-core CPU; same shapes.
    # Fewer videos and epochs than the paper, so ten times its learning rates: with the
    # paper's the 300 pretraining steps barely start (decoder filters stay noise).
    small={
        "train_size": 3000,
        "test_size": 1000,
        "epochs": 3,
        "lr": 1e-3,
        "finetune_lr": 1e-4,
        "classifier_epochs": 10,
        "num_labeled": [300, 600],
    },
    # Seconds; for tests.
    smoke={"train_size": 240, "test_size": 60, "epochs": 1, "num_labeled": [200], "pictures": 2},
)

if __name__ == "__main__":
    main(ex)
