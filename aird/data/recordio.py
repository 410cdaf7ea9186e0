"""insightface's packed faces (MXNet RecordIO: ``train.rec`` + ``train.idx``), read without mxnet.

The format (dmlc-core's ``recordio.h``; mxnet's ``recordio.py`` for the image header):

- ``train.idx``: one ``key<TAB>offset`` line per record, the byte offset of its first part in ``train.rec``.
- a record part: magic ``0xced7230a`` (uint32 LE), ``lrecord`` (uint32 LE: upper 3 bits the part flag,
  lower 29 bits the length), the data, zero-padded to 4 bytes. Flag 0 is a whole record; a record whose
  data holds the magic word at a 4-byte boundary is written in parts (1 first, 2 middle, 3 last), the
  magic word cut out between them: reading puts it back.
- the record data: mxnet's image header ``IRHeader`` (``<IfQQ``: flag, label, id, id2); when flag > 0 the
  label is an array of ``flag`` float32 values after the header instead; then the encoded image.
- insightface's packs (MS1M, Glint360K, CASIA-WebFace) start with a header record 0 holding no image,
  its labels ``[a, b]``: records ``1 .. a-1`` are the images, ``a .. b-1`` one record per identity (the
  range of its images, no image either). A pack without that header (mxnet's ``im2rec``) is all images.

Records are read one at a time at their offsets: a pack is never read whole into memory.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from aird.data.images import check_min_side, decode_rgb
from aird.errors import DataError

MAGIC = 0xCED7230A
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
LENGTH_BITS = 29
REC_FILE, IDX_FILE = "train.rec", "train.idx"
RECORD_FIX = "rebuild the pack, or leave the record out by deleting its line from the .idx file"


@dataclass(frozen=True)
class IRHeader:
    """mxnet's image record header; ``labels`` holds the float32 label array when ``flag`` > 0."""

    flag: int
    label: float
    id: int
    id2: int
    labels: tuple[float, ...] = ()


def read_index(idx: str | Path) -> dict[int, int]:
    """``key -> offset`` of a ``.idx`` file, in file order; DataError naming the file and line when malformed."""
    idx = Path(idx)
    offsets: dict[int, int] = {}
    try:
        fh = open(idx, "rb")
    except OSError as exc:
        raise DataError(f"cannot read the pack index ({exc.strerror or exc})", idx) from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            fields = line.split(b"\t")
            try:
                key, offset = int(fields[0]), int(fields[1])
                if len(fields) != 2 or offset < 0:
                    raise ValueError
            except (ValueError, IndexError):
                raise DataError(
                    f"line {lineno}: expected 'key<TAB>offset', got {line[:60]!r}", idx, "rebuild the index"
                ) from None
            if key in offsets:
                raise DataError(f"line {lineno}: record {key} is listed twice", idx, "rebuild the index")
            offsets[key] = offset
    if not offsets:
        raise DataError("the pack index lists no records", idx, "rebuild the index")
    return offsets


def read_record(
    fh: BinaryIO, size: int, offset: int, key: int, source: Path, limit: int | None = None
) -> tuple[bytes, int]:
    """The data of the record at ``offset`` (its parts joined), or only its first ``limit`` bytes, and its
    full length. ``size`` is the file's size; ``key`` and ``source`` name the record in errors."""

    def corrupt(what: str) -> DataError:
        return DataError(f"record {key} (offset {offset}): {what}", source, RECORD_FIX)

    parts: list[bytes] = []
    pos = offset
    while True:
        if pos + 8 > size:
            raise corrupt(f"its header at byte {pos} lies beyond the end of the file ({size} bytes): truncated pack")
        fh.seek(pos)
        magic, lrec = struct.unpack("<II", fh.read(8))
        if magic != MAGIC:
            raise corrupt(
                f"bad magic 0x{magic:08x} at byte {pos} (expected 0x{MAGIC:08x}): the index does not match the pack, or the pack is corrupt"
            )
        cflag, length = lrec >> LENGTH_BITS, lrec & ((1 << LENGTH_BITS) - 1)
        if cflag > 3 or (cflag in (2, 3)) != bool(parts):
            raise corrupt(f"unexpected part flag {cflag} at byte {pos}: the index does not point at a record's start")
        if pos + 8 + length > size:
            raise corrupt(f"its length {length} runs past the end of the file ({size} bytes): truncated pack")
        if limit is not None and cflag == 0:
            return fh.read(min(length, limit)), length
        parts.append(fh.read(length))
        if cflag in (0, 3):
            data = struct.pack("<I", MAGIC).join(parts)
            return data[:limit], len(data)
        pos += 8 + (length + 3) // 4 * 4


def unpack_header(data: bytes, key: int, source: Path) -> tuple[IRHeader, int]:
    """The image header of a record's data and where the image bytes start."""
    if len(data) < IR_SIZE:
        raise DataError(
            f"record {key}: {len(data)} bytes, shorter than an image header ({IR_SIZE})", source, RECORD_FIX
        )
    flag, label, id_, id2 = struct.unpack_from(IR_FORMAT, data)
    start = IR_SIZE + 4 * flag
    if len(data) < start:
        raise DataError(f"record {key}: header promises {flag} labels, the record ends first", source, RECORD_FIX)
    labels = tuple(np.frombuffer(data, "<f4", flag, IR_SIZE).tolist()) if flag else ()
    return IRHeader(flag, label, id_, id2, labels), start


class RecordFile:
    """Random access to a RecordIO pack through its index; use as a context manager (holds the file open)."""

    def __init__(self, rec: str | Path, idx: str | Path | None = None):
        self.rec = Path(rec)
        self.idx = Path(idx) if idx else self.rec.with_suffix(".idx")
        if not self.rec.is_file():
            raise DataError("RecordIO pack not found", self.rec, f"expected {REC_FILE} beside {IDX_FILE}")
        if not self.idx.is_file():
            raise DataError("RecordIO index not found", self.idx, f"the reader needs {IDX_FILE} beside {self.rec.name}")
        self.offsets = read_index(self.idx)
        self.size = self.rec.stat().st_size
        self._fh = open(self.rec, "rb")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "RecordFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.offsets)

    def keys(self) -> list[int]:
        return list(self.offsets)

    def read(self, key: int) -> bytes:
        """Record ``key``'s data."""
        return self._read(key)[0]

    def header(self, key: int) -> tuple[IRHeader, int]:
        """Record ``key``'s image header and the size of its image, reading no more than the header."""
        data, length = self._read(key, IR_SIZE)
        flag = struct.unpack_from("<I", data)[0] if len(data) >= 4 else 0
        if flag:
            data, length = self._read(key, IR_SIZE + 4 * flag)
        header, start = unpack_header(data, key, self.rec)
        return header, length - start

    def _read(self, key: int, limit: int | None = None) -> tuple[bytes, int]:
        if key not in self.offsets:
            raise DataError(f"record {key} is not in the index", self.idx)
        return read_record(self._fh, self.size, self.offsets[key], key, self.rec, limit)


@dataclass(frozen=True)
class RecordImage:
    """One image of a pack, read on demand at its offset (picklable: worker processes open the pack
    themselves). ``str()`` names the pack and the record, as errors do."""

    rec: Path
    key: int
    offset: int

    def __str__(self) -> str:
        return f"{self.rec}#{self.key}"

    def read(self) -> bytes:
        """The encoded image bytes of the record."""
        try:
            with open(self.rec, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                data, _ = read_record(fh, size, self.offset, self.key, self.rec)
        except OSError as exc:
            raise DataError(f"cannot read record {self.key} ({exc.strerror or exc})", self.rec) from None
        _, start = unpack_header(data, self.key, self.rec)
        if start == len(data):
            raise DataError(f"record {self.key} holds no image", self.rec, RECORD_FIX)
        return data[start:]

    def digest(self) -> str:
        """Content hash of the image bytes: the same as the image's file would have."""
        return hashlib.sha1(self.read()).hexdigest()

    def load_rgb(self) -> np.ndarray:
        """The record's image as (H, W, 3) uint8 RGB; DataError naming the pack and the record."""
        source = f"{self.rec} record {self.key}"
        try:
            return check_min_side(decode_rgb(io.BytesIO(self.read()), source), source)
        except DataError as exc:
            if exc.path is not None and exc.path == self.rec:
                raise
            raise DataError(f"record {self.key}: {exc.message}", self.rec, RECORD_FIX) from None


def pack_files(path: str | Path) -> tuple[Path, Path]:
    """The ``.rec`` and ``.idx`` of a pack: a folder holding ``train.rec`` and ``train.idx``, or a ``.rec``
    file with its ``.idx`` beside it (not checked here)."""
    path = Path(path)
    rec = path / REC_FILE if path.is_dir() or path.suffix != ".rec" else path
    return rec, rec.with_suffix(".idx")


def _label(header: IRHeader, key: int, source: Path) -> int:
    value = header.labels[0] if header.flag else header.label
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise DataError(f"record {key}: label {value!r} is not a class number", source, RECORD_FIX)
    return int(value)


def read_pack(path: str | Path, limit: int | None = None) -> tuple[list[RecordImage], list[int]]:
    """The images of a pack (folder or ``.rec``) with their class labels, in index order; at most ``limit``.

    Only each record's header is read (its image is read when aligned); insightface's header record 0
    and identity records are left out.
    """
    rec, idx = pack_files(path)
    images: list[RecordImage] = []
    labels: list[int] = []
    with RecordFile(rec, idx) as pack:
        keys = pack.keys()
        image_keys: Iterator[int] = iter(keys)
        if 0 in pack.offsets:
            header, n_bytes = pack.header(0)
            if header.flag >= 2 and n_bytes == 0:  # insightface: labels [first identity record, end]
                end = int(header.labels[0])
                if end < 2:
                    raise DataError(f"record 0: the header record's image range {header.labels} is empty", rec)
                image_keys = (k for k in keys if 1 <= k < end)
        for key in image_keys:
            if limit is not None and len(images) >= limit:
                break
            header, n_bytes = pack.header(key)
            if n_bytes == 0:
                raise DataError(f"record {key} holds no image", rec, RECORD_FIX)
            images.append(RecordImage(rec, key, pack.offsets[key]))
            labels.append(_label(header, key, rec))
    if not images:
        raise DataError("the pack holds no image records", rec, "check that it is an image pack")
    return images, labels
