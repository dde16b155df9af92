"""The annotation-file parser: rows, line numbers, and an error naming file and line for each malformation."""
from __future__ import annotations

import numpy as np
import pytest

import embedder.catalogs.annotations as annotations
from embedder.catalogs.annotations import read_annotation, read_sign_matrix
from embedder.catalogs.base import CatalogError


def write(tmp_path, text: str, name: str = "list_bbox.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_rows_header_and_line_numbers(tmp_path):
    path = write(tmp_path, "2\nimage_name  x_1  y_1  x_2  y_2\nimg/A_B/img_1.jpg  072 079 232 273\n\nimg/C/img_2.jpg 1 2 3 4\n")
    table = read_annotation(path, 5, (1, 2, 3, 4))
    assert table.header == ("image_name", "x_1", "y_1", "x_2", "y_2")
    assert table.rows == [("img/A_B/img_1.jpg", 72, 79, 232, 273), ("img/C/img_2.jpg", 1, 2, 3, 4)]
    assert table.line_numbers == [3, 5]
    assert len(table) == 2 and table.where(1) == f"{path}, line 5"


def test_windows_line_endings_and_trailing_spaces(tmp_path):
    path = write(tmp_path, "2  \r\ncategory_name  category_type \r\nButton-Down        1   \r\nJeans\t2\r\n\r\n")
    assert read_annotation(path, 2, (1,)).rows == [("Button-Down", 1), ("Jeans", 2)]


def test_names_with_spaces_keep_them_when_asked(tmp_path):
    path = write(tmp_path, "3\nattribute_name  attribute_type\na-line            3\nabstract print    1\nlong  sleeve 4\n")
    rows = read_annotation(path, 2, (1,), spaced_first=True).rows
    assert rows == [("a-line", 3), ("abstract print", 1), ("long  sleeve", 4)]
    with pytest.raises(CatalogError, match="line 4: expected 2 columns"):
        read_annotation(path, 2, (1,))


def test_wrong_number_of_columns_names_file_and_line(tmp_path):
    path = write(tmp_path, "3\nimage_name  x_1  y_1  x_2  y_2\nimg/a.jpg 1 2 3 4\nimg/b.jpg 1 2 3\nimg/c.jpg 1 2 3 4\n")
    with pytest.raises(CatalogError) as caught:
        read_annotation(path, 5, (1, 2, 3, 4))
    message = str(caught.value)
    assert str(path) in message and "line 4" in message and "expected 5 columns" in message and "found 4" in message


def test_non_integer_names_file_line_and_value(tmp_path):
    path = write(tmp_path, "2\nimage_name  category_label\nimg/a.jpg 3\nimg/b.jpg three\n", "list_category_img.txt")
    with pytest.raises(CatalogError) as caught:
        read_annotation(path, 2, (1,))
    message = str(caught.value)
    assert "list_category_img.txt, line 4" in message and "integer" in message and "'three'" in message


@pytest.mark.parametrize("count", [1, 3])
def test_count_mismatch_names_line_one(tmp_path, count):
    path = write(tmp_path, f"{count}\nimage_name  evaluation_status\nimg/a.jpg train\nimg/b.jpg test\n")
    with pytest.raises(CatalogError) as caught:
        read_annotation(path, 2)
    message = str(caught.value)
    assert f"{path}, line 1" in message and f"says {count} rows" in message and "has 2" in message


def test_count_line_that_is_not_a_number(tmp_path):
    path = write(tmp_path, "image_name  evaluation_status\nimg/a.jpg train\n")
    with pytest.raises(CatalogError, match=r"line 1: expected the number of rows"):
        read_annotation(path, 2)


def test_missing_header_line(tmp_path):
    with pytest.raises(CatalogError, match=r"line 2: expected a header line"):
        read_annotation(write(tmp_path, "0\n"), 2)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(CatalogError, match=r"nothing\.txt: annotation file is missing"):
        read_annotation(tmp_path / "nothing.txt", 2)


def test_binary_garbage_names_the_line(tmp_path):
    path = tmp_path / "list_bbox.txt"
    path.write_bytes(b"1\nimage_name x_1\n\xff\xfe\x00 1\n")
    with pytest.raises(CatalogError, match=r"list_bbox\.txt, line 3: not UTF-8"):
        read_annotation(path, 2)


def signs_file(tmp_path, rows, header="image_name  attribute_labels", count=None, newline="\n"):
    count = len(rows) if count is None else count
    text = newline.join([str(count), header, *rows]) + newline
    return write(tmp_path, text, "list_attr_img.txt")


def test_a_byte_order_mark_is_read_past_in_every_annotation_file(tmp_path):
    table = write(tmp_path, "\ufeff1\nimage_name  x_1  y_1  x_2  y_2\nimg/a.jpg 1 2 3 4\n")
    assert read_annotation(table, 5, (1, 2, 3, 4)).rows == [("img/a.jpg", 1, 2, 3, 4)]
    signs = write(tmp_path, "\ufeff2\nheader\nimg/a.jpg -1 1\nimg/b.jpg 1 0\n", "list_attr_img.txt")
    assert read_sign_matrix(signs, 2, ["img/b.jpg", "img/a.jpg"]).tolist() == [[1, 0], [-1, 1]]


@pytest.mark.parametrize("block_lines", [1000, 1])  # twice within one block, and across blocks
def test_an_image_listed_twice_in_the_sign_matrix_names_the_second_line(tmp_path, monkeypatch, block_lines):
    monkeypatch.setattr(annotations, "MATRIX_BLOCK_LINES", block_lines)
    path = signs_file(tmp_path, ["img/a.jpg -1 1", "img/b.jpg 1 0", "img/a.jpg 1 1"])
    with pytest.raises(CatalogError, match=r"list_attr_img\.txt, line 5: img/a\.jpg is listed again \(first at line 3\)"):
        read_sign_matrix(path, 2, ["img/a.jpg", "img/b.jpg"])


def test_sign_matrix_in_requested_order(tmp_path):
    path = signs_file(tmp_path, ["img/a.jpg   -1 1 0", "img/b.jpg\t1  -1\t-1 ", "img/c.jpg 0 0 1"], newline="\r\n")
    matrix = read_sign_matrix(path, 3, ["img/c.jpg", "img/a.jpg"])
    assert matrix.dtype == np.int8
    assert matrix.tolist() == [[0, 0, 1], [-1, 1, 0]]


def test_sign_matrix_matches_a_reference_parse_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(annotations, "MATRIX_BLOCK_LINES", 3)
    rng = np.random.default_rng(0)
    expected = rng.integers(-1, 2, size=(10, 7))
    spacing = [" ", "  ", "\t"]
    rows = [f"img/x_{n}/img_{n:08d}.jpg " + spacing[n % 3].join(map(str, row)) for n, row in enumerate(expected)]
    names = [row.split()[0] for row in rows]
    matrix = read_sign_matrix(signs_file(tmp_path, rows), 7, names[::-1])
    assert np.array_equal(matrix, expected[::-1])


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ("1 -1", "expected an image name and 3 values, found 2"),
        ("1 -1 0 1", "found 4 values"),
        ("1 2 0", "column 3 should be 1, -1 or 0, found '2'"),
        ("1 -10", "found 2 values"),  # "-1" and "0" glued together
        ("1-1 0", "found 2 values"),
        ("1 -0 1", "column 3 should be 1, -1 or 0, found '-0'"),
        ("1 x 1", "found 'x'"),
    ],
)
def test_sign_matrix_bad_line_names_file_and_line(tmp_path, monkeypatch, values, problem):
    monkeypatch.setattr(annotations, "MATRIX_BLOCK_LINES", 2)
    rows = ["img/a.jpg 1 1 1", "img/b.jpg 0 0 0", "img/c.jpg -1 -1 -1", f"img/d.jpg {values}"]
    with pytest.raises(CatalogError) as caught:
        read_sign_matrix(signs_file(tmp_path, rows), 3, ["img/a.jpg"])
    message = str(caught.value)
    assert "list_attr_img.txt, line 6" in message and problem in message


def test_sign_matrix_count_mismatch_and_missing_name(tmp_path):
    path = signs_file(tmp_path, ["img/a.jpg 1 1", "img/b.jpg 0 0"], count=3)
    with pytest.raises(CatalogError, match=r"line 1: says 3 rows but the file has 2"):
        read_sign_matrix(path, 2, ["img/a.jpg"])
    path = signs_file(tmp_path, ["img/a.jpg 1 1", "img/b.jpg 0 0"])
    with pytest.raises(CatalogError, match=r"no row for 1 image\(s\).*img/z\.jpg"):
        read_sign_matrix(path, 2, ["img/a.jpg", "img/z.jpg"])
