"""leadrrg.io: strict text and CSV reads name the file and the line; output paths are checked before the work."""

from __future__ import annotations

from pathlib import Path

import pytest

from leadrrg.errors import LeadrrgError
from leadrrg.io import (
    atomic_write_text,
    check_output_dir,
    check_output_file,
    read_csv_table,
    read_text,
    text_lines,
)


def test_csv_keeps_quoted_newlines_and_numbers_lines_by_record():
    header, rows = read_csv_table("t.csv", 'id,Reports\n1,"two\nlines"\n\n2,plain\n')
    assert header == ["id", "Reports"]
    assert rows == [(2, {"id": "1", "Reports": "two\nlines"}), (5, {"id": "2", "Reports": "plain"})]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'id,Reports\n1,ok\n2,"never closed\n3,more\n',
            "t.csv: line 3: a quoted field that starts here is never closed",
        ),
        ('id,Reports\n1,"closed" then text\n', "t.csv: line 2: malformed CSV"),
        ("id,Reports\n1,ok\n2,too,many\n", "t.csv: line 3 has 3 fields but the header has 2"),
        ("id,Reports\n1\n", "t.csv: line 2 has 1 fields"),
    ],
)
def test_malformed_csv_is_refused_with_the_line(text, message):
    with pytest.raises(LeadrrgError, match=message):
        read_csv_table("t.csv", text)


def test_read_text_names_the_problem(tmp_path: Path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    assert read_text(tmp_path / "bom.txt", "file", "text") == "hello"
    (tmp_path / "latin1.txt").write_bytes(b"line one\ncaf\xe9\n")
    with pytest.raises(LeadrrgError, match="latin1.txt is not UTF-8 text \\(byte 0xe9 at line 2\\)"):
        read_text(tmp_path / "latin1.txt", "file", "text")
    with pytest.raises(LeadrrgError, match="is a directory, not a file"):
        read_text(tmp_path, "file", "text")
    with pytest.raises(LeadrrgError, match="nope.txt does not exist"):
        read_text(tmp_path / "nope.txt", "file", "text")
    assert text_lines("a\u2028b\r\nc\n") == ["a\u2028b", "c"]  # reports may hold U+2028


def test_output_paths_are_checked_before_the_work(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LeadrrgError, match="is a directory; expected a file path"):
        check_output_file(tmp_path)
    with pytest.raises(LeadrrgError, match="file is a file, not a directory"):
        check_output_file(tmp_path / "file" / "out.json")
    with pytest.raises(LeadrrgError, match="is a file; expected a directory"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(LeadrrgError, match="is a directory"):
        atomic_write_text(tmp_path, "x")
    check_output_dir(tmp_path / "new" / "run")  # absent paths are fine
