"""insightface RecordIO packs read without mxnet: byte-exact images, the header record, parts, corrupt records."""

import hashlib
import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_recordio import KMAGIC, lfw_images, pack_payload, record_bytes, write_pack, write_records  # noqa: E402

from aird.data.align import align_settings_for  # noqa: E402
from aird.data.chips import align_images  # noqa: E402
from aird.data.images import load_rgb  # noqa: E402
from aird.data.recordio import RecordFile, RecordImage, read_index, read_pack  # noqa: E402
from aird.errors import DataError  # noqa: E402


def png(seed: int, size: tuple[int, int] = (40, 32)) -> tuple[bytes, np.ndarray]:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), pixels


@pytest.fixture
def pack(tmp_path):
    """An insightface-layout pack of five small PNGs of classes 0, 0, 1, 2, 2."""
    images = [png(i) for i in range(5)]
    classes = [0, 0, 1, 2, 2]
    rec, idx = write_pack(tmp_path / "pack", [(data, c) for (data, _), c in zip(images, classes)])
    return rec, idx, images, classes


def test_pack_reads_back_byte_exact_without_header_or_identity_records(pack):
    rec, idx, images, classes = pack
    assert list(read_index(idx)) == list(range(1 + 5 + 3))  # header, images, one record per class
    found, labels = read_pack(rec.parent)
    assert [im.key for im in found] == [1, 2, 3, 4, 5] and labels == classes
    for im, (data, pixels) in zip(found, images):
        assert im.read() == data
        assert im.digest() == hashlib.sha1(data).hexdigest()
        np.testing.assert_array_equal(im.load_rgb(), pixels)
    assert read_pack(rec, limit=2)[1] == [0, 0]  # the .rec file itself names the pack too


def test_a_pack_without_insightface_header_is_all_images(tmp_path):
    images = [png(i)[0] for i in range(3)]
    rec, _ = write_pack(tmp_path, [(data, 7) for data in images], header=False)
    found, labels = read_pack(tmp_path)
    assert [im.key for im in found] == [0, 1, 2] and labels == [7, 7, 7]
    assert [im.read() for im in found] == images


def test_label_arrays_give_the_first_label_as_class(tmp_path):
    data = png(0)[0]
    write_records(tmp_path, [(0, pack_payload([5.0, 1.0, 2.0], data)), (1, pack_payload(3.0, data))])
    images, labels = read_pack(tmp_path)
    assert labels == [5, 3] and images[0].read() == data


def test_a_record_in_parts_is_joined_with_its_magic_words(tmp_path):
    magic = struct.pack("<I", KMAGIC)
    # the magic at the start, twice in a row, and mid-record; 2 bytes over a word, so padded
    data = magic + magic + b"abcd" + magic + b"tail-xy"
    rec, idx = write_records(tmp_path, [(0, b"first"), (1, data), (2, b"last")])
    raw = rec.read_bytes()
    offset = read_index(idx)[1]
    assert struct.unpack_from("<I", raw, offset + 4)[0] >> 29 == 1  # really written in parts
    with RecordFile(rec) as f:
        assert [f.read(k) for k in (0, 1, 2)] == [b"first", data, b"last"]
    assert record_bytes(data).count(magic) == 4  # four parts, each behind its own magic word
    assert len(record_bytes(b"abcde")) == 8 + 8  # header + data padded to 4 bytes


def test_an_image_record_in_parts_reads_back_byte_exact(tmp_path):
    data, pixels = png(1)
    # a private PNG chunk after IHDR whose magic word lands on a 4-byte boundary of the record's data
    # (24 header bytes + 33 PNG bytes + 8 chunk-head bytes + 3 = 68): mxnet stores such a record in parts
    body = b"\0\0\0" + struct.pack("<I", KMAGIC) + b"x"
    chunk = struct.pack(">I", len(body)) + b"aiRd" + body + struct.pack(">I", zlib.crc32(b"aiRd" + body))
    data = data[:33] + chunk + data[33:]
    rec, idx = write_pack(tmp_path, [(png(0)[0], 0), (data, 1)])
    assert struct.unpack_from("<I", rec.read_bytes(), read_index(idx)[2] + 4)[0] >> 29 == 1
    images, labels = read_pack(tmp_path)
    assert labels == [0, 1] and images[1].read() == data
    np.testing.assert_array_equal(images[1].load_rgb(), pixels)


@pytest.mark.data
def test_lfw_images_packed_by_the_script_read_back_byte_exact(data_root, tmp_path):
    chosen = lfw_images(data_root, people=3, per_person=2)
    write_pack(tmp_path, [(path.read_bytes(), c) for path, c in chosen])
    images, labels = read_pack(tmp_path)
    assert labels == [c for _, c in chosen] == [0, 0, 1, 1, 2, 2]
    for im, (path, _) in zip(images, chosen):
        assert im.read() == path.read_bytes()
        np.testing.assert_array_equal(im.load_rgb(), load_rgb(path))


def corrupt_at(rec: Path, offset: int, data: bytes) -> None:
    raw = bytearray(rec.read_bytes())
    raw[offset : offset + len(data)] = data
    rec.write_bytes(bytes(raw))


def test_bad_magic_names_the_pack_and_the_record(pack):
    rec, idx, *_ = pack
    offset = read_index(idx)[3]
    corrupt_at(rec, offset, b"\0\0\0\0")
    with pytest.raises(DataError, match=r"record 3 \(offset \d+\): bad magic 0x00000000") as err:
        RecordImage(rec, 3, offset).read()
    assert err.value.path == rec
    with pytest.raises(DataError, match="record 3"):  # listing the pack reads each header: it stops there
        read_pack(rec.parent)


def test_an_index_pointing_inside_a_record_is_refused(pack):
    rec, idx, *_ = pack
    with pytest.raises(DataError, match="record 2 .*bad magic"):
        RecordImage(rec, 2, read_index(idx)[2] + 4).read()


def test_truncated_pack_names_the_record_that_runs_past_the_end(pack):
    rec, idx, *_ = pack
    offsets = read_index(idx)
    rec.write_bytes(rec.read_bytes()[: offsets[5] + 20])
    with pytest.raises(DataError, match=r"record 5 \(offset \d+\): its length \d+ runs past the end"):
        RecordImage(rec, 5, offsets[5]).read()
    with pytest.raises(DataError, match="record 6 .*beyond the end of the file"):
        RecordImage(rec, 6, offsets[6]).read()


def test_undecodable_image_names_its_record_and_can_be_skipped(tmp_path):
    good = [png(i)[0] for i in range(3)]
    write_pack(tmp_path, [(good[0], 0), (b"\xff\xd8 not a jpeg at all", 0), (good[2], 1)])
    images, _ = read_pack(tmp_path)
    with pytest.raises(DataError, match="record 2: not a readable image") as err:
        images[1].load_rgb()
    assert err.value.path == tmp_path / "train.rec" and ".idx file" in str(err.value)  # the fix: drop its line
    settings = align_settings_for("pack", size=40, aligned=True)
    with pytest.raises(DataError, match="record 2"):
        align_images(images, settings, cache=False, progress=False, workers=1)
    chips = align_images(images, settings, cache=False, progress=False, workers=1, on_bad_image="skip")
    assert chips.paths == [images[0], images[2]] and chips.chips.shape == (2, 40, 40, 3)
    assert [s.path for s in chips.skipped] == [images[1]] and "record 2" in chips.skipped[0].reason


@pytest.mark.parametrize(
    "text, message",
    [
        ("0\t0\n1\n", "line 2: expected 'key<TAB>offset'"),
        ("0\t0\n0\t8\n", "line 2: record 0 is listed twice"),
        ("", "lists no records"),
    ],
)
def test_malformed_index_names_its_line(tmp_path, text, message):
    idx = tmp_path / "train.idx"
    idx.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_index(idx)
    assert err.value.path == idx


def test_missing_index_is_a_clear_error(tmp_path):
    (tmp_path / "train.rec").write_bytes(record_bytes(pack_payload(0, b"x")))
    with pytest.raises(DataError, match="RecordIO index not found"):
        read_pack(tmp_path)
