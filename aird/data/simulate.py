"""What a surveillance camera would hand over: the faces of photos as small crops of R x R pixels.

Each photo's face is found and aligned as everywhere in aird (dlib, 5 points; a photo without a face is
skipped with that reason, never cut from a guessed box), then made small by the same ``Degradation`` that
training and evaluation use, and written as a PNG a detector's crop would resemble. ``aird identify
--cropped`` reads such crops back through the one LR input path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image

from aird.data.align import AlignSettings
from aird.data.chips import SkippedImage, align_images
from aird.data.degrade import Degradation
from aird.io import atomic_path


@dataclass
class ShrinkReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)


def _out_name(path: Path, roots: Sequence[Path]) -> Path:
    """The photo's path from the folder it was found in, that folder included (orl/s1/2.pgm given as
    orl/ -> orl/s1/2.png); a photo named alone keeps its own folder's name (s2/1.pgm -> s2/1.png), so
    photos of two people with the same file name never overwrite each other."""
    for root in roots:
        if root in path.parents:
            return (Path(root.resolve().name) / path.relative_to(root)).with_suffix(".png")
    return (Path(path.resolve().parent.name) / path.name).with_suffix(".png")


def shrink_faces(
    items: Sequence[str | Path],
    out_dir: str | Path,
    res: int = 16,
    down: str = "area",
    seed: int = 0,
    upsample: int = 1,
    progress: bool = True,
) -> ShrinkReport:
    """Write a ``res`` x ``res`` face crop of each photo in ``items`` (files or folders) under ``out_dir``."""
    from aird.data.inputs import expand_paths

    paths = expand_paths(list(items))
    roots = [Path(i) for i in items if Path(i).is_dir()]
    settings = AlignSettings(upsample=upsample, on_missing="error")
    chips = align_images(paths, settings, progress=progress, desc="finding faces", on_bad_image="skip")
    small = Degradation(res=res, down=down, up=None, seed=seed).batch(chips.chips, chips.digests)
    report = ShrinkReport(skipped=list(chips.skipped))
    for path, face in zip(chips.paths, small):
        target = Path(out_dir) / _out_name(path, roots)
        with atomic_path(target) as tmp:
            Image.fromarray(face).save(tmp, format="PNG")
        report.written.append(target)
    return report
