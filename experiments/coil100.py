"""COIL-100: `python experiments/coil100.py with <method> [nospatial|nolifetime] seed=N`."""

from gksparse.protocol.commandline import main

if __name__ == "__main__":  # the settings: gksparse.protocol.presets
    main("coil100", command="experiments/{dataset}.py")
