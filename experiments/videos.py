"""Your own videos: `python experiments/videos.py with <method> data_dir=<folder> [frames=16
size=32 grayscale=True num_labeled=[500,1000] ...]`.

The folder holds class subfolders (labels from their names) or a flat set (no labels:
pretraining only) of frame folders or video files; see `gksparse.data.videofolder`.
The test videos come from `test_split` (with `train_split`: UCF-101-style lists), else
`test_dir`, else a random `test_fraction` of every class.
"""

from gksparse.protocol.commandline import main

if __name__ == "__main__":  # the settings: gksparse.protocol.presets
    main("videos", command="experiments/{dataset}.py")
