"""aird shrink: photos in, R x R face crops out, through the same degradation as training; bad files skipped."""

import numpy as np
from PIL import Image

from aird.cli import main
from aird.data.align import FaceAligner
from aird.data.degrade import Degradation
from aird.data.images import load_rgb
from aird.data.simulate import shrink_faces


def test_crops_equal_the_training_degradation_of_the_aligned_face(orl_root, tmp_path):
    photo = orl_root / "orl" / "s1" / "1.pgm"
    report = shrink_faces([photo], tmp_path, res=12, progress=False)
    assert report.written == [tmp_path / "s1" / "1.png"] and not report.skipped
    crop = np.asarray(Image.open(report.written[0]))
    chip = FaceAligner().align(load_rgb(photo), source=photo).chip
    from aird.data.chips import file_digest

    want = Degradation(res=12, up=None).batch(chip[None], [file_digest(photo)])[0]
    assert crop.shape == (12, 12, 3) and np.array_equal(crop, want)


def test_folders_keep_their_layout_and_bad_files_are_skipped_with_a_reason(orl_root, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    Image.new("RGB", (120, 120), (128, 128, 128)).save(tmp_path / "in" / "wall.png")  # no face
    out = tmp_path / "out"
    code = main(
        ["shrink", str(orl_root / "orl" / "s2"), str(tmp_path / "in"), "--out", str(out), "--res", "16", "--quiet"]
    )
    assert code == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written and all(p.startswith("s2/") for p in written)
    err = capsys.readouterr().err
    assert "notes.txt" in err and "wall.png: no face found" in err
