"""Filling a memory-mapped `.npy` file from worker processes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from gksparse.data.parallel import fill


def squares(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.float32) ** 2)[:, None].repeat(3, axis=1)


def dies(values: np.ndarray) -> np.ndarray:
    if values[0] == 40:
        os._exit(1)  # as if killed, e.g. out of memory
    return squares(values)


@pytest.mark.parametrize("processes", [1, 2])
def test_every_task_writes_its_rows(tmp_path, processes):
    path = tmp_path / "out.npy"
    np.lib.format.open_memmap(path, "w+", np.float32, (100, 3)).flush()
    values = np.arange(100)
    tasks = [(start, (values[start : start + 7],)) for start in range(0, 100, 7)]
    fill(path, squares, tasks, desc="test", progress=False, processes=processes)
    np.testing.assert_array_equal(np.load(path), squares(values))


def test_a_dead_worker_is_an_error_not_a_hang(tmp_path):
    path = tmp_path / "out.npy"
    np.lib.format.open_memmap(path, "w+", np.float32, (100, 3)).flush()
    values = np.arange(100)
    tasks = [(start, (values[start : start + 10],)) for start in range(0, 100, 10)]
    with pytest.raises(RuntimeError, match="a worker process died while generating test"):
        fill(path, dies, tasks, desc="test", progress=False, processes=2)
