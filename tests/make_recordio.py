"""Write insightface-style RecordIO packs (``train.rec`` + ``train.idx``) the way mxnet does, without mxnet.

Written from the format, independently of ``aird.data.recordio`` (the reader it tests): dmlc-core's
``RecordIOWriter::WriteRecord`` (magic, lrecord = part flag << 29 | length, data, zero padding to 4 bytes;
data holding the magic word at a 4-byte boundary is cut there into parts 1 / 2 / 3), mxnet's
``recordio.pack`` (``IfQQ`` header, float32 label array when flag > 0) and insightface's layout (header
record 0 = [first identity record, end], the images, then one record per identity with its image range).

Importable (``write_pack``, ``record_bytes``, ``pack_payload``) and runnable on LFW images::

    python tests/make_recordio.py OUT_DIR [--people 4] [--per-person 2] [--data-root ROOT]
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path
from typing import Sequence

KMAGIC = 0xCED7230A


def record_bytes(data: bytes) -> bytes:
    """One record as ``RecordIOWriter::WriteRecord`` writes it (split into parts where the magic appears)."""
    magic = struct.pack("<I", KMAGIC)
    out = bytearray()
    start = 0
    for i in range(0, len(data) // 4 * 4, 4):
        if data[i : i + 4] == magic:
            out += magic + struct.pack("<I", (1 if start == 0 else 2) << 29 | (i - start)) + data[start:i]
            start = i + 4
    out += magic + struct.pack("<I", (3 if start else 0) << 29 | (len(data) - start)) + data[start:]
    out += b"\0" * (-len(data) % 4)
    return bytes(out)


def pack_payload(label: float | Sequence[float], image: bytes, id_: int = 0, id2: int = 0) -> bytes:
    """mxnet's ``recordio.pack``: a scalar label in the header, or ``flag`` float32 labels after it."""
    if isinstance(label, (int, float)):
        return struct.pack("<IfQQ", 0, float(label), id_, id2) + image
    labels = list(label)
    return struct.pack("<IfQQ", len(labels), 0.0, id_, id2) + struct.pack(f"<{len(labels)}f", *labels) + image


def write_records(out_dir: Path, payloads: Sequence[tuple[int, bytes]]) -> tuple[Path, Path]:
    """``train.rec`` and ``train.idx`` (``key<TAB>offset`` lines, mxnet's ``MXIndexedRecordIO``) of
    ``(key, payload)`` records, in that order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rec, idx = out_dir / "train.rec", out_dir / "train.idx"
    lines = []
    with open(rec, "wb") as fh:
        for key, payload in payloads:
            lines.append(f"{key}\t{fh.tell()}\n")
            fh.write(record_bytes(payload))
    idx.write_text("".join(lines))
    return rec, idx


def write_pack(out_dir: str | Path, images: Sequence[tuple[bytes, int]], header: bool = True) -> tuple[Path, Path]:
    """A pack of encoded ``(image bytes, class)``; ``header``: insightface's layout (header record 0 and
    identity records; classes must then come in runs, as insightface packs them), else mxnet's im2rec
    layout (records 0..n-1, images only)."""
    if not header:
        return write_records(Path(out_dir), [(k, pack_payload(c, img, k)) for k, (img, c) in enumerate(images)])
    records = [(k, pack_payload(c, img, k)) for k, (img, c) in enumerate(images, start=1)]
    runs: list[tuple[int, int]] = []  # each class's [first, end) image record
    for k, (_, c) in enumerate(images, start=1):
        if runs and images[runs[-1][0] - 1][1] == c:
            runs[-1] = (runs[-1][0], k + 1)
        else:
            runs.append((k, k + 1))
    first_id = len(images) + 1
    records += [(first_id + j, pack_payload([a, b], b"")) for j, (a, b) in enumerate(runs)]
    records.insert(0, (0, pack_payload([first_id, first_id + len(runs)], b"")))
    return write_records(Path(out_dir), records)


def lfw_images(data_root: Path, people: int, per_person: int) -> list[tuple[Path, int]]:
    """The first ``per_person`` images of the first ``people`` LFW people with that many, with class numbers."""
    from aird.data.lfw import LFW

    groups = [items for items in LFW(data_root).folder().by_identity().values() if len(items) >= per_person]
    return [(it.path, c) for c, items in enumerate(groups[:people]) for it in items[:per_person]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="folder to write train.rec and train.idx into")
    ap.add_argument("--people", type=int, default=4)
    ap.add_argument("--per-person", type=int, default=2)
    ap.add_argument("--data-root", type=Path, default=None, help="default: AIRD_DATA or ../shared/data")
    args = ap.parse_args()
    from aird.paths import data_root

    chosen = lfw_images(data_root(args.data_root), args.people, args.per_person)
    rec, idx = write_pack(args.out, [(path.read_bytes(), c) for path, c in chosen])
    print(
        f"packed {len(chosen)} LFW images of {args.people} people into {rec} ({rec.stat().st_size:,} bytes) and {idx}"
    )


if __name__ == "__main__":
    main()
