"""Pretrain on a folder -> `load_encoder` -> `python -m gksparse.features`: the round trip."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gksparse.data.videofolder import VideoFolder
from gksparse.features import cli, main
from gksparse.model.checkpoint import save_checkpoint
from gksparse.model.video import ModelConfig, build_model
from gksparse.protocol.trained import TrainedEncoder, load_encoder, zca_to_extra
from gksparse.training.engine import Stage, fit, pretrain_loss

FRAMES, SIZE = 4, 8


def moving_bar(t: int, direction: int, count: int = 6) -> np.ndarray:
    """A `(SIZE, SIZE)` uint8 frame with a bright vertical bar that moves with t."""
    frame = np.full((SIZE, SIZE), 30, np.uint8)
    frame[:, (2 + direction * t) % SIZE] = 220
    return frame


def make_folder(root: Path) -> Path:
    """Two classes of frame folders (bars moving left / right), one of them with an mp4 too."""
    av = pytest.importorskip("av")
    for cls, direction in (("left", -1), ("right", 1)):
        for v in range(3):
            folder = root / cls / f"clip{v}"
            folder.mkdir(parents=True)
            for t in range(FRAMES + v):  # clip0 is exactly a clip; the others are longer
                Image.fromarray(moving_bar(t + v, direction)).save(folder / f"{t:03d}.png")
    with av.open(str(root / "right" / "short.mp4"), "w") as container:  # shorter than a clip
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = SIZE * 2, SIZE * 2, "yuv420p"
        for t in range(FRAMES - 1):
            grey = np.kron(moving_bar(t, 1), np.ones((2, 2), np.uint8))
            rgb = np.repeat(grey[..., None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return root


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A run folder as the protocol writes it: config.json and pretrained.pt (with ZCA)."""
    tmp = tmp_path_factory.mktemp("features")
    videos = make_folder(tmp / "videos")
    folder = VideoFolder(videos, frames=FRAMES, size=SIZE, grayscale=True, clip="random")
    with pytest.warns(UserWarning, match="fitted on only 27 frames"):  # 27 < 64 values
        zca = folder.fit_zca(epsilon=1e-2)
    train = folder.to_videos()
    assert train.mask is not None  # the mp4 is padded
    torch.manual_seed(0)
    config = ModelConfig(
        "groupwtacrnn", 1, SIZE, SIZE, folder.num_classes, filters=8, dec_kernel=3, groups=4
    )
    model = build_model(config)
    stage = Stage("pretrain", model.trainable("pretrain"), pretrain_loss, epochs=2, batch_size=4)
    history = fit(model, stage, train, progress=False, device=torch.device("cpu"))
    assert all(np.isfinite(h["loss"]) for h in history)
    run = tmp / "results" / "videos" / "1"
    save_checkpoint(run / "pretrained.pt", model, **zca_to_extra(zca))
    (run / "config.json").write_text(json.dumps({"frames": FRAMES, "method": "groupwtacrnn"}))
    return run, videos, model, zca


def test_load_encoder_gives_the_trained_encoder_in_eval_mode(pretrained_run):
    run, _, model, zca = pretrained_run
    for source in (run, run / "pretrained.pt"):
        encoder = load_encoder(source)
        assert isinstance(encoder, TrainedEncoder) and not encoder.training
        assert not any(m.training for m in encoder.modules())
        assert encoder.config == model.config and encoder.frame_shape == (1, SIZE, SIZE)
        assert encoder.run_config["frames"] == FRAMES
        assert np.array_equal(encoder.zca.mean, zca.mean)
        assert np.array_equal(encoder.zca.matrix, zca.matrix)
        for name, value in model.encoder.state_dict().items():
            assert torch.equal(encoder.encoder.state_dict()[name], value), name
        x = torch.rand(2, FRAMES, 1, SIZE, SIZE)
        assert encoder(x).shape == (2, FRAMES, 8, SIZE, SIZE)


def test_features_cli_writes_what_the_classifier_sees(pretrained_run, tmp_path):
    run, videos, model, zca = pretrained_run
    out = main([str(run), str(videos), str(tmp_path / "feats.npz")])
    with np.load(out) as f:
        features, names, labels, classes = f["features"], f["names"], f["labels"], f["classes"]
    folder = VideoFolder(videos, frames=FRAMES, size=SIZE, grayscale=True, zca=zca)
    assert names.tolist() == folder.names and "right/short.mp4" in names
    assert labels.tolist() == folder.labels.tolist() and classes.tolist() == ["left", "right"]
    assert features.shape == (len(folder), 8 * (SIZE // 2) * (SIZE // 2))
    assert features.dtype == np.float32
    # The same whitened first clips through the trained model: its head's dense layer on a
    # feature vector gives exactly the classifier's (eval-mode) logits.
    data = folder.to_videos()
    x, mask = torch.from_numpy(data.videos), torch.from_numpy(data.mask)
    model.eval()
    with torch.no_grad():
        logits = model(x, mask)
        from_features = model.head.dense(torch.from_numpy(features))
    assert torch.allclose(from_features, logits, atol=1e-5)
    assert not np.allclose(features[0], features[-1])


def test_features_run_as_a_module(pretrained_run, tmp_path):
    run, videos, _, _ = pretrained_run
    out = tmp_path / "f.npz"
    result = subprocess.run(
        [sys.executable, "-m", "gksparse.features", str(run), str(videos), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 7 feature vectors of 128 values" in result.stdout
    with np.load(out) as f:
        assert f["features"].shape == (7, 128)


def test_features_of_a_results_folder_come_from_its_newest_completed_run(
    pretrained_run, tmp_path, capsys
):
    run, videos, model, _ = pretrained_run
    results = tmp_path / "results" / "videos"
    shutil.copytree(run, results / "3")
    (results / "3" / "run.json").write_text(json.dumps({"status": "COMPLETED"}))
    torch.manual_seed(1)  # a newer, failed run with other weights
    save_checkpoint(results / "4" / "pretrained.pt", build_model(model.config))
    shutil.copy(run / "config.json", results / "4" / "config.json")
    (results / "4" / "run.json").write_text(json.dumps({"status": "FAILED"}))
    capsys.readouterr()
    out = main([str(results), str(videos), str(tmp_path / "newest.npz")])
    assert f"{results / '3' / 'pretrained.pt'}) to {out}" in capsys.readouterr().out
    wanted = main([str(run), str(videos), str(tmp_path / "run.npz")])
    failed = main([str(results / "4"), str(videos), str(tmp_path / "failed.npz")])
    with np.load(out) as f, np.load(wanted) as w, np.load(failed) as x:
        assert np.array_equal(f["features"], w["features"])
        assert not np.allclose(f["features"], x["features"])
    (results / "3" / "run.json").write_text(json.dumps({"status": "RUNNING"}))
    assert cli([str(results), str(videos), str(tmp_path / "none.npz")]) == 2
    assert capsys.readouterr().err == (
        f"error: {results} holds no completed run (newest runs: 3 RUNNING, 4 FAILED); "
        "finish or resume one, or pass a run folder or a .pt file.\n"
    )
    assert not (tmp_path / "none.npz").exists()


def test_checkpoint_choice_errors(pretrained_run, tmp_path):
    run, _, _, _ = pretrained_run
    with pytest.raises(FileNotFoundError, match="no finetuned\\*.pt checkpoint .* pretrained.pt"):
        load_encoder(run, which="finetuned")
    with pytest.raises(FileNotFoundError, match="neither a run folder nor a checkpoint"):
        load_encoder(tmp_path / "missing")
    for n in (300, 600):
        (tmp_path / f"finetuned_{n}.pt").write_bytes((run / "pretrained.pt").read_bytes())
    with pytest.raises(ValueError, match="several finetuned\\*.pt"):
        load_encoder(tmp_path, which="finetuned")
    assert load_encoder(tmp_path, which="finetuned_600").path.name == "finetuned_600.pt"


def test_cli_errors_are_one_line(pretrained_run, tmp_path, capsys):
    run, videos, _, _ = pretrained_run
    assert cli([str(tmp_path / "no_run"), str(videos), str(tmp_path / "f.npz")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path / 'no_run'} is neither a run folder nor a checkpoint file.\n"
    )
    assert cli([str(run), str(tmp_path / "no_videos"), str(tmp_path / "f.npz")]) == 2
    assert "no_videos does not exist" in capsys.readouterr().err
    assert not (tmp_path / "f.npz").exists()
