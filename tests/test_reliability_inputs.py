"""Issue 21, inputs: `--inputs` CSV files read strictly (UTF-8, quotes, ragged rows), study ids never merged,
and images that are not radiographs refused (EXIF orientation applied, NaN and 1x1 images refused); the audit's
cases (../shared/research/audit/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leadrrg.data.images import check_image, load_image
from leadrrg.errors import LeadrrgError
from leadrrg.inference.studies import find_studies


def _png(path: Path, size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(size, np.uint8)).save(path)
    return path


def test_a_csv_that_is_not_utf8_is_named_with_its_line(tmp_path):
    # Audit: rc 1 "internal error: UnicodeDecodeError".
    path = tmp_path / "x.csv"
    path.write_bytes(b"study_id,path\nA,img/gr\xe9y.png\n")
    with pytest.raises(LeadrrgError, match=r"x\.csv is not UTF-8 text \(byte 0xe9 at line 2\)"):
        find_studies(str(path))


def test_a_csv_with_an_unterminated_quote_says_so(tmp_path):
    # Audit: rc 2, but for the wrong reason ("line 2: empty 'study_id' or 'path'").
    path = tmp_path / "x.csv"
    path.write_text('study_id,path\n"A,a.png\nB,b.png\n')
    with pytest.raises(LeadrrgError, match="line 2: a quoted field that starts here is never closed"):
        find_studies(str(path))


def test_a_csv_with_a_ragged_row_is_refused(tmp_path):
    # Audit: rc 0, the extra field dropped without a word.
    path = tmp_path / "x.csv"
    path.write_text("study_id,path\nA,a.png,extra\n")
    with pytest.raises(LeadrrgError, match="line 2 has 3 fields but the header has 2"):
        find_studies(str(path))


def test_a_csv_still_groups_rows_by_study(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("\ufeffstudy_id,path\nA,a.png\nA,b.png\n\nB,/abs/c.png\n")
    studies = find_studies(str(path))
    assert [(s.id, s.images) for s in studies] == [
        ("A", [str(tmp_path / "a.png"), str(tmp_path / "b.png")]),
        ("B", ["/abs/c.png"]),
    ]


def test_study_ids_never_merge_a_file_with_a_folder_or_another_file(tmp_path):
    # Audit: x.png + x/a.jpg and y.png + y.jpg became two 2-view studies instead of four studies.
    root = tmp_path / "inp2"
    for name in ("x.png", "x/a.png", "y.png", "y.jpg", "z.png", "p10/s5/1.png", "p10/s5/2.png"):
        _png(root / name)
    studies = {
        s.id: [Path(p).relative_to(root).as_posix() for p in s.images] for s in find_studies(str(root))
    }
    assert studies == {
        "x.png": ["x.png"],
        "x": ["x/a.png"],
        "y.png": ["y.png"],
        "y.jpg": ["y.jpg"],
        "z": ["z.png"],  # no clash: the id stays the name without suffix
        "p10/s5": ["p10/s5/1.png", "p10/s5/2.png"],
    }


def test_exif_orientation_is_applied(tmp_path):
    # Audit: exif_rot6.jpg (pixels stored rotated, Orientation=6) was read as stored.
    upright = np.zeros((40, 64), np.uint8)
    upright[:10] = 255  # the top is bright
    Image.fromarray(upright).save(tmp_path / "upright.png")
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))  # as a camera that was turned stores it
    exif = stored.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    stored.save(tmp_path / "rot6.png", exif=exif)
    assert np.array_equal(load_image(tmp_path / "rot6.png"), load_image(tmp_path / "upright.png"))


def test_a_float_image_with_nan_is_refused(tmp_path):
    # Audit: an all-NaN float TIFF gave rc 0 and a report from a black image.
    Image.fromarray(np.full((20, 20), np.nan, np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(LeadrrgError, match="nan.tif holds NaN or infinite pixel values"):
        load_image(tmp_path / "nan.tif")
    finite = np.linspace(0, 5, 400, dtype=np.float32).reshape(20, 20)
    Image.fromarray(finite).save(tmp_path / "ok.tif")
    assert load_image(tmp_path / "ok.tif").max() == 1.0


def test_a_one_pixel_image_is_refused(tmp_path):
    # Audit: one_pixel.png gave rc 0 and a confident report.
    path = _png(tmp_path / "one_pixel.png", (1, 1))
    with pytest.raises(
        LeadrrgError, match=r"one_pixel\.png is 1x1 pixels; expected a radiograph of at least"
    ):
        load_image(path)
    assert "1x1 pixels" in check_image(path)
    assert load_image(_png(tmp_path / "small.png", (8, 8))).shape == (8, 8)
