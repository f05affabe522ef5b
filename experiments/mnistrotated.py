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
    # The whole protocol for one CNN method in minutes on a 2-core CPU; same shapes.
    small={
        "train_size": 3000,
        "test_size": 1000,
        "epochs": 3,
        "classifier_epochs": 20,
        "num_labeled": [300, 600],
    },
    # Seconds; for tests.
    smoke={"train_size": 240, "test_size": 60, "epochs": 1, "num_labeled": [200], "pictures": 2},
)

if __name__ == "__main__":
    main(ex)
