"""NEC Animal pretraining, COIL-100 classification (a transfer test):
`python experiments/necanimal.py with <method> [nospatial|nolifetime] seed=N`."""

from gksparse.protocol.commandline import main

if __name__ == "__main__":  # the settings: gksparse.protocol.presets
    main("necanimal", command="experiments/{dataset}.py")
