"""Loaders for MNIST and Fashion-MNIST (idx files), with lookup, download and checksums.

Public API (see docs/data.md):

* :func:`load_dataset` -- find (or download), verify, decode and convert a data set.
* :class:`Dataset` -- the arrays it returns, plus the directory they came from.
* :func:`read_idx` -- decode one idx file (gzip or raw) into a NumPy array.
* :func:`find_dataset` -- the first directory in the lookup order holding all four files.
* :func:`download_dataset` -- fetch the four files from the mirrors into a directory.
* :func:`verify_file` -- check one file against the known checksums.
* :class:`DataError` -- every problem with the data (missing, corrupt, offline, ...).

No pickle is used anywhere: idx files are parsed with :mod:`struct` and NumPy.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import math
import os
import secrets
import struct
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

__all__ = [
    "CHECKSUMS",
    "DATASETS",
    "DEFAULT_MIRRORS",
    "FILES",
    "DataError",
    "DataWarning",
    "Dataset",
    "DownloadError",
    "clear_cache",
    "download_dataset",
    "find_dataset",
    "load_dataset",
    "read_idx",
    "search_locations",
    "user_cache_dir",
    "verify_file",
]


class DataError(Exception):
    """A data file or data set is missing, unreadable, corrupt, inconsistent or not downloadable."""


class DownloadError(DataError):
    """Every mirror failed for some files. ``attempts`` holds ``(url, error)`` for each try;
    ``failed`` maps each file that could not be downloaded to its ``(url, error)`` pairs (a
    mirror found unreachable for an earlier file appears by its base URL, not asked again)."""

    def __init__(
        self,
        message: str,
        attempts: Sequence[tuple[str, str]],
        failed: dict[str, list[tuple[str, str]]] | None = None,
    ) -> None:
        super().__init__(message)
        self.attempts: list[tuple[str, str]] = list(attempts)
        self.failed: dict[str, list[tuple[str, str]]] = dict(failed or {})


# --------------------------------------------------------------------------------------------
# Data sets, files, mirrors, checksums
# --------------------------------------------------------------------------------------------

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist")

#: The four files of each data set, without the ``.gz`` suffix, in (x_train, t_train, x_test,
#: t_test) order. Each may be present gzip-compressed (``NAME.gz``) or uncompressed (``NAME``).
FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
}

#: Debian's package ``dataset-fashion-mnist`` installs the four files here.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

ENV_DATA = "NN_PARITY_DATA"
ENV_MIRRORS = "NN_PARITY_MIRRORS"

IDX_MAGIC_LABELS = 0x00000801  # unsigned byte, 1 dimension
IDX_MAGIC_IMAGES = 0x00000803  # unsigned byte, 3 dimensions
NUM_CLASSES = 10

# Largest file a mirror may send us (the biggest real one is 26.4 MB).
_MAX_DOWNLOAD_BYTES = 128 * 1024 * 1024
_CHUNK = 1 << 20
IMAGE_SHAPE = (28, 28)
_MAX_NDIM = 64  # NumPy's limit (NPY_MAXDIMS)
_MIN_PROGRESS = 64 * 1024  # bytes a download must make per ``timeout`` seconds


@dataclass(frozen=True)
class FileChecksums:
    """Known digests of one file of a data set.

    ``gz_sha256``: sha256 of every known publication of the ``.gz`` file (Debian's
    ``dataset-fashion-mnist`` rewrote the gzip headers, so Fashion-MNIST has two).
    ``gz_md5``: the md5 published by the data set's authors, for the record and for
    cross-checks (verification itself uses sha256). ``raw_sha256``: sha256 of the
    decompressed idx bytes, which identifies the content whatever the gzip header says.
    """

    gz_sha256: frozenset[str]
    gz_md5: str
    raw_sha256: str
    raw_size: int


def _ck(gz_sha256: Iterable[str], gz_md5: str, raw_sha256: str, raw_size: int) -> FileChecksums:
    return FileChecksums(frozenset(gz_sha256), gz_md5, raw_sha256, raw_size)


CHECKSUMS: dict[str, dict[str, FileChecksums]] = {
    # MNIST: md5 as published with the data (Yann LeCun's page / torchvision); sha256 from
    # shared/data/mnist/SHA256SUMS (same bytes; the md5 sums were cross-checked on them).
    "mnist": {
        "train-images-idx3-ubyte": _ck(
            ["440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"],
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            47040016,
        ),
        "train-labels-idx1-ubyte": _ck(
            ["3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"],
            "d53e105ee54ea40749a09fcbcd1e9432",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            60008,
        ),
        "t10k-images-idx3-ubyte": _ck(
            ["8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"],
            "9fb629c4189551a2d022fa330f9573f3",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            7840016,
        ),
        "t10k-labels-idx1-ubyte": _ck(
            ["f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"],
            "ec29112dd5afa0611ce80d1b7f02629c",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            10008,
        ),
    },
    # Fashion-MNIST: md5 as published by zalandoresearch. First sha256: the files as published
    # (what the mirrors serve). Second sha256: the same files as installed by Debian's
    # dataset-fashion-mnist 0.0~git20200523.55506a9-1, whose packaging removed the file name
    # from the gzip header and set its mtime; the deflate streams are byte-identical. Putting
    # the original header back (FNAME + mtime 2017-08-31) reproduces the published md5s
    # exactly; see docs/data.md.
    "fashion-mnist": {
        "train-images-idx3-ubyte": _ck(
            [
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            ],
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            47040016,
        ),
        "train-labels-idx1-ubyte": _ck(
            [
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            ],
            "25c81989df183df01b3e8a0aad5dffbe",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            60008,
        ),
        "t10k-images-idx3-ubyte": _ck(
            [
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            ],
            "bef4ecab320f06d8554ea6380940ec79",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            7840016,
        ),
        "t10k-labels-idx1-ubyte": _ck(
            [
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            ],
            "bb300cfdad3c16e7a12a480ee83cd310",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            10008,
        ),
    },
}


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    return name


# --------------------------------------------------------------------------------------------
# idx reader
# --------------------------------------------------------------------------------------------

# idx type code -> (description, dtype as stored: big-endian)
_IDX_TYPES: dict[int, tuple[str, np.dtype]] = {
    0x08: ("unsigned byte", np.dtype(np.uint8)),
    0x09: ("signed byte", np.dtype(np.int8)),
    0x0B: ("short (int16)", np.dtype(">i2")),
    0x0C: ("int (int32)", np.dtype(">i4")),
    0x0D: ("float (float32)", np.dtype(">f4")),
    0x0E: ("double (float64)", np.dtype(">f8")),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _shape_str(dims: Sequence[int]) -> str:
    return "x".join(str(d) for d in dims)


def _is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip magic bytes 1f 8b (the name does not matter)."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == _GZIP_MAGIC
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None


def _read_exact(f: BinaryIO, n: int) -> bytes:
    """Read up to ``n`` bytes, fewer only at end of file (gzip reads may come in pieces)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = f.read(min(n - got, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


_MAGIC_KINDS: dict[int, str] = {
    IDX_MAGIC_IMAGES: "images (uint8, 3 dimensions)",
    IDX_MAGIC_LABELS: "labels (uint8, 1 dimension)",
}


def _expected_magic(stem: str) -> int:
    return IDX_MAGIC_IMAGES if "-images-" in stem else IDX_MAGIC_LABELS


def _parse_header(
    path: Path, f: BinaryIO, where: str, expect: int | None = None
) -> tuple[int, np.dtype, tuple[int, ...]]:
    """Read and check the idx magic number and dimensions; return (magic, dtype, dims).

    With ``expect`` (the loader knows whether the file holds images or labels) the magic
    number must be that one, checked before the dimensions are read or trusted.
    """
    head = _read_exact(f, 4)
    if len(head) < 4:
        raise DataError(
            f"{path}: too short for an idx file: {len(head)} bytes{where}, the header alone "
            "needs at least 8"
        )
    magic = int.from_bytes(head, "big")
    if expect is not None and magic != expect:
        hint = ""
        if magic in _MAGIC_KINDS:
            kind = "label" if magic == IDX_MAGIC_LABELS else "image"
            hint = f": 0x{magic:08X} is the magic of a {kind} file"
        raise DataError(
            f"{path}: wrong idx magic 0x{magic:08X}, expected 0x{expect:08X} for "
            f"{_MAGIC_KINDS[expect]}{hint}"
        )
    type_code, ndim = head[2], head[3]
    if head[:2] != b"\x00\x00" or type_code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_TYPES)
        raise DataError(
            f"{path}: bad idx magic number 0x{magic:08X}: an idx file starts with two zero "
            f"bytes and a type code ({known}); this is not an idx file or its header is corrupt"
        )
    if ndim == 0:
        raise DataError(f"{path}: bad idx header: magic 0x{magic:08X} says 0 dimensions")
    if ndim > _MAX_NDIM:
        raise DataError(
            f"{path}: bad idx header: magic 0x{magic:08X} says {ndim} dimensions "
            f"(NumPy arrays have at most {_MAX_NDIM}); the header is corrupt"
        )
    raw_dims = _read_exact(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(
            f"{path}: truncated idx header: magic 0x{magic:08X} announces {ndim} dimensions "
            f"({4 + 4 * ndim} header bytes) but the file{where} ends after "
            f"{4 + len(raw_dims)} bytes"
        )
    dims = struct.unpack(f">{ndim}I", raw_dims)
    return magic, _IDX_TYPES[type_code][1], tuple(dims)


@contextlib.contextmanager
def read_errors(path: Path) -> Iterator[None]:
    """Turn what reading (and gunzipping) ``path`` can raise into a DataError naming it."""
    try:
        yield
    except DataError:
        raise
    except gzip.BadGzipFile as e:
        raise DataError(f"{path}: corrupt gzip file ({e})") from None
    except EOFError as e:
        raise DataError(f"{path}: truncated gzip file ({e})") from None
    except zlib.error as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode this file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None


def _read_idx_with_magic(path: Path, expect: int | None = None) -> tuple[np.ndarray, int]:
    """Decode an idx file; return (array in native byte order, magic number).

    ``expect``: the magic number the file must have (see :func:`_parse_header`)."""
    gz = _is_gzip(path)
    with read_errors(path):
        if gz:
            with gzip.open(path, "rb") as f:
                return _decode_gzip(path, f, expect)
        with open(path, "rb") as f:
            return _decode_raw(path, f, expect)


def _payload(dtype: np.dtype, dims: tuple[int, ...]) -> int:
    return math.prod(dims) * dtype.itemsize


def _finish(data: bytearray | np.ndarray, dtype: np.dtype, dims: tuple[int, ...]) -> np.ndarray:
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def _decode_raw(path: Path, f: BinaryIO, expect: int | None) -> tuple[np.ndarray, int]:
    size = os.fstat(f.fileno()).st_size
    magic, dtype, dims = _parse_header(path, f, "", expect)
    header = 4 + 4 * len(dims)
    expected = header + _payload(dtype, dims)
    if size != expected:
        raise DataError(
            f"{path}: expected {expected} bytes (header says {_shape_str(dims)} of "
            f"{dtype.itemsize}-byte values), got {size}"
            + (": the file is truncated" if size < expected else ": trailing data")
        )
    buf = np.empty(expected - header, dtype=np.uint8)
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise DataError(f"{path}: file shrank while reading ({got} of {len(buf)} bytes)")
        got += n
    return _finish(buf, dtype, dims), magic


def _decode_gzip(path: Path, f: BinaryIO, expect: int | None) -> tuple[np.ndarray, int]:
    where = " after decompression"
    magic, dtype, dims = _parse_header(path, f, where, expect)
    header = 4 + 4 * len(dims)
    payload = _payload(dtype, dims)
    expected = header + payload
    # Grow the buffer as data arrives instead of trusting the header with a huge allocation.
    buf = bytearray()
    while len(buf) < payload:
        chunk = f.read(min(payload - len(buf), _CHUNK))
        if not chunk:
            break
        buf += chunk
    got = header + len(buf)
    if got == expected:
        # Reading on to the end of the stream makes gzip check the CRC and length fields.
        extra = f.read(_CHUNK)
        while extra:
            got += len(extra)
            extra = f.read(_CHUNK)
    if got != expected:
        raise DataError(
            f"{path}: expected {expected} bytes after decompression (header says "
            f"{_shape_str(dims)} of {dtype.itemsize}-byte values), got {got}"
        )
    return _finish(buf, dtype, dims), magic


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an idx file (gzip-compressed or raw, detected by its first bytes) to an array.

    Every idx type is supported (uint8, int8, int16, int32, float32, float64; the data are
    big-endian on disk and returned in native byte order). The magic number, the dimensions
    and the file size are checked against the header. Any problem raises :class:`DataError`
    naming the file. The returned array is fresh and writable.
    """
    return _read_idx_with_magic(Path(path))[0]


@functools.lru_cache(maxsize=16)
def _read_idx_cached(
    resolved: str, mtime_ns: int, size: int, inode: int, ctime_ns: int, expect: int | None
) -> tuple[np.ndarray, int]:
    arr, magic = _read_idx_with_magic(Path(resolved), expect)
    arr.flags.writeable = False
    return arr, magic


def _read_idx_shared(path: Path, expect: int | None = None) -> tuple[np.ndarray, int]:
    """Like read_idx, but cached in-process by (resolved path, mtime, size, inode, ctime);
    read-only result. ctime and the inode change whenever the file is rewritten or replaced,
    even by a copy that keeps the size and the mtime (``cp -p``, ``rsync -t``, ``tar x``)."""
    try:
        resolved = path.resolve(strict=True)
        st = resolved.stat()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None
    try:
        return _read_idx_cached(
            str(resolved), st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns, expect
        )
    except DataError as e:
        msg = str(e)
        if resolved != path.absolute() and msg.startswith(f"{resolved}: "):
            # name the file as the user knows it (a link into another folder, ...)
            msg = f"{path} (a link to {resolved}): " + msg[len(f"{resolved}: "):]
            raise DataError(msg) from None
        raise


def clear_cache() -> None:
    """Forget the decoded arrays kept in memory by :func:`load_dataset`."""
    _read_idx_cached.cache_clear()


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def _sha256_stream(chunks: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def _file_chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def _sha256_file(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return _sha256_stream(_file_chunks(f))
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None


def _sha256_gunzip(path: Path) -> str:
    with read_errors(path):
        with gzip.open(path, "rb") as f:
            return _sha256_stream(_file_chunks(f))  # type: ignore[arg-type]


def _identify(digest: str) -> str | None:
    """Name the known file with this sha256 (gz or raw), if any."""
    for ds, files in CHECKSUMS.items():
        for stem, ck in files.items():
            if digest in ck.gz_sha256:
                return f"{ds} {stem}.gz"
            if digest == ck.raw_sha256:
                return f"{ds} {stem}"
    return None


def _checksum_problem(path: Path, name: str, stem: str,
                      other_hint: str = "wrong directory?") -> str | None:
    """None when the file is a known publication of ``name``/``stem``, else what is wrong
    (``other_hint``: what to suspect when it is another known data file)."""
    ck = CHECKSUMS[name][stem]
    digest = _sha256_file(path)
    if digest in ck.gz_sha256 or digest == ck.raw_sha256:
        return None
    try:
        if path.stat().st_size == 0:
            return f"empty file (0 bytes), not the published {name} {stem}"
    except OSError as e:
        return f"cannot read file ({e.strerror or e})"
    gz = _is_gzip(path)
    content: str | None = None
    if gz:
        try:
            content = _sha256_gunzip(path)
        except DataError as e:  # bad CRC, truncated, ...
            return str(e).replace(f"{path}: ", "", 1)
        if content == ck.raw_sha256:
            return None  # same content, another gzip header
    other = _identify(digest) or (_identify(content) if content else None)
    expected = " or ".join(sorted(ck.gz_sha256)) if gz else ck.raw_sha256
    if gz:
        expected += f", or decompressed content sha256 {ck.raw_sha256}"
    return (
        f"checksum mismatch: this {'gzip' if gz else 'uncompressed'} file is not the published "
        f"{name} {stem}{'.gz' if gz else ''} (sha256 {digest}; expected {expected})"
        + (f". It is the {other} file ({other_hint})" if other else "")
    )


def verify_file(path: str | os.PathLike[str], name: str, stem: str) -> None:
    """Check a data file against the known sha256 sums; raise :class:`DataError` if it fails.

    ``stem`` is one of :data:`FILES`. A gzip file passes when its bytes are a known
    publication of that file, or when its decompressed content is (another gzip header,
    e.g. re-compressed by hand); an uncompressed file passes when its content is.
    """
    _check_name(name)
    if stem not in FILES:
        raise ValueError(f"unknown file {stem!r}; expected one of: {', '.join(FILES)}")
    p = Path(path)
    problem = _checksum_problem(p, name, stem)
    if problem:
        raise DataError(
            f"{p}: {problem}. The file is corrupt, incomplete or from another data set: "
            "replace it with a good copy (a deleted file in the cache is downloaded again), "
            "or load it without checksums (Python: load_dataset(..., verify=False))."
        )


# --------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------


def user_cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/nn-parity/<name>``, or ``~/.cache/nn-parity/<name>``."""
    _check_name(name)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "nn-parity" / name


def search_locations(
    name: str, data_dir: str | os.PathLike[str] | None = None
) -> list[tuple[Path, str]]:
    """Directories searched for ``name``, in order, each with where it comes from."""
    _check_name(name)
    out: list[tuple[Path, str]] = []

    def both(base: Path, why: str) -> None:
        out.append((base / name, f"{why}/{name}"))
        out.append((base, why))

    if data_dir is not None:
        both(Path(data_dir).expanduser(), "data_dir")
    env = os.environ.get(ENV_DATA, "")
    if env:
        both(Path(env).expanduser(), f"${ENV_DATA}")
    try:
        out.append((user_cache_dir(name), "user cache"))
    except RuntimeError:  # no home directory
        pass
    if name == "fashion-mnist":
        out.append((DEBIAN_FASHION_MNIST_DIR, "Debian package dataset-fashion-mnist"))
    seen: set[Path] = set()
    unique: list[tuple[Path, str]] = []
    for p, why in out:
        key = p.absolute()
        if key not in seen:
            seen.add(key)
            unique.append((p, why))
    return unique


def _files_in(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The four files found in a directory (``.gz`` preferred) and the stems missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for stem in FILES:
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            missing.append(stem)
    return found, missing


_PRETTY = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def _owner(path: Path, stem: str) -> str | None:
    """The known data set whose ``stem`` file ``path`` is (by content), or None.

    Unreadable and corrupt files are None: the checks on loading say what is wrong."""
    try:
        digest = _sha256_file(path)
        for ds, files in CHECKSUMS.items():
            if digest in files[stem].gz_sha256 or digest == files[stem].raw_sha256:
                return ds
        if not _is_gzip(path):
            return None
        digest = _sha256_gunzip(path)
    except DataError:
        return None
    return next((ds for ds, files in CHECKSUMS.items() if digest == files[stem].raw_sha256), None)


def _other_dataset_in(directory: Path, name: str) -> str | None:
    """The other known data set's name if ``directory`` holds it, else None.

    MNIST and Fashion-MNIST use the same file names, so a folder given as ``data_dir`` or
    ``$NN_PARITY_DATA`` may hold the other one. The label files (70 KB) identify it by content,
    and when both are the other data set's, the test images (1.6 MB) tell a folder of the other
    data set from one that mixes the two: a mixed folder is not skipped (loading it names the
    wrong file and says which files are which data set's).
    """
    found = _files_in(directory)[0]
    if any(stem not in found for stem in FILES):
        return None
    owners = {_owner(found[stem], stem) for stem in (FILES[1], FILES[3])}
    if len(owners) != 1:
        return None
    other = owners.pop()
    if other is None or other == name or _owner(found[FILES[2]], FILES[2]) == name:
        return None
    return other


def _mixed_note(files: dict[str, Path]) -> str | None:
    """``mixed folder: ...`` when the files belong to different known data sets, else None."""
    owners = {stem: _owner(path, stem) for stem, path in files.items()}
    if len({o for o in owners.values() if o}) < 2:
        return None
    images = {owners[stem] for stem in FILES if "-images-" in stem}
    labels = {owners[stem] for stem in FILES if "-labels-" in stem}
    if len(images) == 1 and len(labels) == 1 and None not in images | labels:
        i, lab = images.pop(), labels.pop()
        return f"mixed folder: the images are {_PRETTY[i]}'s, the labels {_PRETTY[lab]}'s"
    whose = {stem: f"{_PRETTY[o]}'s" if o else "neither data set's" for stem, o in owners.items()}
    return "mixed folder: " + ", ".join(f"{files[s].name} is {w}" for s, w in whose.items())


def _os_reason(e: OSError) -> str:
    return e.strerror or str(e)


def _check_data_dir(name: str, data_dir: str | os.PathLike[str] | None) -> None:
    if data_dir is None:
        return
    p = Path(data_dir).expanduser()
    try:
        if not p.exists():
            broken = " (a broken symbolic link)" if p.is_symlink() else ""
            raise DataError(f"data_dir {p}: no such directory{broken}")
        if not p.is_dir():
            raise DataError(f"data_dir {p}: not a directory")
    except OSError as e:  # permission denied on a parent, name too long, ...
        raise DataError(f"data_dir {p}: cannot access it ({_os_reason(e)})") from None
    try:  # can names inside it be looked up? (a directory without x permission cannot)
        os.stat(p / name)
    except PermissionError as e:
        raise DataError(f"data_dir {p}: cannot read the directory ({_os_reason(e)})") from None
    except OSError:
        pass  # no such entry, or a problem with DIR/<name> itself: the lookup names that


def _usable(directory: Path, name: str, why: str) -> bool:
    """Whether ``directory`` holds the data set; an OSError (unreadable, ...) propagates."""
    if not directory.is_dir() or _files_in(directory)[1]:
        return False
    # A folder named after the data set is taken as it is (a wrong file in it is an error
    # when loading); a folder given directly is skipped when it holds the other data set.
    return why.endswith(f"/{name}") or _other_dataset_in(directory, name) is None


def find_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The first directory in the lookup order that has all four files, or None.

    Order: ``data_dir`` (and ``data_dir/<name>``), ``$NN_PARITY_DATA`` (and
    ``$NN_PARITY_DATA/<name>``), the user cache directory, and for fashion-mnist Debian's
    ``/usr/share/datasets/fashion-mnist``. In each pair the ``<name>`` subdirectory comes first.
    ``data_dir`` itself or ``$NN_PARITY_DATA`` itself is skipped when its files are the other
    data set's (e.g. ``NN_PARITY_DATA`` pointing at MNIST while Fashion-MNIST is asked for).
    Raises :class:`DataError` when ``data_dir`` is given but is not a directory or cannot be
    read; any other location that cannot be read (permission denied, a symbolic link loop,
    ...) is skipped.
    """
    _check_name(name)
    _check_data_dir(name, data_dir)
    for directory, why in search_locations(name, data_dir):
        try:
            if _usable(directory, name, why):
                return directory
        except OSError as e:
            if why.startswith("data_dir"):
                raise DataError(
                    f"data_dir {directory}: cannot read the directory ({_os_reason(e)})"
                ) from None
            # another location that cannot be read is skipped; the not-found message says why
    return None


def _file_state(directory: Path, stem: str) -> str:
    """Why neither ``stem.gz`` nor ``stem`` is a usable file in ``directory``."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_symlink() and not candidate.exists():
            return f"{candidate.name} is a broken symbolic link"
        if candidate.exists() and not candidate.is_file():
            return f"{candidate.name} is not a file"
    return f"missing {stem}[.gz]"


def _describe_search(name: str, data_dir: str | os.PathLike[str] | None) -> list[str]:
    lines = []
    for directory, why in search_locations(name, data_dir):
        try:
            state = _directory_state(directory, name, why)
        except OSError as e:
            state = f"cannot read ({_os_reason(e)})"
        lines.append(f"  - {directory} ({why}): {state}")
    return lines


def _directory_state(directory: Path, name: str, why: str) -> str:
    """What the lookup found in ``directory``; an OSError (unreadable, ...) propagates."""
    if not directory.exists():
        return "does not exist"
    if not directory.is_dir():
        return "not a directory"
    missing = _files_in(directory)[1]
    if missing:
        return ", ".join(_file_state(directory, m) for m in missing)
    other = None if why.endswith(f"/{name}") else _other_dataset_in(directory, name)
    if other:
        return f"holds {other}, not {name}: skipped"
    return "ok"


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def _mirrors_for(name: str, mirrors: Sequence[str] | None) -> list[str]:
    if isinstance(mirrors, str | bytes):
        raise ValueError(
            f"mirrors must be a list of base URLs, got the string {mirrors!r}: "
            f"write [{mirrors!r}]"
        )
    if mirrors is None:
        env = os.environ.get(ENV_MIRRORS, "")
        if env.strip():
            mirrors = [m for m in (s.strip() for s in env.split(",")) if m]
        else:
            mirrors = DEFAULT_MIRRORS[name]
    return list(mirrors)


def _url(base: str, filename: str) -> str:
    return base + filename if base.endswith("/") else f"{base}/{filename}"


def _describe_error(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        reason = e.reason
        if isinstance(reason, OSError) and reason.strerror:
            return f"cannot connect: {reason.strerror}"
        return f"cannot connect: {reason}"
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, http.client.IncompleteRead):
        got = len(e.partial)
        if e.expected is not None:
            return f"connection closed after {got} of {got + e.expected} bytes"
        return f"connection closed after {got} bytes"
    if isinstance(e, DataError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _create_part_file(target: Path) -> tuple[int, str]:
    """Create ``.<target>.<random>.part`` beside ``target`` (exclusively); return (fd, path).

    Unlike :func:`tempfile.mkstemp` (always mode 0600) the file is created with mode 0666
    filtered by the umask, as ``open(path, "wb")`` would create it, so the downloaded data
    file gets the permissions the user's other files get (0644 under the usual umask 022).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
        try:
            return os.open(path, flags, 0o666), str(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"{target.parent}: no free temporary file name for {target.name}")


def _fetch(url: str, target: Path, name: str, stem: str, timeout: float) -> None:
    """Download ``url`` to a temp file beside ``target``, verify it, then rename it into place.

    The temp file is named ``.<target>.<random>.part``, so it never passes for a data file;
    it is deleted on every failure (including KeyboardInterrupt).
    """
    request = urllib.request.Request(url, headers={"User-Agent": "nn-parity data loader"})
    fd, tmp_name = _create_part_file(target)
    tmp: Path | None = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                got = 0
                # ``timeout`` bounds each wait on the socket; a mirror that trickles a few
                # bytes at a time must also deliver _MIN_PROGRESS bytes per ``timeout``.
                mark, mark_at = 0, time.monotonic()
                while chunk := response.read1(1 << 16):
                    got += len(chunk)
                    if got > _MAX_DOWNLOAD_BYTES:
                        raise DataError(f"more than {_MAX_DOWNLOAD_BYTES} bytes: not a data file")
                    out.write(chunk)
                    now = time.monotonic()
                    if got - mark >= _MIN_PROGRESS:
                        mark, mark_at = got, now
                    elif now - mark_at > timeout:
                        raise DataError(
                            f"too slow: less than {_MIN_PROGRESS // 1024} KiB in {timeout:g} s "
                            f"(got {got} bytes)"
                        )
            if length is not None and length.isdigit() and got != int(length):
                raise DataError(f"connection closed after {got} of {length} bytes")
            out.flush()
            os.fsync(out.fileno())
        assert tmp is not None
        problem = _checksum_problem(tmp, name, stem,
                                    "the mirror serves another file under this name: a wrong "
                                    "base URL?")
        if problem:
            if not _is_gzip(tmp):  # what came is not the .gz asked for: say what it is
                problem += _not_gzip_note(tmp)
            raise DataError(f"rejected, {problem}")
        os.replace(tmp, target)
        tmp = None
    finally:
        if tmp is not None:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass


def _not_gzip_note(path: Path) -> str:
    """What a download that is not gzip data starts with (an HTML page is named as such)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
        size = path.stat().st_size
    except OSError:
        return ""
    text = head.lstrip().lower()
    html = text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body"))
    note = f"; the mirror sent {size} bytes that are not gzip data, starting {head[:40]!r}"
    if html:
        note += (": a web page, not the file (an error or login page, or the URL of a page "
                 "that shows the file rather than the file itself?)")
    return note


def _check_writable(dest: Path) -> None:
    """Fail before any mirror is asked when files cannot be created in ``dest``."""
    try:
        fd, probe = tempfile.mkstemp(dir=dest, prefix=".nn-parity-write-test.", suffix=".part")
    except OSError as e:
        raise DataError(f"{dest}: cannot write into the download directory ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def download_dataset(
    name: str,
    dest_dir: str | os.PathLike[str],
    mirrors: Sequence[str] | None = None,
    timeout: float = 30,
) -> Path:
    """Download the four ``.gz`` files of ``name`` into ``dest_dir``; return ``dest_dir``.

    Mirrors (base URLs) are tried in order: ``mirrors`` if given, else ``$NN_PARITY_MIRRORS``
    (comma-separated), else :data:`DEFAULT_MIRRORS`. Files already in ``dest_dir`` with a good
    checksum are kept. Each download goes to a temp file in ``dest_dir``, is checked against
    the known sha256, and only then is renamed into place (atomic); a bad or incomplete
    download is deleted and the next mirror is tried. A mirror that cannot be reached is not
    asked again for the other files. When every mirror fails for a file, the other files are
    still fetched; then :class:`DownloadError` lists each file that failed, with every URL
    tried and its error.
    """
    _check_name(name)
    dest = Path(dest_dir).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{dest}: cannot create download directory ({e.strerror or e})") from None
    bases = _mirrors_for(name, mirrors)
    _check_writable(dest)
    attempts: list[tuple[str, str]] = []
    failed: dict[str, list[tuple[str, str]]] = {}
    unreachable: set[str] = set()
    for stem in FILES:
        target = dest / f"{stem}.gz"
        try:
            present = target.is_file()
            if not present and target.exists():
                raise DataError(f"{target}: not a file, cannot download {name} {stem}.gz there")
        except OSError as e:
            raise DataError(f"{target}: cannot check the file ({_os_reason(e)})") from None
        if present:
            try:
                verify_file(target, name, stem)
                continue
            except DataError:
                pass  # replaced below, atomically
        tries: list[tuple[str, str]] = []
        for base in bases:
            if base in unreachable:
                tries.append((base, _SKIPPED))
                continue
            url = _url(base, target.name)
            try:
                _fetch(url, target, name, stem, timeout)
                break
            except (OSError, http.client.HTTPException, ValueError, DataError) as e:
                attempts.append((url, _describe_error(e)))
                tries.append(attempts[-1])
                if isinstance(e, urllib.error.URLError | TimeoutError) and not isinstance(
                    e, urllib.error.HTTPError
                ):
                    unreachable.add(base)
        else:
            failed[target.name] = tries  # the other files are still fetched
    if failed:
        raise DownloadError(
            f"could not download {name} ({', '.join(failed)}) into {dest}; tried:\n"
            + "\n".join(_failure_lines(failed)),
            attempts,
            failed,
        )
    return dest


_SKIPPED = "not asked again (unreachable for an earlier file)"


def _failure_lines(failed: dict[str, list[tuple[str, str]]]) -> list[str]:
    """For each file that failed: one line per URL tried (the URL names the file), and one
    line naming the mirrors not asked again because they were unreachable before."""
    lines: list[str] = []
    for filename, tries in failed.items():
        skipped = [base for base, err in tries if err == _SKIPPED]
        lines += [f"  - {url}: {err}" for url, err in tries if err != _SKIPPED]
        if skipped:
            lines.append(f"  - {filename}: {_SKIPPED}: {', '.join(skipped)}")
        if not tries:
            lines.append(f"  - {filename}: no mirrors configured")
    return lines


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A loaded data set. ``source`` is the directory the files came from."""

    name: str
    x_train: np.ndarray = field(repr=False)
    t_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    t_test: np.ndarray = field(repr=False)
    source: str


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_dtype(dtype: npt.DTypeLike) -> np.dtype:
    dt: np.dtype | None = None
    if dtype is not None:  # np.dtype(None) would silently mean float64
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
    if dt is None or not any(dt == ok for ok in _FLOAT_DTYPES):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _not_found_message(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    failure: DownloadError | None,
    extra: str = "",
) -> str:
    lines = [f"{name}: data set not found" + (" and the download failed." if failure else ".")]
    lines.append("Looked in (in this order):")
    lines += _describe_search(name, data_dir)
    if failure is not None:
        if failure.failed:
            lines.append(
                f"Tried to download ({len(failure.failed)} of {len(FILES)} files failed: "
                f"{', '.join(failure.failed)}):"
            )
            lines += _failure_lines(failure.failed)
        else:
            lines.append("Tried to download:")
            lines += [f"  - {url}: {err}" for url, err in failure.attempts] or [
                "  (no mirrors configured)"
            ]
    if extra:
        lines.append(extra)
    lines.append("What to do:")
    lines.append(
        "  - pass --data-dir DIR (data_dir=DIR) for a directory with the four files "
        f"({', '.join(f + '.gz' for f in FILES)}; uncompressed also works),"
    )
    lines.append(f"  - or set {ENV_DATA}=DIR (DIR itself or DIR/{name}),")
    if name == "fashion-mnist":
        lines.append(
            f"  - or run `apt-get install dataset-fashion-mnist` (installs into "
            f"{DEBIAN_FASHION_MNIST_DIR}),"
        )
    lines.append(
        "  - or download it: the loader downloads into the user cache (unless --no-download /"
        " download=False);"
        f" set {ENV_MIRRORS} to comma-separated base URLs if the default mirrors are"
        " unreachable."
    )
    return "\n".join(lines)


def _check_pair(images: np.ndarray, img_path: Path, labels: np.ndarray, lab_path: Path) -> None:
    """Image shape, counts and label range (the magic numbers were checked when decoding)."""
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{img_path}: images of shape {_shape_str(images.shape[1:])}, expected "
            f"{_shape_str(IMAGE_SHAPE)} (MNIST's idx format)"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path} has {images.shape[0]} images but {lab_path} has {labels.shape[0]} "
            "labels: the files do not belong together"
        )
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(
            f"{lab_path}: label {int(labels.max())} out of range 0..{NUM_CLASSES - 1}"
        )


def _convert_images(
    images: np.ndarray, dtype: np.dtype, normalize: bool, flatten: bool
) -> np.ndarray:
    x = images.astype(dtype)  # always a fresh array
    if normalize:
        # x/255 computed in the requested dtype (float32 stays float32, as torchvision does).
        np.divide(x, dtype.type(255), out=x)
    n = x.shape[0]
    return x.reshape(n, -1) if flatten else x.reshape(n, 1, *x.shape[1:])


def _convert_labels(labels: np.ndarray, dtype: np.dtype, one_hot: bool) -> np.ndarray:
    if not one_hot:
        return labels.astype(np.int64)
    out = np.zeros((labels.shape[0], NUM_CLASSES), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


class DataWarning(UserWarning):
    """The data came from somewhere other than the ``data_dir`` asked for."""


def _warn_if_elsewhere(
    name: str, data_dir: str | os.PathLike[str] | None, directory: Path
) -> None:
    if data_dir is None:
        return
    asked = Path(data_dir).expanduser()
    if directory.absolute() in (asked.absolute(), (asked / name).absolute()):
        return
    states = [line.strip()[2:] for line in _describe_search(name, data_dir)[:2]]
    warnings.warn(
        f"{name} is not in data_dir ({'; '.join(states)}); using {directory}",
        DataWarning,
        stacklevel=3,
    )


def load_dataset(
    name: str = "mnist",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    normalize: bool = True,
    flatten: bool = True,
    one_hot: bool = False,
    dtype: npt.DTypeLike = np.float32,
    download: bool = True,
    mirrors: list[str] | None = None,
    verify: bool = True,
) -> Dataset:
    """Load ``mnist`` or ``fashion-mnist`` as NumPy arrays.

    The files are looked up as in :func:`find_dataset`; if absent and ``download`` is true,
    they are downloaded into :func:`user_cache_dir` (see :func:`download_dataset`). With
    ``verify`` (default) every file is checked against the known sha256 sums.

    Images: ``dtype`` (float32 or float64), divided by 255 in that dtype if ``normalize``
    (else 0..255), shaped (N, 784) if ``flatten`` else (N, 1, 28, 28). Labels: int64 (N,), or
    (N, 10) one-hot in ``dtype``. Every call returns fresh arrays; the decoded files are
    cached in memory (keyed on path and mtime).

    Raises :class:`DataError` for data problems and ``ValueError`` for bad arguments.
    """
    _check_name(name)
    dt = _check_dtype(dtype)
    if mirrors is not None:
        _mirrors_for(name, mirrors)  # a bad argument is an error even when nothing downloads
    directory = find_dataset(name, data_dir)
    if directory is None:
        if not download:
            raise DataError(
                _not_found_message(name, data_dir, None, "(--no-download / download=False: not downloading)")
            )
        try:
            cache = user_cache_dir(name)
        except RuntimeError as e:
            raise DataError(_not_found_message(name, data_dir, None, f"no cache dir: {e}")) from None
        try:
            directory = download_dataset(name, cache, mirrors=mirrors)
        except DownloadError as e:
            raise DataError(_not_found_message(name, data_dir, e)) from None
        except DataError as e:
            raise DataError(_not_found_message(name, data_dir, None, str(e))) from None
    _warn_if_elsewhere(name, data_dir, directory)
    try:
        files, missing = _files_in(directory)
    except OSError as e:  # pragma: no cover - only if the directory changes under us
        raise DataError(f"{directory}: cannot read the directory ({_os_reason(e)})") from None
    if missing:  # pragma: no cover - only if files vanish between lookup and use
        raise DataError(f"{directory}: missing {', '.join(missing)}")
    if verify:
        for stem, path in files.items():
            try:
                verify_file(path, name, stem)
            except DataError as e:
                note = _mixed_note(files)
                if note:
                    raise DataError(f"{directory}: {note}, not all {name}.\n{e}") from None
                raise
    # The magic number (images or labels) is checked before the rest of the header is used.
    decoded = {
        stem: _read_idx_shared(path, _expected_magic(stem))[0] for stem, path in files.items()
    }
    x_tr, t_tr, x_te, t_te = (decoded[stem] for stem in FILES)
    _check_pair(x_tr, files[FILES[0]], t_tr, files[FILES[1]])
    _check_pair(x_te, files[FILES[2]], t_te, files[FILES[3]])
    return Dataset(
        name=name,
        x_train=_convert_images(x_tr, dt, normalize, flatten),
        t_train=_convert_labels(t_tr, dt, one_hot),
        x_test=_convert_images(x_te, dt, normalize, flatten),
        t_test=_convert_labels(t_te, dt, one_hot),
        source=str(directory),
    )
