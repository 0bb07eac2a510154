"""Atomic writes: a path holds its old content or the whole new one, never a half, and no temporary stays."""

import pytest

from metaprune.files import atomic_path, write_bytes


def test_a_file_appears_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    path = tmp_path / "a.json"
    write_bytes(path, b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        assert path.read_bytes() == b"old"  # not visible before the block ends
        raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_folder_replaces_the_old_folder_only_when_complete(tmp_path):
    path = tmp_path / "model"
    with atomic_path(path, folder=True) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(KeyboardInterrupt), atomic_path(path, folder=True) as tmp:
        (tmp / "y").write_text("2")
        raise KeyboardInterrupt
    assert sorted(p.name for p in path.iterdir()) == ["x"]
    with atomic_path(path, folder=True, tag="creating") as tmp:
        assert tmp.name.startswith(".model.creating-")
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in path.iterdir()) == ["y"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
