"""Your own videos: `python experiments/videos.py with <method> data_dir=<folder> [frames=16
size=32 grayscale=True num_labeled=[500,1000] ...]`.

The folder holds class subfolders (labels from their names) or a flat set (no labels:
pretraining only) of frame folders or video files; see `gksparse.data.videofolder`.
The test videos come from `test_split` (with `train_split`: UCF-101-style lists), else
`test_dir`, else a random `test_fraction` of every class.
"""

from common import main, make_experiment

ex = make_experiment(
    "videos",
    {
        "frames": 16,  # clip length; training clips start at random, test clips at frame 0
        "size": 32,  # frame size: H (square) or [H, W]
        "grayscale": False,
        "labeled": None,  # None: class subfolders if there are any
        "train_split": None,  # e.g. ucfTrainTestlist/trainlist01.txt
        "test_split": None,  # e.g. ucfTrainTestlist/testlist01.txt
        "test_dir": None,
        "test_fraction": 0.2,
        "zca_clips": None,  # fit it on that many clips (None: all)
        "workers": 0,  # DataLoader processes that decode the videos
        "cache_dir": None,  # clips as memory maps there, for folders too large for memory
        "batch_size": 10,
        "filters": 128,
        "enc_kernel": 5,
        "dec_kernel": 7,
        "groups": 32,
        "epochs": 50,
        # Labeled-set sizes: each needs n + round(0.1111 n) training videos and n >= classes;
        # empty: pretraining only.
        "num_labeled": [],
    },
    small={"epochs": 3, "filters": 64, "groups": 16},
    smoke={"epochs": 1, "frames": 4, "pictures": 2, "filters": 16, "groups": 4},
)


@ex.config
def folder_options(
    frames,
    size,
    grayscale,
    labeled,
    train_split,
    test_split,
    test_dir,
    test_fraction,
    zca_clips,
    workers,
    cache_dir,
):
    # What `gksparse.data.videos.load_folder` takes besides the protocol's own keys.
    data_options = dict(  # noqa: F841 (a config entry)
        frames=frames,
        size=size,
        grayscale=grayscale,
        labeled=labeled,
        train_split=train_split,
        test_split=test_split,
        test_dir=test_dir,
        test_fraction=test_fraction,
        zca_clips=zca_clips,
        workers=workers,
        cache_dir=cache_dir,
    )


if __name__ == "__main__":
    main(ex)
