"""The video-folder dataset, on small folders of frames and video files written by the tests.

Every frame is a uniform grey level, so a clip's pixel values tell which frames it holds.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gksparse.data import decoding
from gksparse.data.containers import Videos
from gksparse.data.errors import DataError
from gksparse.data.videofolder import BadVideoWarning, VideoFolder, natural_key
from gksparse.data.videos import load_folder

STEP = 20  # grey level of frame i is STEP * i


def write_frames(folder: Path, count: int, size: tuple[int, int] = (12, 16), ext: str = "png"):
    """A frame folder of `count` uniform frames `(H, W)`, frame i at grey level STEP * i."""
    folder.mkdir(parents=True)
    for i in range(count):
        image = Image.fromarray(np.full((*size, 3), STEP * i, np.uint8))
        image.save(folder / f"frame{i}.{ext}")  # frame10 after frame9: natural order
    return folder


def write_video(path: Path, count: int, size: tuple[int, int] = (16, 16), gop: int = 3) -> Path:
    """A video file of `count` uniform frames, frame i at grey level STEP * i."""
    av = pytest.importorskip("av")
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libvpx" if path.suffix == ".webm" else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        stream.codec_context.gop_size = gop  # keyframes every `gop` frames: seeking matters
        container.start_encoding()  # writes the header even when there are no frames
        for i in range(count):
            frame = np.full((*size, 3), STEP * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def levels(video: np.ndarray, mask: np.ndarray) -> list[int]:
    """The frame numbers of a clip's real frames, read back from their grey levels."""
    return [round(float(f.mean()) * 255 / STEP) for f in video[mask]]


def test_labels_come_from_class_folders(tmp_path):
    write_frames(tmp_path / "walk" / "a", 4)
    write_video(tmp_path / "walk" / "b.mp4", 6)
    write_frames(tmp_path / "run" / "c", 5, ext="jpg")
    folder = VideoFolder(tmp_path, frames=4, size=8)
    assert folder.labeled and folder.classes == ["run", "walk"] and folder.num_classes == 2
    assert folder.names == ["run/c", "walk/a", "walk/b.mp4"]
    assert folder.labels.tolist() == [0, 1, 1]
    item = folder[2]
    assert item["video"].shape == (4, 3, 8, 8) and item["video"].dtype == torch.float32
    assert item["mask"].dtype == torch.bool and item["label"].item() == 1
    assert levels(item["video"].numpy(), item["mask"].numpy()) == [0, 1, 2, 3]


def test_a_flat_folder_is_unlabeled(tmp_path):
    write_frames(tmp_path / "a", 3)
    write_video(tmp_path / "b.mp4", 3)
    folder = VideoFolder(tmp_path, frames=3, size=8)
    assert not folder.labeled and folder.classes is None and folder.labels is None
    assert folder.names == ["a", "b.mp4"]
    assert folder[0]["label"].item() == -1
    videos = folder.to_videos()
    assert isinstance(videos, Videos) and videos.labels is None and videos.mask is None
    assert videos.videos.shape == (2, 3, 3, 8, 8)


def test_short_videos_are_padded_and_masked(tmp_path):
    write_frames(tmp_path / "short", 3)
    write_frames(tmp_path / "long", 6)
    folder = VideoFolder(tmp_path, frames=5, size=4)
    assert folder.names == ["long", "short"]
    video, mask = folder.read(1)
    assert mask.tolist() == [True, True, True, False, False]
    assert levels(video, mask) == [0, 1, 2] and not video[3:].any()
    data = folder.to_videos()
    assert data.mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    whole = VideoFolder(tmp_path, frames=None, size=4)  # whole videos, padded to the longest
    assert whole.frames == 6 and whole.to_videos().mask.sum(1).tolist() == [6, 3]


def test_clip_starts_first_center_random(tmp_path):
    write_frames(tmp_path / "v", 11)  # frame10 sorts after frame9
    first = VideoFolder(tmp_path, frames=4, size=4)
    assert levels(*first.read(0)) == [0, 1, 2, 3]
    center = VideoFolder(tmp_path, frames=4, size=4, clip="center")
    assert levels(*center.read(0)) == [3, 4, 5, 6]
    rand = VideoFolder(tmp_path, frames=4, size=4, clip="random")
    torch.manual_seed(0)
    starts = {levels(*rand.read(0))[0] for _ in range(30)}
    assert starts <= set(range(8)) and len(starts) > 3
    assert levels(*rand.read(0, start=7)) == [7, 8, 9, 10]
    with pytest.raises(ValueError, match="clip must be one of"):
        VideoFolder(tmp_path, clip="last")


@pytest.mark.parametrize("name", ["v.mp4", "v.avi", "v.webm"])
def test_video_file_clips_from_any_start(tmp_path, name):
    write_video(tmp_path / name, 12, gop=3)
    folder = VideoFolder(tmp_path, frames=4, size=8)
    assert folder.entries[0].length == 12  # webm has no count in its header: packets counted
    for start in (0, 1, 5, 8):  # mid-GOP starts: seek to the keyframe before, then decode on
        video, mask = folder.read(0, start)
        assert mask.all() and levels(video, mask) == list(range(start, start + 4))
    video, mask = folder.read(0, 10)  # the last two frames, then padding
    assert mask.tolist() == [True, True, False, False] and levels(video, mask) == [10, 11]


def test_video_file_decoding_without_seeking_and_short_files(tmp_path, monkeypatch):
    write_video(tmp_path / "v.mp4", 12, gop=3)
    real_seek = decoding._seek

    def seek_then_give_up(container, stream, start):
        real_seek(container, stream, start)  # leaves the decoder mid-file
        return None

    monkeypatch.setattr(decoding, "_seek", seek_then_give_up)
    folder = VideoFolder(tmp_path, frames=4, size=8)
    assert levels(*folder.read(0, 5)) == [5, 6, 7, 8]  # decoded from frame 0 instead
    folder.entries[0] = replace(folder.entries[0], length=14)  # a header that overcounts
    video, mask = folder.read(0, 10)
    assert mask.tolist() == [True, True, False, False] and levels(video, mask) == [10, 11]


def test_natural_order_of_frames():
    assert sorted(["f10.png", "f9.png", "f1.png"], key=natural_key) == [
        "f1.png",
        "f9.png",
        "f10.png",
    ]


def test_grayscale_and_resize(tmp_path):
    write_frames(tmp_path / "v", 2, size=(12, 16))
    folder = VideoFolder(tmp_path, frames=2, size=(6, 10), grayscale=True)
    assert folder.frame_shape == (1, 6, 10) and folder[0]["video"].shape == (2, 1, 6, 10)
    assert np.allclose(folder[0]["video"][1], STEP / 255, atol=1e-6)


def test_native_size_keeps_the_common_size(tmp_path):
    write_frames(tmp_path / "a", 2, size=(12, 16))
    write_frames(tmp_path / "b", 2, size=(12, 16))
    write_frames(tmp_path / "c", 2, size=(8, 8))
    with pytest.warns(BadVideoWarning, match=r"c: its frames are 8x8, not the folder's 12x16"):
        folder = VideoFolder(tmp_path, frames=2, size=None)
    assert folder.names == ["a", "b"] and folder.frame_shape == (3, 12, 16)


def test_bad_videos_are_skipped_with_a_warning_naming_them(tmp_path):
    write_frames(tmp_path / "good", 3)
    (tmp_path / "empty").mkdir()
    mixed = write_frames(tmp_path / "mixed", 2)
    Image.new("RGB", (5, 5)).save(mixed / "frame2.png")
    write_frames(tmp_path / "badframe", 2)
    (tmp_path / "badframe" / "frame2.png").write_text("not a png")
    (tmp_path / "broken.mp4").write_bytes(os.urandom(3000))
    write_video(tmp_path / "zero.webm", 0)
    with pytest.warns(BadVideoWarning) as caught:
        folder = VideoFolder(tmp_path, frames=3, size=8)
    assert folder.names == ["good"]
    messages = "\n".join(str(w.message) for w in caught)
    for bad, why in [
        ("empty", "an empty folder"),
        ("mixed", "its frames have different sizes (12x16 in frame0.png, 5x5 in frame2.png)"),
        ("badframe", "the frame frame2.png is unreadable"),
        ("broken.mp4", "it is unreadable"),
        ("zero.webm", "it has no frames"),
    ]:
        assert f"skipping {tmp_path / bad}: {why}" in messages


def test_nothing_usable_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        VideoFolder(tmp_path / "nowhere")
    with pytest.raises(DataError, match="holds no videos"):
        VideoFolder(tmp_path)
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0.png").write_text("not a png")
    with pytest.raises(DataError, match="none of the 1 videos"), pytest.warns(BadVideoWarning):
        VideoFolder(tmp_path)


def test_mixed_layout_needs_a_choice(tmp_path):
    write_frames(tmp_path / "loose", 2)
    write_frames(tmp_path / "cls" / "inner", 2)
    with pytest.raises(DataError, match="both videos .* and class folders"):
        VideoFolder(tmp_path, frames=2, size=4)
    flat = VideoFolder(tmp_path, frames=2, size=4, labeled=False)
    assert flat.names == ["cls/inner", "loose"] and flat.labels is None
    with pytest.warns(BadVideoWarning, match="loose: a video outside the class folders"):
        labeled = VideoFolder(tmp_path, frames=2, size=4, labeled=True)
    assert labeled.names == ["cls/inner"] and labeled.classes == ["cls"]


def test_ucf101_style_split_lists(tmp_path):
    root, lists = tmp_path / "UCF", tmp_path / "ucfTrainTestlist"
    for cls in ("Archery", "Bowling"):
        for g in (1, 2):
            write_frames(root / cls / f"v_{cls}_g0{g}_c01", 2)  # frames extracted from an .avi
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Bowling\n2 Archery\n")  # not alphabetical
    (lists / "trainlist01.txt").write_text(
        "Archery/v_Archery_g02_c01.avi 2\nBowling/v_Bowling_g02_c01.avi 1\n"
    )
    (lists / "testlist01.txt").write_text(
        "Archery/v_Archery_g01_c01.avi\nBowling/v_Bowling_g01_c01.avi\nBowling/v_gone.avi\n"
    )
    train = VideoFolder(root, frames=2, size=4, split=lists / "trainlist01.txt")
    assert train.classes == ["Bowling", "Archery"]
    assert train.names == ["Archery/v_Archery_g02_c01", "Bowling/v_Bowling_g02_c01"]
    assert train.labels.tolist() == [1, 0]
    with pytest.warns(BadVideoWarning, match="not in the folder: Bowling/v_gone.avi"):
        test = VideoFolder(root, frames=2, size=4, split=lists / "testlist01.txt")
    assert test.names == ["Archery/v_Archery_g01_c01", "Bowling/v_Bowling_g01_c01"]
    assert test.classes == train.classes and test.labels.tolist() == [1, 0]
    with pytest.raises(DataError, match="split list nolist.txt was found neither"):
        VideoFolder(root, split="nolist.txt")


def test_to_videos_memory_map_and_workers_match(tmp_path):
    write_frames(tmp_path / "a" / "x", 3)
    write_frames(tmp_path / "b" / "y", 5)
    write_video(tmp_path / "b" / "z.mp4", 4)
    folder = VideoFolder(tmp_path, frames=4, size=8)
    memory = folder.to_videos()
    mapped = folder.to_videos(tmp_path / "cache" / "clips.npy", workers=2, batch_size=2)
    assert isinstance(mapped.videos, np.memmap) and not mapped.videos.flags.writeable
    assert np.array_equal(memory.videos, mapped.videos)
    assert np.array_equal(memory.mask, mapped.mask) and memory.labels.tolist() == [0, 1, 1]
    assert not list((tmp_path / "cache").glob(".*tmp"))  # no temporary file left behind
    batch = next(iter(folder.loader(batch_size=3, workers=2)))
    assert batch["video"].shape == (3, 4, 3, 8, 8)
    assert torch.equal(batch["video"], torch.from_numpy(memory.videos))


def _read_first_clip(folder: VideoFolder) -> None:
    folder.read(0, 0)


def test_a_forked_worker_decodes_after_its_parent_did(tmp_path):
    # PyAV >= 18.1.1 keeps a frame scaler per thread, with its own scaling threads; a forked
    # DataLoader worker inherited the parent's without those threads and waited forever
    write_video(tmp_path / "v" / "z.mp4", 4)
    folder = VideoFolder(tmp_path, frames=4, size=8)
    folder.read(0, 0)  # the parent decodes and scales first
    worker = multiprocessing.get_context("fork").Process(target=_read_first_clip, args=(folder,))
    worker.start()
    worker.join(timeout=120)
    hung = worker.is_alive()
    if hung:
        worker.kill()
    assert not hung and worker.exitcode == 0


def test_zca_fitted_on_training_clips_whitens_them(tmp_path):
    rng = np.random.default_rng(0)
    for v in range(8):
        (tmp_path / f"v{v}").mkdir()
        for t in range(8 if v else 5):  # v0 is short: its padded frames stay out
            pixels = rng.integers(0, 256, (4, 4), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / f"v{v}" / f"{t}.png")
    folder = VideoFolder(tmp_path, frames=8, size=4, grayscale=True)
    raw = folder.to_videos()
    zca = folder.fit_zca(epsilon=1e-6, max_clips=None)
    white = folder.to_videos()
    real = white.videos[white.mask].reshape(-1, 16)
    assert real.shape == (61, 16) and np.abs(real.mean(0)).max() < 1e-4
    assert np.allclose(np.cov(real.T, bias=True), np.eye(16), atol=1e-3)
    assert not white.videos[~white.mask].any()
    assert np.allclose(zca.apply(raw.videos.copy(), raw.mask), white.videos, atol=1e-5)
    with pytest.raises(ValueError, match="frames of 16 values"):
        VideoFolder(tmp_path, frames=8, size=5, grayscale=True, zca=zca)


def test_missing_pyav_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 100)
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails
    with pytest.raises(ImportError, match=r"pip install 'gksparse\[video\]'"):
        VideoFolder(tmp_path)


def test_importing_gksparse_does_not_import_pyav():
    code = (
        "import sys, gksparse, gksparse.data.videofolder, gksparse.protocol.trained;"
        "import gksparse.features;"
        "assert 'av' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_folder_holds_out_test_videos_of_every_class(tmp_path):
    for cls in ("a", "b"):
        for v in range(5):
            write_frames(tmp_path / "videos" / cls / f"v{v}", 6)
    data = load_folder(tmp_path / "videos", frames=4, size=4, test_fraction=0.2, seed=1)
    assert data.split == "random" and data.num_classes == 2 and data.zca is None
    assert data.train.labels.tolist() == [0] * 4 + [1] * 4 and data.test.labels.tolist() == [0, 1]
    assert data.train.videos.shape == (8, 4, 3, 4, 4) and data.train.mask is None
    assert all(levels(v, np.ones(4, bool)) == [0, 1, 2, 3] for v in data.test.videos)
    starts = [levels(v, np.ones(4, bool))[0] for v in data.train.videos]  # random, seeded
    assert set(starts) <= {0, 1, 2} and len(set(starts)) > 1
    again = load_folder(tmp_path / "videos", frames=4, size=4, test_fraction=0.2, seed=1)
    assert np.array_equal(again.train.videos, data.train.videos)
    cached = load_folder(
        tmp_path / "videos", frames=4, size=4, seed=1, cache_dir=tmp_path, workers=2
    )
    assert isinstance(cached.train.videos, np.memmap)
    assert np.array_equal(cached.train.videos, data.train.videos)
    assert not list(tmp_path.glob("gksparse-*"))  # the mapped files are already unlinked


def test_load_folder_unlabeled_with_zca_is_for_pretraining_only(tmp_path):
    rng = np.random.default_rng(0)
    for v in range(6):
        (tmp_path / f"v{v}").mkdir()
        for t in range(5):
            Image.fromarray(rng.integers(0, 256, (4, 4), np.uint8)).save(tmp_path / f"v{v}/{t}.png")
    data = load_folder(tmp_path, frames=6, size=4, grayscale=True, zca=True, zca_epsilon=1e-6)
    assert data.split == "none" and data.num_classes == 0 and data.train.labels is None
    assert len(data.test) == 6 and data.test.mask[:, 5].sum() == 0
    real = data.test.videos[data.test.mask].reshape(-1, 16)
    assert np.allclose(np.cov(real.T, bias=True), np.eye(16), atol=1e-3)  # whitened
    with pytest.raises(ValueError, match="no labels"):
        data.labeled_split(2, np.random.default_rng(0))


def test_load_folder_with_split_lists(tmp_path):
    for cls in ("x", "y"):
        for v in range(3):
            write_frames(tmp_path / cls / f"{cls}{v}", 2)
    (tmp_path / "train.txt").write_text("x/x0.avi\nx/x1.avi\ny/y0.avi\ny/y1.avi\n")
    (tmp_path / "test.txt").write_text("x/x2.avi\ny/y2.avi\n")
    data = load_folder(
        tmp_path, frames=2, size=4, train_split="train.txt", test_split="test.txt", train_size=3
    )
    assert len(data.train) == 3 and data.test.labels.tolist() == [0, 1]
