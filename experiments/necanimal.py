"""NEC Animal pretraining, COIL-100 classification (a transfer test):
`python experiments/necanimal.py with <method> [nospatial|nolifetime] seed=N`."""

from common import main, make_experiment

ex = make_experiment(
    "necanimal",
    {
        "classify_dataset": "coil100",
        "batch_size": 10,
        "filters": 128,
        "enc_kernel": 5,
        "dec_kernel": 7,
        "groups": 32,
        "epochs": 300,
        "num_labeled": [2, 4, 8, 16, 32],  # COIL-100 training frames per object
    },
    small={
        "epochs": 3,
        "classifier_epochs": 20,
        "num_labeled": [4, 16],
        "filters": 64,
        "groups": 16,
    },
    smoke={"epochs": 1, "num_labeled": [4], "pictures": 2, "filters": 16, "groups": 4},
)

if __name__ == "__main__":
    main(ex)
