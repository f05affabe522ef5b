"""Scanned CIFAR-10.

python experiments/cifar10scanned.py with <method> [nospatial|nolifetime] seed=N
"""

from gksparse.protocol.commandline import main

if __name__ == "__main__":  # the settings: gksparse.protocol.presets
    main("cifar10scanned", command="experiments/{dataset}.py")
