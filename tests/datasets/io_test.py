"""Download (checksum, atomic, offline reuse), data lookup, array cache."""

import hashlib
import os
import pathlib
import time
import zipfile

import numpy as np
import pytest

from keras_dib.datasets import _io
from keras_dib.datasets import load_cifar10
from tests.datasets import fakes

pytestmark = pytest.mark.backend_free


def _sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _cache_files(tmp_path):
    root = tmp_path / "keras_home" / "datasets"
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def remote_cifar10(tmp_path, monkeypatch):
    """A local official archive served through a file:// URL."""
    server = tmp_path / "server"
    server.mkdir()
    path, rows, labels = fakes.write_cifar10(str(server))
    digest = _sha256(path)

    def serve(file_hash=None, url=None):
        monkeypatch.setitem(
            _io.REMOTE_FILES,
            "cifar10",
            [
                (
                    "cifar-10-python.tar.gz",
                    url or pathlib.Path(path).as_uri(),
                    file_hash or digest,
                )
            ],
        )

    return serve, path, rows, labels


def test_download_then_offline_reuse(tmp_path, remote_cifar10):
    serve, path, rows, labels = remote_cifar10
    serve()
    (x_train, y_train), _ = load_cifar10(cache=False)
    np.testing.assert_array_equal(x_train, fakes.rows_to_images(rows[:30]))
    np.testing.assert_array_equal(y_train, labels[:30])
    assert _cache_files(tmp_path) == [
        "cifar10",
        "cifar10/cifar-10-python.tar.gz",
    ]
    # Offline: the source is gone, the cache is used.
    os.remove(path)
    serve(url=(tmp_path / "gone.tar.gz").as_uri())
    (x_again, _), _ = load_cifar10(cache=False)
    np.testing.assert_array_equal(x_again, x_train)


def test_bad_checksum_leaves_nothing(tmp_path, remote_cifar10):
    serve, *_ = remote_cifar10
    serve(file_hash="0" * 64)
    with pytest.raises(ValueError, match="Checksum mismatch"):
        load_cifar10(cache=False)
    assert _cache_files(tmp_path) == []


def test_failed_download_leaves_nothing(tmp_path, remote_cifar10):
    serve, *_ = remote_cifar10
    serve(url=(tmp_path / "missing.tar.gz").as_uri())
    with pytest.raises(OSError, match="data_dir"):
        load_cifar10(cache=False)
    assert _cache_files(tmp_path) == []


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, size):
            self.calls += 1
            if self.calls > 1:
                raise KeyboardInterrupt
            return b"x" * 10

        def __enter__(self):
            return self

        def __exit__(self, *args):
            return False

    monkeypatch.setattr(
        _io.urllib.request, "urlopen", lambda url, timeout: Broken()
    )
    destination = tmp_path / "cache" / "file.bin"
    with pytest.raises(KeyboardInterrupt):
        _io.download("https://example.invalid/file.bin", str(destination))
    assert os.listdir(tmp_path / "cache") == []


def test_md5_checksums_are_accepted(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"hello")
    md5 = hashlib.md5(b"hello").hexdigest()
    destination = tmp_path / "out" / "a.bin"
    _io.download(source.as_uri(), str(destination), md5)
    assert destination.read_bytes() == b"hello"
    assert _io.verify_file(str(destination), md5)


def test_environment_data_folder(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "cifar10").mkdir(parents=True)
    _, rows, _ = fakes.write_cifar10(str(root / "cifar10"))
    monkeypatch.setenv("KERAS_DIB_DATA", str(root))
    monkeypatch.setitem(_io.REMOTE_FILES, "cifar10", [])  # never download
    (x_train, _), _ = load_cifar10(cache=False)
    np.testing.assert_array_equal(x_train, fakes.rows_to_images(rows[:30]))


def test_decoded_array_cache_is_invalidated(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    fakes.write_cifar10(str(data), as_tar=False)
    first = load_cifar10(str(data))
    cache_dir = tmp_path / "keras_home" / "datasets" / "keras_dib_cache"
    entries = os.listdir(cache_dir)
    assert len(entries) == 1 and entries[0].endswith(".npz")
    np.testing.assert_array_equal(load_cifar10(str(data))[0][0], first[0][0])
    # Change one source file: the cache must not be used any more.
    batch = data / "cifar-10-batches-py" / "test_batch"
    labels = [[0] * 6 for _ in range(6)]
    (data / "cifar-10-batches-py").rename(tmp_path / "old")
    fakes.write_cifar10(str(data), as_tar=False, labels=labels)
    later = time.time() + 10
    os.utime(batch, (later, later))
    (_, _), (_, y_test) = load_cifar10(str(data))
    np.testing.assert_array_equal(y_test, [0] * 6)
    assert len(os.listdir(cache_dir)) == 1  # the stale entry was removed


def _cache_dir(tmp_path):
    return tmp_path / "keras_home" / "datasets" / "keras_dib_cache"


def test_cache_entries_of_two_folders_do_not_evict_each_other(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for data in (first, second):
        data.mkdir()
        fakes.write_cifar10(str(data), as_tar=False)
    load_cifar10(str(first))
    entries = sorted(os.listdir(_cache_dir(tmp_path)))
    load_cifar10(str(second))
    both = sorted(os.listdir(_cache_dir(tmp_path)))
    assert len(both) == 2 and set(entries) < set(both)
    # Reading the first folder again uses (and keeps) its own entry.
    load_cifar10(str(first))
    assert sorted(os.listdir(_cache_dir(tmp_path))) == both


def test_partial_cache_files_of_killed_writers_are_removed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    fakes.write_cifar10(str(data), as_tar=False)
    cache_dir = _cache_dir(tmp_path)
    cache_dir.mkdir(parents=True)
    # A writer that is gone (no such process), an old one of the former
    # naming (no process id), and one being written by a live process.
    dead = cache_dir / ".cifar10-0123456789ab-0.999999999.x1y2.npz.part"
    old = cache_dir / ".cifar10-k3j4h5.npz.part"
    live = cache_dir / f".gtsrb-0123456789ab-0.{os.getpid()}.abcd.npz.part"
    for path in (dead, old, live):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    load_cifar10(str(data))
    names = os.listdir(cache_dir)
    assert dead.name not in names and old.name not in names
    assert live.name in names
    assert len([n for n in names if n.endswith(".npz")]) == 1


def test_corrupt_deflate_stream_names_archive_and_member(tmp_path):
    member = "GTSRB/Final_Training/Images/00000/00000_00000.ppm"
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, b"P6\n32 32\n255\n" + bytes(range(256)) * 12)
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo(member)
    # The compressed data starts after the 30-byte local header, the name
    # and the extra field (lengths at bytes 26 and 28 of the local header):
    # overwrite its start with an invalid deflate block type.
    header = info.header_offset
    name_length = int.from_bytes(raw[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(raw[header + 28 : header + 30], "little")
    start = header + 30 + name_length + extra_length
    raw[start : start + 8] = b"\xff" * 8
    archive.write_bytes(bytes(raw))
    with _io.FileIndex(str(archive)) as index:
        with pytest.raises(ValueError) as error:
            index.read(member)
    message = str(error.value)
    assert str(archive) in message and member in message
    assert "error" in message.lower()
