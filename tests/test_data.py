"""Tests for harness/data.py: idx reader, lookup, checksums and download, on the real files.

MNIST comes from ../shared/data/mnist (relative to the repository root; override with
NN_PARITY_MNIST_DIR), Fashion-MNIST from Debian's /usr/share/datasets/fashion-mnist.
Downloads are tested against real HTTP servers on 127.0.0.1 serving copies of those files.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from harness import data as hd
from harness.data import (
    DataError,
    Dataset,
    download_dataset,
    find_dataset,
    load_dataset,
    read_idx,
    verify_file,
)

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Published facts, independent of the code under test.
MNIST_PUBLISHED_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_PUBLISHED_MD5 = {  # github.com/zalandoresearch/fashion-mnist README
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
MNIST_FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _mnist_dir() -> Path:
    env = os.environ.get("NN_PARITY_MNIST_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the user's cache, NN_PARITY_DATA or NN_PARITY_MIRRORS."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("NN_PARITY_DATA", raising=False)
    monkeypatch.delenv("NN_PARITY_MIRRORS", raising=False)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    d = _mnist_dir()
    missing = [f for f in FILES if not (d / f"{f}.gz").is_file()]
    if missing:
        pytest.fail(
            f"the real MNIST files are needed in {d} (or set NN_PARITY_MNIST_DIR); "
            f"missing: {', '.join(missing)}"
        )
    return d


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    if not all((DEBIAN_FASHION_DIR / f"{f}.gz").is_file() for f in FILES):
        msg = "Fashion-MNIST not installed: apt-get install dataset-fashion-mnist"
        if os.environ.get("CI"):  # CI installs it (.ci/run): missing there is a failure
            pytest.fail(msg)
        pytest.skip(msg)
    return DEBIAN_FASHION_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> Dataset:
    return load_dataset("mnist", data_dir=mnist_dir)


@pytest.fixture(scope="session")
def mnist_raw_bytes(mnist_dir: Path) -> dict[str, bytes]:
    """Decompressed idx bytes of the small MNIST files, decoded by the stdlib alone."""
    names = ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return {n: gzip.decompress((mnist_dir / f"{n}.gz").read_bytes()) for n in names}


def _link_files(src: Path, dst: Path, names: tuple[str, ...] = FILES) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        (dst / f"{n}.gz").symlink_to(src / f"{n}.gz")
    return dst


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_same_files(dest: Path, src: Path) -> None:
    """The four .gz files in ``dest`` are byte-identical to those in ``src``."""
    for stem in FILES:
        assert _sha256(dest / f"{stem}.gz") == _sha256(src / f"{stem}.gz"), stem


def _leftovers(directory: Path) -> list[str]:
    """Files in a download directory that are not one of the four data files."""
    return sorted(p.name for p in directory.iterdir() if p.name not in {f"{f}.gz" for f in FILES})


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


# --------------------------------------------------------------------------------------------
# real HTTP mirrors on 127.0.0.1
# --------------------------------------------------------------------------------------------


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a dropped connection is the point of some tests


class _FileHandler(http.server.SimpleHTTPRequestHandler):
    log: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.log.append(self.path)
        super().do_GET()


class _DroppingHandler(http.server.BaseHTTPRequestHandler):
    """Announces the full Content-Length, sends half of the file, then closes the socket."""

    log: list[str]
    root: Path

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.log.append(self.path)
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


class _DrippingHandler(_DroppingHandler):
    """Announces the full Content-Length, then sends one byte every 20 ms (a stalled mirror
    that never trips a per-read timeout), and hangs up after 20 s (so that a loader without
    a progress limit fails this test instead of hanging it)."""

    def do_GET(self) -> None:
        self.log.append(self.path)
        body = (self.root / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        end = time.monotonic() + 20
        try:
            for i in range(len(body)):
                if time.monotonic() > end:
                    break
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.02)
        except OSError:
            pass  # the client gave up


Mirror = tuple[str, list[str]]  # (base URL, paths requested)


@pytest.fixture
def http_mirror() -> Iterator[Callable[..., Mirror]]:
    """Start real HTTP servers on 127.0.0.1 (port 0): ``start(directory, drop=, drip=)``."""
    servers: list[tuple[_QuietServer, threading.Thread]] = []

    def start(directory: Path, drop: bool = False, drip: bool = False) -> Mirror:
        log: list[str] = []
        handler: Callable[..., http.server.BaseHTTPRequestHandler]
        if drop or drip:
            base = _DrippingHandler if drip else _DroppingHandler
            handler = type("Odd", (base,), {"log": log, "root": directory})
        else:
            cls = type("Files", (_FileHandler,), {"log": log})
            handler = functools.partial(cls, directory=str(directory))
        server = _QuietServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread))
        host, port = server.server_address[:2]
        return f"http://{host}:{port}/", log

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# the real files
# --------------------------------------------------------------------------------------------


def test_mnist_shapes_dtypes_and_value_range(mnist: Dataset) -> None:
    assert mnist.x_train.shape == (60000, 784), "MNIST has 60000 training images of 28x28"
    assert mnist.x_test.shape == (10000, 784), "MNIST has 10000 test images of 28x28"
    assert mnist.t_train.shape == (60000,) and mnist.t_test.shape == (10000,)
    assert mnist.x_train.dtype == np.float32 and mnist.x_test.dtype == np.float32
    assert mnist.t_train.dtype == np.int64 and mnist.t_test.dtype == np.int64
    for x in (mnist.x_train, mnist.x_test):
        assert x.min() == 0.0 and x.max() == 1.0, "normalized pixels must span exactly [0, 1]"
    assert mnist.name == "mnist"


def test_mnist_unnormalized_pixels_are_integers_0_to_255(mnist_dir: Path) -> None:
    ds = load_dataset("mnist", data_dir=mnist_dir, normalize=False)
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0
    assert np.array_equal(ds.x_train, np.round(ds.x_train)), "raw pixels must be whole numbers"


def test_mnist_label_counts_match_published_counts(mnist: Dataset) -> None:
    assert np.bincount(mnist.t_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.t_test, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_mnist_first_labels_match_published_order(mnist: Dataset) -> None:
    assert mnist.t_train[:10].tolist() == MNIST_FIRST_TRAIN_LABELS
    assert mnist.t_test[:10].tolist() == MNIST_FIRST_TEST_LABELS


def test_fashion_mnist_found_in_debian_dir_and_balanced(fashion_dir: Path) -> None:
    ds = load_dataset("fashion-mnist")
    assert Path(ds.source) == fashion_dir, "with nothing else configured, Debian's copy is used"
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0
    # Published: 6000 training and 1000 test images per class.
    assert np.bincount(ds.t_train, minlength=10).tolist() == [6000] * 10
    assert np.bincount(ds.t_test, minlength=10).tolist() == [1000] * 10


def test_mnist_files_match_published_checksums(mnist_dir: Path) -> None:
    sums = {}
    for line in (mnist_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    for stem in FILES:
        path = mnist_dir / f"{stem}.gz"
        data = path.read_bytes()
        assert hashlib.md5(data).hexdigest() == MNIST_PUBLISHED_MD5[path.name], path
        assert hashlib.sha256(data).hexdigest() == sums[path.name], path
        ck = hd.CHECKSUMS["mnist"][stem]
        assert ck.gz_md5 == MNIST_PUBLISHED_MD5[path.name], f"md5 table wrong for {stem}"
        assert sums[path.name] in ck.gz_sha256, f"sha256 table wrong for {stem}"
        assert ck.raw_sha256 == hashlib.sha256(gzip.decompress(data)).hexdigest()
        verify_file(path, "mnist", stem)  # raises if the module disagrees


def test_debian_fashion_files_are_the_published_zalando_files(
    fashion_dir: Path, tmp_path: Path
) -> None:
    """Debian stripped the file name from the gzip header and changed its mtime. With the
    original header put back (FNAME flag + name, mtime 2017-08-31) the bytes have exactly the
    md5 published by zalandoresearch, so the deflate streams are the published ones."""
    mtimes = {
        "train-images-idx3-ubyte": 1504176606,
        "train-labels-idx1-ubyte": 1504176606,
        "t10k-images-idx3-ubyte": 1504176627,
        "t10k-labels-idx1-ubyte": 1504176627,
    }
    for stem in FILES:
        deb = (fashion_dir / f"{stem}.gz").read_bytes()
        assert deb[:4] == b"\x1f\x8b\x08\x00", "Debian's header has no FNAME field"
        original = (
            deb[:3] + b"\x08" + struct.pack("<I", mtimes[stem]) + deb[8:10]
            + stem.encode() + b"\x00" + deb[10:]
        )  # fmt: skip
        md5 = hashlib.md5(original).hexdigest()
        assert md5 == FASHION_PUBLISHED_MD5[f"{stem}.gz"], f"{stem}: not the published file"
        assert hd.CHECKSUMS["fashion-mnist"][stem].gz_md5 == md5
        assert gzip.decompress(original) == gzip.decompress(deb)
        # Both publications pass verification (a download gets the original one).
        published = tmp_path / f"{stem}.gz"
        published.write_bytes(original)
        verify_file(published, "fashion-mnist", stem)
        verify_file(fashion_dir / f"{stem}.gz", "fashion-mnist", stem)


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


def test_normalize_is_division_by_255_in_float32(mnist: Dataset, mnist_dir: Path) -> None:
    raw = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz").reshape(10000, -1)
    expected = raw.astype(np.float32) / np.float32(255)
    assert expected.dtype == np.float32
    np.testing.assert_array_equal(mnist.x_test, expected)


def test_float64_option(mnist_dir: Path) -> None:
    ds = load_dataset("mnist", data_dir=mnist_dir, dtype=np.float64, one_hot=True)
    raw = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz").reshape(10000, -1)
    assert ds.x_test.dtype == np.float64 and ds.t_test.dtype == np.float64
    np.testing.assert_array_equal(ds.x_test, raw / 255.0)


@pytest.mark.parametrize(
    "bad", [np.float16, np.int32, np.uint8, "int64", "complex128", "bogus", None]
)
def test_unsupported_dtype_is_rejected(mnist_dir: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="float32 or float64"):
        load_dataset("mnist", data_dir=mnist_dir, dtype=bad)  # type: ignore[arg-type]


def test_unknown_dataset_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="mnist, fashion-mnist"):
        load_dataset("cifar10")


def test_flatten_false_gives_nchw(mnist: Dataset, mnist_dir: Path) -> None:
    ds = load_dataset("mnist", data_dir=mnist_dir, flatten=False)
    assert ds.x_train.shape == (60000, 1, 28, 28)
    assert ds.x_test.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(ds.x_test.reshape(10000, 784), mnist.x_test)


def test_one_hot_labels(mnist: Dataset, mnist_dir: Path) -> None:
    ds = load_dataset("mnist", data_dir=mnist_dir, one_hot=True)
    assert ds.t_train.shape == (60000, 10) and ds.t_train.dtype == np.float32
    assert set(np.unique(ds.t_train).tolist()) == {0.0, 1.0}
    assert (ds.t_train.sum(axis=1) == 1).all(), "exactly one hot entry per row"
    np.testing.assert_array_equal(ds.t_train.argmax(axis=1), mnist.t_train)
    np.testing.assert_array_equal(ds.t_test.argmax(axis=1), mnist.t_test)


def test_every_call_returns_fresh_writable_arrays(mnist_dir: Path) -> None:
    first = load_dataset("mnist", data_dir=mnist_dir, normalize=False)
    for arr in (first.x_train, first.t_train, first.x_test, first.t_test):
        assert arr.flags.writeable
    first.x_train[:] = -1
    first.t_train[:] = -1
    second = load_dataset("mnist", data_dir=mnist_dir, normalize=False)
    assert second.x_train.min() == 0 and second.x_train.max() == 255, "cache was corrupted"
    assert second.t_train[:10].tolist() == MNIST_FIRST_TRAIN_LABELS, "cache was corrupted"
    assert not np.shares_memory(first.x_train, second.x_train)


def test_cache_notices_a_changed_file(mnist_dir: Path, tmp_path: Path) -> None:
    d = _link_files(mnist_dir, tmp_path / "d", FILES[:3])
    labels = d / "t10k-labels-idx1-ubyte.gz"
    shutil.copyfile(mnist_dir / labels.name, labels)
    before = load_dataset("mnist", data_dir=d)
    assert before.t_test[:10].tolist() == MNIST_FIRST_TEST_LABELS
    labels.write_bytes(gzip.compress(struct.pack(">II", 0x801, 10000) + bytes(10000)))
    st = labels.stat()
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    after = load_dataset("mnist", data_dir=d, verify=False)
    assert (after.t_test == 0).all(), "the in-process cache returned a stale file"


# --------------------------------------------------------------------------------------------
# idx reader
# --------------------------------------------------------------------------------------------


def test_read_idx_agrees_with_stdlib_parsing(mnist_raw_bytes: dict[str, bytes], mnist_dir: Path):
    raw = mnist_raw_bytes["t10k-images-idx3-ubyte"]
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    assert (magic, n, rows, cols) == (0x803, 10000, 28, 28)
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert images.dtype == np.uint8 and images.shape == (n, rows, cols)
    # pixel (i, r, c) is byte 16 + i*784 + r*28 + c
    for i, r, c in [(0, 0, 0), (0, 14, 14), (1234, 7, 20), (9999, 27, 27)]:
        assert images[i, r, c] == raw[16 + i * 784 + r * 28 + c]
    labels = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    assert labels.tolist() == list(mnist_raw_bytes["train-labels-idx1-ubyte"][8:])


def test_gzip_is_detected_by_magic_bytes_not_by_name(
    mnist_raw_bytes: dict[str, bytes], mnist_dir: Path, tmp_path: Path
) -> None:
    gz_named_raw = tmp_path / "labels.raw"
    shutil.copyfile(mnist_dir / "t10k-labels-idx1-ubyte.gz", gz_named_raw)
    raw_named_gz = tmp_path / "labels.gz"
    raw_named_gz.write_bytes(mnist_raw_bytes["t10k-labels-idx1-ubyte"])
    a, b = read_idx(gz_named_raw), read_idx(raw_named_gz)
    assert a.shape == (10000,) and a[:10].tolist() == MNIST_FIRST_TEST_LABELS
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize(
    ("code", "dtype"),
    [(0x08, "u1"), (0x09, "i1"), (0x0B, ">i2"), (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8")],
)
def test_read_idx_supports_every_idx_type(
    tmp_path: Path, code: int, dtype: str, compress: bool
) -> None:
    values = np.arange(-12, 12).reshape(2, 3, 4) * (3 if "f" not in dtype else 1.25)
    if dtype == "u1":
        values = np.abs(values) * 5
    stored = values.astype(dtype)
    content = struct.pack(">BBBB3I", 0, 0, code, 3, 2, 3, 4) + stored.tobytes()
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    arr = read_idx(path)
    assert arr.shape == (2, 3, 4)
    assert arr.dtype == np.dtype(dtype).newbyteorder("="), "returned in native byte order"
    np.testing.assert_array_equal(arr, stored)
    assert arr.flags.writeable


def _expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        read_idx(path)
    msg = str(info.value)
    assert str(path) in msg, f"the error must name the file: {msg}"
    for fragment in fragments:
        assert fragment in msg, f"expected {fragment!r} in: {msg}"
    return msg


def test_gzip_with_flipped_crc_byte_is_rejected(mnist_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    shutil.copyfile(mnist_dir / path.name, path)
    _flip_byte(path, path.stat().st_size - 8)  # first byte of the CRC32 in the gzip trailer
    _expect_error(path, "corrupt gzip", "CRC check failed")


def test_gzip_with_flipped_data_byte_is_rejected_by_reader_and_checksum(
    mnist_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    shutil.copyfile(mnist_dir / path.name, path)
    _flip_byte(path, path.stat().st_size // 2)
    _expect_error(path)
    with pytest.raises(DataError, match=r"checksum mismatch|corrupt gzip") as info:
        verify_file(path, "mnist", "train-labels-idx1-ubyte")
    assert str(path) in str(info.value)
    # and load_dataset refuses the directory holding it, naming the file
    d = _link_files(mnist_dir, tmp_path / "d", (FILES[0], FILES[2], FILES[3]))
    shutil.move(path, d / path.name)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=d)
    assert str(d / path.name) in str(info.value)


def test_raw_file_with_flipped_magic_byte_is_rejected(
    mnist_raw_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(mnist_raw_bytes["t10k-labels-idx1-ubyte"])
    _flip_byte(path, 2)  # type code 0x08 -> 0xF7
    _expect_error(path, "bad idx magic number 0x0000F701")


def test_raw_file_with_flipped_dimension_byte_is_rejected(
    mnist_raw_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(mnist_raw_bytes["t10k-images-idx3-ubyte"])
    _flip_byte(path, 11)  # rows: 28 -> 227
    _expect_error(path, "header says 10000x227x28", "got 7840016")


def test_truncated_raw_file_is_rejected(mnist_raw_bytes: dict[str, bytes], tmp_path: Path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(mnist_raw_bytes["t10k-labels-idx1-ubyte"][:-8])
    _expect_error(path, "expected 10008 bytes", "header says 10000", "got 10000", "truncated")


def test_truncated_gzip_file_is_rejected(mnist_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes((mnist_dir / path.name).read_bytes()[:800_000])
    _expect_error(path, "truncated gzip")


def test_gzip_payload_shorter_than_header_says(
    mnist_raw_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(mnist_raw_bytes["t10k-images-idx3-ubyte"][:-16], 1))
    _expect_error(
        path, "expected 7840016 bytes after decompression (header says 10000x28x28", "got 7840000"
    )


def test_gzip_payload_longer_than_header_says(
    mnist_raw_bytes: dict[str, bytes], tmp_path: Path
) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(mnist_raw_bytes["t10k-labels-idx1-ubyte"] + b"\x00" * 5))
    _expect_error(path, "expected 10008 bytes after decompression", "got 10013")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "too short"),
        (b"\x00\x00\x08", "too short"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated idx header"),
        (b"# MNIST readme\n", "bad idx magic number"),
        (b"\x1f\x8bthis is not gzip data", "corrupt gzip"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
    ],
    ids=["empty", "3-bytes", "short-dims", "text", "fake-gzip", "0-dims"],
)
def test_garbage_files_are_rejected(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "garbage"
    path.write_bytes(content)
    _expect_error(path, fragment)


def test_missing_file_and_directory_are_rejected(tmp_path: Path) -> None:
    _expect_error(tmp_path / "nope.gz", "cannot read file")
    _expect_error(tmp_path, "cannot read file")


# --------------------------------------------------------------------------------------------
# inconsistent data sets
# --------------------------------------------------------------------------------------------


def test_image_label_count_mismatch_is_rejected(mnist_dir: Path, tmp_path: Path) -> None:
    d = _link_files(mnist_dir, tmp_path / "d", FILES[:3])
    labels = d / "t10k-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">II", 0x801, 9999) + bytes(9999))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=d, verify=False)
    msg = str(info.value)
    assert "10000 images" in msg and "9999 labels" in msg, msg
    assert str(labels) in msg and str(d / "t10k-images-idx3-ubyte.gz") in msg, msg


def test_label_file_in_place_of_images_is_rejected(mnist_dir: Path, tmp_path: Path) -> None:
    d = _link_files(mnist_dir, tmp_path / "d", FILES[:2] + FILES[3:])
    (d / "t10k-images-idx3-ubyte.gz").symlink_to(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    expected = "wrong idx magic 0x00000801, expected 0x00000803 for images"
    with pytest.raises(DataError, match=re.escape(expected)) as info:
        load_dataset("mnist", data_dir=d, verify=False)
    assert str(d / "t10k-images-idx3-ubyte.gz") in str(info.value), "the name the user gave"
    assert "is the magic of a label file" in str(info.value)
    with pytest.raises(DataError, match=re.escape("It is the mnist t10k-labels-idx1-ubyte.gz file")):
        load_dataset("mnist", data_dir=d)  # verification says what the file really is


def test_label_out_of_range_is_rejected(mnist_dir: Path, tmp_path: Path) -> None:
    d = _link_files(mnist_dir, tmp_path / "d", FILES[:3])
    (d / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 10000) + b"\x0a" * 10000)
    with pytest.raises(DataError, match=re.escape("label 10 out of range 0..9")):
        load_dataset("mnist", data_dir=d, verify=False)


def test_uncompressed_and_recompressed_copies_pass_verification(
    mnist_dir: Path, tmp_path: Path, mnist: Dataset
) -> None:
    d = tmp_path / "raw"
    d.mkdir()
    for stem in FILES:
        (d / stem).write_bytes(gzip.decompress((mnist_dir / f"{stem}.gz").read_bytes()))
    ds = load_dataset("mnist", data_dir=d)  # verify=True
    assert ds.source == str(d)
    np.testing.assert_array_equal(ds.x_test, mnist.x_test)
    np.testing.assert_array_equal(ds.t_train, mnist.t_train)
    regz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    regz.write_bytes(gzip.compress((d / "t10k-labels-idx1-ubyte").read_bytes(), mtime=0))
    assert _sha256(regz) not in hd.CHECKSUMS["mnist"]["t10k-labels-idx1-ubyte"].gz_sha256
    verify_file(regz, "mnist", "t10k-labels-idx1-ubyte")  # content matches: accepted


def test_other_datasets_file_is_identified(
    mnist_dir: Path, fashion_dir: Path, tmp_path: Path
) -> None:
    d = _link_files(mnist_dir, tmp_path / "d", FILES[:3])
    (d / "t10k-labels-idx1-ubyte.gz").symlink_to(fashion_dir / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=re.escape("It is the fashion-mnist t10k-labels-idx1-ubyte.gz")):
        load_dataset("mnist", data_dir=d)


# --------------------------------------------------------------------------------------------
# lookup
# --------------------------------------------------------------------------------------------


def test_lookup_order_data_dir_then_env_then_cache(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = _link_files(mnist_dir, tmp_path / "explicit")
    env_root = tmp_path / "env"
    env_dir = _link_files(mnist_dir, env_root / "mnist")  # $NN_PARITY_DATA/<dataset>/ layout
    cache = _link_files(mnist_dir, tmp_path / "xdg-cache" / "nn-parity" / "mnist")
    monkeypatch.setenv("NN_PARITY_DATA", str(env_root))

    assert find_dataset("mnist", explicit) == explicit
    assert load_dataset("mnist", data_dir=explicit, download=False).source == str(explicit)
    assert find_dataset("mnist") == env_dir, "without data_dir, NN_PARITY_DATA comes first"
    assert load_dataset("mnist", download=False).source == str(env_dir)
    monkeypatch.delenv("NN_PARITY_DATA")
    assert find_dataset("mnist") == cache, "without data_dir and env, the cache is used"
    assert load_dataset("mnist", download=False).source == str(cache)
    shutil.rmtree(cache)
    assert find_dataset("mnist") is None


def test_env_var_may_point_straight_at_the_files(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NN_PARITY_DATA", str(mnist_dir))
    assert find_dataset("mnist") == mnist_dir


def test_incomplete_directory_is_skipped(mnist_dir: Path, tmp_path: Path) -> None:
    partial = _link_files(mnist_dir, tmp_path / "partial", FILES[:3])
    # an interrupted download's temp file never counts as the fourth file
    (partial / ".t10k-labels-idx1-ubyte.gz.x1y2.part").write_bytes(b"\x1f\x8b")
    assert find_dataset("mnist", partial) is None
    (partial / "t10k-labels-idx1-ubyte").symlink_to(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert find_dataset("mnist", partial) == partial, "mixed .gz / no-suffix names are fine"


def test_cache_dir_follows_xdg_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hd.user_cache_dir("mnist") == tmp_path / "xdg-cache" / "nn-parity" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hd.user_cache_dir("fashion-mnist") == (
        tmp_path / "home" / ".cache" / "nn-parity" / "fashion-mnist"
    )


def test_not_found_without_download_says_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path / "empty", download=False)
    msg = str(info.value)
    for fragment in ("--data-dir", "NN_PARITY_DATA", str(tmp_path / "empty"), "does not exist",
                     "missing train-images-idx3-ubyte[.gz]"):
        assert fragment in msg, f"expected {fragment!r} in: {msg}"
    assert str(tmp_path / "xdg-cache" / "nn-parity" / "mnist") in msg


# --------------------------------------------------------------------------------------------
# download (real HTTP servers on 127.0.0.1)
# --------------------------------------------------------------------------------------------


def test_download_into_empty_cache(
    mnist_dir: Path, tmp_path: Path, http_mirror: Callable[..., Mirror], mnist: Dataset
) -> None:
    url, log = http_mirror(mnist_dir)
    ds = load_dataset("mnist", mirrors=[url])
    cache = tmp_path / "xdg-cache" / "nn-parity" / "mnist"
    assert ds.source == str(cache)
    assert sorted(log) == sorted(f"/{f}.gz" for f in FILES)
    for stem in FILES:
        assert _sha256(cache / f"{stem}.gz") == _sha256(mnist_dir / f"{stem}.gz")
    assert _leftovers(cache) == [], "temp files left behind"
    np.testing.assert_array_equal(ds.x_train, mnist.x_train)
    np.testing.assert_array_equal(ds.t_test, mnist.t_test)
    load_dataset("mnist", mirrors=[url])
    assert len(log) == 4, "a second load must use the cache, not the network"


def test_mirrors_from_env_are_tried_in_order(
    mnist_dir: Path,
    tmp_path: Path,
    http_mirror: Callable[..., Mirror],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    url404, log404 = http_mirror(empty)
    url_ok, log_ok = http_mirror(mnist_dir)
    monkeypatch.setenv("NN_PARITY_MIRRORS", f" {_closed_port_url()} ,{url404},{url_ok}")
    dest = download_dataset("mnist", tmp_path / "dl")
    assert find_dataset("mnist", dest) == dest
    assert len(log404) == 4, "each file was asked from the 404 mirror first"
    assert len(log_ok) == 4


def test_corrupt_copy_on_first_mirror_is_rejected(
    mnist_dir: Path, tmp_path: Path, http_mirror: Callable[..., Mirror]
) -> None:
    bad = tmp_path / "bad-mirror"
    bad.mkdir()
    for stem in FILES:
        shutil.copyfile(mnist_dir / f"{stem}.gz", bad / f"{stem}.gz")
    _flip_byte(bad / "train-labels-idx1-ubyte.gz", 5000)
    bad_url, bad_log = http_mirror(bad)
    good_url, good_log = http_mirror(mnist_dir)
    dest = download_dataset("mnist", tmp_path / "dl", mirrors=[bad_url, good_url])
    assert len(bad_log) == 4
    assert good_log == ["/train-labels-idx1-ubyte.gz"], "only the rejected file comes from #2"
    _assert_same_files(dest, mnist_dir)
    assert _leftovers(dest) == []


def test_dropped_connection_falls_through_to_next_mirror(
    mnist_dir: Path, tmp_path: Path, http_mirror: Callable[..., Mirror]
) -> None:
    drop_url, drop_log = http_mirror(mnist_dir, drop=True)
    good_url, _ = http_mirror(mnist_dir)
    dest = download_dataset("mnist", tmp_path / "dl", mirrors=[drop_url, good_url])
    assert len(drop_log) == 4
    _assert_same_files(dest, mnist_dir)
    assert _leftovers(dest) == []


def test_dropped_connection_on_only_mirror_leaves_nothing_usable(
    mnist_dir: Path, tmp_path: Path, http_mirror: Callable[..., Mirror]
) -> None:
    drop_url, _ = http_mirror(mnist_dir, drop=True)
    dest = tmp_path / "dl"
    with pytest.raises(hd.DownloadError) as info:
        download_dataset("mnist", dest, mirrors=[drop_url], timeout=5)
    msg = str(info.value)
    size = (mnist_dir / "train-images-idx3-ubyte.gz").stat().st_size
    assert f"{drop_url}train-images-idx3-ubyte.gz" in msg, msg
    assert f"connection closed after {size // 2} of {size} bytes" in msg, msg
    assert list(dest.iterdir()) == [], "a half download must not stay behind"
    assert find_dataset("mnist", dest) is None


def test_download_keeps_good_files_and_replaces_bad_ones(
    mnist_dir: Path, tmp_path: Path, http_mirror: Callable[..., Mirror]
) -> None:
    dest = tmp_path / "dl"
    dest.mkdir()
    shutil.copyfile(mnist_dir / "train-labels-idx1-ubyte.gz", dest / "train-labels-idx1-ubyte.gz")
    (dest / "t10k-labels-idx1-ubyte.gz").write_bytes(b"half a file")
    url, log = http_mirror(mnist_dir)
    download_dataset("mnist", dest, mirrors=[url])
    assert "/train-labels-idx1-ubyte.gz" not in log, "a verified file was downloaded again"
    assert "/t10k-labels-idx1-ubyte.gz" in log
    assert _sha256(dest / "t10k-labels-idx1-ubyte.gz") == _sha256(
        mnist_dir / "t10k-labels-idx1-ubyte.gz"
    )


def test_offline_error_lists_places_urls_and_advice(tmp_path: Path) -> None:
    dead = [_closed_port_url(), _closed_port_url().replace("/mnist/", "/other")]
    (tmp_path / "mine").mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path / "mine", mirrors=dead)
    msg = str(info.value)
    expected = [
        "download failed",
        f"{dead[0]}train-images-idx3-ubyte.gz",
        f"{dead[1]}/train-images-idx3-ubyte.gz",
        "Connection refused",
        str(tmp_path / "mine"),
        str(tmp_path / "xdg-cache" / "nn-parity" / "mnist"),
        "--data-dir",
        "NN_PARITY_DATA",
        "NN_PARITY_MIRRORS",
    ]
    for fragment in expected:
        assert fragment in msg, f"expected {fragment!r} in: {msg}"
    assert "apt-get" not in msg, "the Debian package only has Fashion-MNIST"


def test_offline_fashion_mnist_suggests_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hd, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "not-installed")
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", mirrors=[_closed_port_url()])
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg, msg
    assert str(tmp_path / "not-installed") in msg, msg
    assert "--data-dir" in msg, msg


# --------------------------------------------------------------------------------------------
# problems found by trying the loader as a new user would
# --------------------------------------------------------------------------------------------


def test_env_var_at_mnist_does_not_hide_debian_fashion_mnist(
    mnist_dir: Path, fashion_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NN_PARITY_DATA", str(mnist_dir))  # as docs/data.md suggests for MNIST
    assert find_dataset("mnist") == mnist_dir
    assert find_dataset("fashion-mnist") == fashion_dir, "the MNIST folder must be skipped"
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.source == str(fashion_dir)
    assert np.bincount(ds.t_test).tolist() == [1000] * 10, "Fashion-MNIST's balanced test set"


def test_explicit_data_dir_with_the_other_data_set_is_skipped_with_a_warning(
    mnist_dir: Path, fashion_dir: Path
) -> None:
    with pytest.warns(hd.DataWarning, match="holds mnist, not fashion-mnist: skipped"):
        ds = load_dataset("fashion-mnist", data_dir=mnist_dir, download=False)
    assert ds.source == str(fashion_dir)


@pytest.mark.parametrize("kind", ["missing", "file", "broken-link"])
def test_bad_explicit_data_dir_is_an_error_not_a_fall_through(
    kind: str, mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NN_PARITY_DATA", str(mnist_dir))  # a good copy the typo must not hide
    bad = tmp_path / "mnsit"
    if kind == "file":
        bad.write_bytes(b"x")
    elif kind == "broken-link":
        bad.symlink_to(tmp_path / "gone")
    expected = {"missing": "no such directory", "file": "not a directory",
                "broken-link": "broken symbolic link"}[kind]
    with pytest.raises(DataError, match=re.escape(f"data_dir {bad}: ") + ".*" + expected):
        load_dataset("mnist", data_dir=bad)


def test_explicit_data_dir_without_the_files_warns_where_the_data_came_from(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NN_PARITY_DATA", str(mnist_dir))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train-images-idx3-ubyte.gz").mkdir()  # a folder where a file should be
    with pytest.warns(hd.DataWarning) as record:
        ds = load_dataset("mnist", data_dir=mine, download=False)
    msg = str(record[0].message)
    assert "train-images-idx3-ubyte.gz is not a file" in msg, msg
    assert f"using {mnist_dir}" in msg, msg
    assert ds.source == str(mnist_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("mnist", data_dir=mnist_dir, download=False)  # no warning when found


def test_file_replaced_with_same_size_and_mtime_is_read_again(
    mnist_dir: Path, fashion_dir: Path, tmp_path: Path
) -> None:
    d = _link_files(mnist_dir, tmp_path / "d", FILES[:3])
    labels = d / "t10k-labels-idx1-ubyte"
    labels.write_bytes(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    st = labels.stat()
    first = load_dataset("mnist", data_dir=d, verify=False).t_test
    assert first[:10].tolist() == MNIST_FIRST_TEST_LABELS
    # same size (10,008 bytes), same mtime afterwards: what cp -p, rsync -t or tar x leave
    other = gzip.decompress((fashion_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert len(other) == st.st_size
    labels.write_bytes(other)
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = load_dataset("mnist", data_dir=d, verify=False).t_test
    expected = np.frombuffer(other, dtype=np.uint8, offset=8)
    np.testing.assert_array_equal(second, expected)
    assert not np.array_equal(second, first)


def test_trickling_mirror_is_abandoned_for_the_next_one(
    mnist_dir: Path, tmp_path: Path, http_mirror: Callable[..., Mirror]
) -> None:
    slow_url, slow_log = http_mirror(mnist_dir, drip=True)
    good_url, _ = http_mirror(mnist_dir)
    t0 = time.monotonic()
    with pytest.raises(hd.DownloadError, match=re.escape("too slow: less than 64 KiB in 0.5 s")):
        download_dataset("mnist", tmp_path / "only-slow", mirrors=[slow_url], timeout=0.5)
    dest = download_dataset("mnist", tmp_path / "dl", mirrors=[slow_url, good_url], timeout=0.5)
    assert time.monotonic() - t0 < 60, "each slow file must give up after about the timeout"
    assert len(slow_log) >= 2
    _assert_same_files(dest, mnist_dir)
    assert _leftovers(dest) == []


def test_folder_in_place_of_a_target_file_fails_before_any_download(
    mnist_dir: Path, tmp_path: Path, http_mirror: Callable[..., Mirror]
) -> None:
    url, log = http_mirror(mnist_dir)
    dest = tmp_path / "dl"
    (dest / "train-images-idx3-ubyte.gz").mkdir(parents=True)
    with pytest.raises(DataError, match=re.escape("train-images-idx3-ubyte.gz: not a file")) as info:
        download_dataset("mnist", dest, mirrors=[url])
    assert not isinstance(info.value, hd.DownloadError), "a local problem, not the mirror's"
    assert log == []


def test_unwritable_download_dir_is_reported_as_local(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(DataError, match="cannot create download directory"):
        download_dataset("mnist", blocker / "sub", mirrors=[_closed_port_url()])
    with pytest.raises(DataError, match="cannot write into the download directory"):
        hd._check_writable(Path("/proc/self"))


def test_mirrors_given_as_one_string_are_rejected(tmp_path: Path, mnist_dir: Path) -> None:
    with pytest.raises(ValueError, match="mirrors must be a list of base URLs"):
        download_dataset("mnist", tmp_path, mirrors="http://127.0.0.1/")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mirrors must be a list of base URLs"):  # found locally
        load_dataset("mnist", data_dir=mnist_dir, mirrors="http://x/")  # type: ignore[arg-type]


def test_idx_header_with_more_dimensions_than_numpy_allows(tmp_path: Path) -> None:
    p = tmp_path / "many-dims"
    p.write_bytes(b"\x00\x00\x08\xff" + struct.pack(">255I", *([1] * 255)) + b"\x00")
    with pytest.raises(DataError, match=re.escape(f"{p}: bad idx header") + ".*255 dimensions"):
        read_idx(p)


def test_empty_file_is_called_empty(tmp_path: Path) -> None:
    p = tmp_path / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        verify_file(p, "mnist", "t10k-labels-idx1-ubyte")


def test_images_of_the_wrong_shape_are_rejected_without_verification(
    mnist_dir: Path, tmp_path: Path
) -> None:
    d = _link_files(mnist_dir, tmp_path / "d", FILES[:2] + FILES[3:])
    raw = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    # the same payload announced as 10000 x 784 x 1
    (d / "t10k-images-idx3-ubyte").write_bytes(raw[:4] + struct.pack(">3I", 10000, 784, 1) + raw[16:])
    with pytest.raises(DataError, match=r"images of shape 784x1, expected 28x28"):
        load_dataset("mnist", data_dir=d, verify=False)


# --------------------------------------------------------------------------------------------
# second new-user probe: unreadable places, file modes, CLI warnings, messages
# --------------------------------------------------------------------------------------------


def _too_long(parent: Path, letter: str) -> Path:
    """A path whose last component is longer than NAME_MAX: every stat() of it fails with
    ENAMETOOLONG, for root as well (pathlib does not swallow that error)."""
    return parent / (letter * 300)


def test_a_data_dir_that_cannot_be_accessed_is_a_data_error(tmp_path: Path) -> None:
    bad = _too_long(tmp_path, "d")
    with pytest.raises(DataError, match=re.escape(f"data_dir {bad}: cannot access it (")):
        load_dataset("mnist", data_dir=bad, download=False)
    with pytest.raises(DataError, match="cannot access it"):
        find_dataset("mnist", bad)


def test_unreadable_fallback_locations_are_listed_with_their_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(_too_long(tmp_path, "c")))
    monkeypatch.setenv("NN_PARITY_DATA", str(_too_long(tmp_path, "e")))
    assert find_dataset("mnist", empty) is None
    for download in (False, True):
        with pytest.raises(DataError) as info:
            load_dataset("mnist", data_dir=empty, download=download,
                         mirrors=[_closed_port_url()])
        msg = str(info.value)
        for why in ("$NN_PARITY_DATA/mnist", "$NN_PARITY_DATA", "user cache"):
            assert f"({why}): cannot read (File name too long)" in msg, msg
        if download:
            assert "cannot create download directory (File name too long)" in msg, msg


def _unprivileged(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m harness.cli ARGV`` where file permissions apply: as this user when it is
    not root, else as root mapped to uid 1000 in a user namespace (no CAP_DAC_OVERRIDE)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        ok = unshare and subprocess.run([unshare, "-U", "--map-user=1000", "true"],
                                        capture_output=True).returncode == 0
        if not ok:
            pytest.skip("running as root and no user namespace (unshare -U) to drop privileges")
        prefix = [str(unshare), "-U", "--map-user=1000"]
    repo = str(Path(__file__).resolve().parents[1])
    return subprocess.run(
        [*prefix, sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": repo, **env}, cwd=repo, timeout=120,
    )


def test_permission_denied_on_the_search_path_is_exit_2_not_a_traceback(
    mnist_dir: Path, tmp_path: Path
) -> None:
    permdir = _link_files(mnist_dir, tmp_path / "permdir")
    empty = tmp_path / "empty"
    empty.mkdir()
    xdg = tmp_path / "xdg"
    (xdg / "nn-parity").mkdir(parents=True)
    env = {"XDG_CACHE_HOME": str(xdg), "NN_PARITY_DATA": "", "NN_PARITY_MIRRORS": ""}
    permdir.chmod(0)
    (xdg / "nn-parity").chmod(0)
    try:
        runs = {
            "data_dir": _unprivileged(["train", "--data-dir", str(permdir), "--no-download"], env),
            "cache": _unprivileged(["train", "--data-dir", str(empty), "--no-download"], env),
            "env": _unprivileged(["train", "--no-download"], {**env, "NN_PARITY_DATA": str(permdir)}),
        }
    finally:
        permdir.chmod(0o755)
        (xdg / "nn-parity").chmod(0o755)
    for what, run in runs.items():
        assert run.returncode == 2, (what, run.stderr)
        assert "Traceback" not in run.stderr, (what, run.stderr)
    assert f"data_dir {permdir}: cannot read the directory (Permission denied)" in runs[
        "data_dir"].stderr
    cache = xdg / "nn-parity" / "mnist"
    assert f"{cache} (user cache): cannot read (Permission denied)" in runs["cache"].stderr
    assert f"{permdir} ($NN_PARITY_DATA): cannot read (Permission denied)" in runs["env"].stderr


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=["022", "002", "077"])
def test_downloaded_files_get_the_mode_the_umask_gives(
    umask: int, mnist_dir: Path, tmp_path: Path, http_mirror: Callable[..., Mirror]
) -> None:
    url, _ = http_mirror(mnist_dir)
    old = os.umask(umask)
    try:
        dest = download_dataset("mnist", tmp_path / "dl", mirrors=[url])
    finally:
        os.umask(old)
    for stem in FILES:
        mode = (dest / f"{stem}.gz").stat().st_mode & 0o777
        assert mode == 0o666 & ~umask, f"{stem}.gz: {oct(mode)} under umask {oct(umask)}"


def test_cli_prints_a_data_warning_as_one_line(
    mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from harness.cli import main

    elsewhere = _link_files(mnist_dir, tmp_path / "elsewhere", FILES[:3])
    (elsewhere / "t10k-labels-idx1-ubyte.gz").write_bytes(b"half a file")  # fails fast, no run
    monkeypatch.setenv("NN_PARITY_DATA", str(elsewhere))
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train", "--data-dir", str(empty), "--no-download"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.splitlines()
    assert lines[0].startswith("warning: mnist is not in data_dir ("), err
    assert lines[0].endswith(f"; using {elsewhere}"), err
    assert lines[1].startswith("nn-parity train: error: "), err
    warning = err.split("nn-parity train: error: ")[0]
    assert warning == lines[0] + "\n", "the warning is one line"
    for python_format in ("DataWarning", "load_dataset(", ".py:"):
        assert python_format not in warning, err


def test_folder_with_mnist_images_and_fashion_labels_is_called_mixed(
    mnist_dir: Path, fashion_dir: Path, tmp_path: Path
) -> None:
    d = _link_files(mnist_dir, tmp_path / "mixed", (FILES[0], FILES[2]))
    _link_files(fashion_dir, d, (FILES[1], FILES[3]))
    for name in ("mnist", "fashion-mnist"):
        with pytest.raises(DataError) as info:
            load_dataset(name, data_dir=d, download=False)
        msg = str(info.value)
        assert "mixed folder: the images are MNIST's, the labels Fashion-MNIST's" in msg, msg
        assert "holds fashion-mnist" not in msg, msg


def test_wrong_magic_is_reported_before_the_dimensions(mnist_dir: Path, tmp_path: Path) -> None:
    raw = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    d = _link_files(mnist_dir, tmp_path / "images", (FILES[0], FILES[1], FILES[3]))
    # float32 type code and 8 dimensions: 10000x28x28x0x0x0x0x0 would say 36 bytes
    (d / FILES[2]).write_bytes(struct.pack(">I8I", 0x0D08, 10000, 28, 28, 0, 0, 0, 0, 0) + raw[16:])
    with pytest.raises(DataError, match=re.escape(
            f"{d / FILES[2]}: wrong idx magic 0x00000D08, expected 0x00000803 for images")):
        load_dataset("mnist", data_dir=d, verify=False)
    labels = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    d = _link_files(mnist_dir, tmp_path / "labels", FILES[:3])
    (d / FILES[3]).write_bytes(struct.pack(">II", 0x0C01, 2502) + labels[8:])  # int32 labels
    with pytest.raises(DataError, match=re.escape(
            f"{d / FILES[3]}: wrong idx magic 0x00000C01, expected 0x00000801 for labels")):
        load_dataset("mnist", data_dir=d, verify=False)


def test_every_file_that_could_not_be_downloaded_is_listed(
    mnist_dir: Path, tmp_path: Path, http_mirror: Callable[..., Mirror]
) -> None:
    labels_only = _link_files(mnist_dir, tmp_path / "labels-only", (FILES[1], FILES[3]))
    url, _ = http_mirror(labels_only)
    dead = _closed_port_url()
    with pytest.raises(hd.DownloadError) as info:
        download_dataset("mnist", tmp_path / "dl", mirrors=[url, dead])
    msg = str(info.value)
    for stem in (FILES[0], FILES[2]):
        assert f"{url}{stem}.gz: HTTP 404" in msg, msg
    assert f"{dead}{FILES[0]}.gz: cannot connect" in msg, msg
    assert f"{FILES[2]}.gz: not asked again (unreachable for an earlier file): {dead}" in msg
    assert list(info.value.failed) == [f"{FILES[0]}.gz", f"{FILES[2]}.gz"]
    for stem in (FILES[1], FILES[3]):  # what could be downloaded was
        assert _sha256(tmp_path / "dl" / f"{stem}.gz") == _sha256(mnist_dir / f"{stem}.gz")
    # the same through load_dataset, offline: all four files, each with every mirror
    dead2 = _closed_port_url().replace("/mnist/", "/other/")
    with pytest.raises(DataError) as info2:
        load_dataset("mnist", mirrors=[dead, dead2])
    msg = str(info2.value)
    assert "4 of 4 files failed" in msg, msg
    for stem in FILES[1:]:
        assert f"{stem}.gz: not asked again (unreachable for an earlier file): {dead}, {dead2}" \
            in msg, msg


def test_a_mirror_that_serves_a_web_page_or_another_file_is_named_as_such(
    mnist_dir: Path, fashion_dir: Path, tmp_path: Path, http_mirror: Callable[..., Mirror]
) -> None:
    odd = tmp_path / "odd-mirror"
    odd.mkdir()
    page = b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n"
    for stem in FILES:
        (odd / f"{stem}.gz").write_bytes(page)
    shutil.copyfile(fashion_dir / f"{FILES[3]}.gz", odd / f"{FILES[3]}.gz")
    url, _ = http_mirror(odd)
    with pytest.raises(hd.DownloadError) as info:
        download_dataset("mnist", tmp_path / "dl", mirrors=[url])
    msg = str(info.value)
    assert (f"{url}{FILES[0]}.gz: rejected, checksum mismatch" in msg
            and f"the mirror sent {len(page)} bytes that are not gzip data, starting "
                f"{page[:40]!r}: a web page" in msg
            and "a web page, not the file" in msg), msg
    assert (f"It is the fashion-mnist {FILES[3]}.gz file (the mirror serves another file "
            "under this name: a wrong base URL?)") in msg, msg
    assert "wrong directory" not in msg, msg
    assert _leftovers(tmp_path / "dl") == []
