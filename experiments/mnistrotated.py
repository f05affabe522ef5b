"""Rotated MNIST.

python experiments/mnistrotated.py with <method> [nospatial|nolifetime] seed=N
"""

from gksparse.protocol.commandline import main

if __name__ == "__main__":  # the settings: gksparse.protocol.presets
    main("mnistrotated", command="experiments/{dataset}.py")
