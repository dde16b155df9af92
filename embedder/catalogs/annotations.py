"""DeepFashion annotation text files: a count line, a header line, then whitespace-separated rows.

Every malformed line becomes a CatalogError that names the file, the 1-based line number and
what was expected there, so a damaged download can be found and fixed by hand.
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedder.catalogs.base import CatalogError, read_text_lines

# Rows of list_attr_img.txt are parsed this many lines at a time (about 8 MB of text).
MATRIX_BLOCK_LINES = 4096
_BLANKS = bytes.maketrans(b"\t\r", b"  ")


@dataclass(frozen=True)
class Annotation:
    """One annotation file, column by column: text columns as str, integer columns as int."""

    path: Path
    header: tuple[str, ...]
    columns: tuple[tuple, ...]  # columns[c][r]: column c of row r
    line_numbers: list[int]  # 1-based line of each row in the file

    def __len__(self) -> int:
        return len(self.line_numbers)

    @property
    def rows(self) -> list[tuple]:
        """The rows as tuples, in file order."""
        return list(zip(*self.columns))

    def where(self, row: int) -> str:
        """'<file>, line <n>' for row ``row``, for error messages."""
        return f"{self.path}, line {self.line_numbers[row]}"


def read_annotation(
    path: Path,
    columns: int,
    integer_columns: Collection[int] = (),
    *,
    spaced_first: bool = False,
) -> Annotation:
    """Read an annotation file whose rows have ``columns`` columns; CatalogError on any bad line.

    ``integer_columns`` (0-based) are converted to int. With ``spaced_first`` the first column may
    contain spaces ("abstract print  1"): the other columns are split off from the right.
    """
    path = Path(path)
    with paused_gc():
        return _read_annotation(path, columns, integer_columns, spaced_first)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects that hold no cycles.

    Without this, the collector re-scans the growing lists of rows again and again and reading
    a 289k-line file takes about twice as long.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_annotation(path: Path, columns: int, integer_columns: Collection[int], spaced_first: bool) -> Annotation:
    lines = read_text_lines(path, ": annotation file is missing; is the catalog root right?")
    count, header = _preamble(path, lines)
    # Whole-list passes (split, zip, map) rather than a loop per line: the real files have 289k lines.
    body = lines[2:]
    fields = [line.rsplit(None, columns - 1) for line in body] if spaced_first else [line.split() for line in body]
    line_numbers = [number for number, row in enumerate(fields, start=3) if row]
    if len(line_numbers) != len(fields):
        fields = [row for row in fields if row]
    if any(len(row) != columns for row in fields):
        row = next(row for row, found in enumerate(fields) if len(found) != columns)
        raise CatalogError(
            f"{path}, line {line_numbers[row]}: expected {columns} columns ({' '.join(header)}), "
            f"found {len(fields[row])}: {' '.join(fields[row])[:120]!r}"
        )
    table = list(zip(*fields)) if fields else [() for _ in range(columns)]
    for column in integer_columns:
        table[column] = _integers(path, table[column], column, line_numbers)
    _check_count(path, count, len(fields))
    return Annotation(path, header, tuple(table), line_numbers)


def _integers(path: Path, texts: Sequence[str], column: int, line_numbers: Sequence[int]) -> tuple[int, ...]:
    try:
        return tuple(map(int, texts))
    except ValueError:
        for row, text in enumerate(texts):
            try:
                int(text)
            except ValueError:
                raise CatalogError(
                    f"{path}, line {line_numbers[row]}: column {column + 1} should be an integer, found {text!r}"
                ) from None
        raise


def read_sign_matrix(path: Path, width: int, names: Sequence[str]) -> np.ndarray:
    """Rows of ``width`` values in {1, -1, 0} for the named rows, in the order given (int8, len(names) x width).

    For list_attr_img.txt (hundreds of MB): each block of lines is parsed in one vectorised pass,
    and a block with a bad line is re-read line by line to name it.
    """
    path = Path(path)
    wanted = {name: position for position, name in enumerate(names)}
    if len(wanted) != len(names):
        raise ValueError("read_sign_matrix: the names must be unique")
    matrix = np.zeros((len(wanted), width), dtype=np.int8)
    found = np.zeros(len(wanted), dtype=bool)
    first_line = np.zeros(len(wanted), dtype=np.int64)  # where each wanted row was read, to name a repeat
    rows = 0
    for count, block in _matrix_blocks(path):
        values = _parse_signs(path, block, width)
        rows += len(block)
        positions = np.array([wanted.get(name, -1) for _, name, _ in block], dtype=np.int64)
        kept = np.flatnonzero(positions >= 0)
        order = positions[kept]
        # A repeated row would silently overwrite the first one's values: seen in an earlier block, or twice here.
        unique, first = np.unique(order, return_index=True)
        repeated = found[order]  # a copy: fancy indexing
        twice_here = np.ones(len(order), dtype=bool)
        twice_here[first] = False
        repeated |= twice_here
        if repeated.any():
            number, name, _ = block[kept[np.flatnonzero(repeated)[0]]]
            position = wanted[name]
            earlier = first_line[position] if found[position] else block[kept[first[np.searchsorted(unique, position)]]][0]
            raise CatalogError(f"{path}, line {number}: {name} is listed again (first at line {earlier}); "
                               "the file is damaged: download it again")
        found[order] = True
        first_line[order] = [block[row][0] for row in kept]
        matrix[order] = values[kept]
    _check_count(path, count, rows)
    if not found.all():
        missing = [name for name, position in wanted.items() if not found[position]]
        raise CatalogError(
            f"{path} has no row for {len(missing)} image(s) of the catalog, e.g. {missing[0]!r}; "
            "the annotation files disagree: download them again"
        )
    return matrix


def _preamble(path: Path, lines: Sequence[str]) -> tuple[int, tuple[str, ...]]:
    """The row count on line 1 and the column names on line 2."""
    first = lines[0].strip() if lines else ""
    try:
        count = int(first)
    except ValueError:
        raise CatalogError(
            f"{path}, line 1: expected the number of rows (an integer), found {first[:60]!r}"
        ) from None
    if count < 0:
        raise CatalogError(f"{path}, line 1: the number of rows must not be negative, found {count}")
    header = tuple(lines[1].split()) if len(lines) > 1 else ()
    if not header:
        raise CatalogError(f"{path}, line 2: expected a header line naming the columns, found nothing")
    return count, header


def _check_count(path: Path, count: int, rows: int) -> None:
    if rows != count:
        raise CatalogError(
            f"{path}, line 1: says {count} rows but the file has {rows}; the file is incomplete or damaged"
        )


def _matrix_blocks(path: Path) -> Iterator[tuple[int, list[tuple[int, str, bytes]]]]:
    """(row count, block of (line number, name, values text)) in file order, streaming the file."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise CatalogError(f"{path}: annotation file is missing; is the catalog root right?") from None
    with handle:
        head = [handle.readline(), handle.readline()]
        try:
            # utf-8-sig reads past a byte-order mark, as read_annotation does for the other files.
            lines = [head[0].decode("utf-8-sig"), head[1].decode("utf-8")]
        except UnicodeDecodeError:
            raise CatalogError(f"{path}, line 1: not UTF-8 text; is this an annotation file?") from None
        count, _ = _preamble(path, lines)
        number = 2
        block: list[tuple[int, str, bytes]] = []
        for line in handle:
            number += 1
            fields = line.split(None, 1)
            if not fields:
                continue
            values = fields[1].rstrip() if len(fields) > 1 else b""
            block.append((number, fields[0].decode("utf-8", "replace"), values))
            if len(block) == MATRIX_BLOCK_LINES:
                yield count, block
                block = []
        yield count, block


def _parse_signs(path: Path, block: list[tuple[int, str, bytes]], width: int) -> np.ndarray:
    """The block's values as an int8 array (len(block) x width), or CatalogError naming the bad line."""
    if not block:
        return np.zeros((0, width), dtype=np.int8)
    # C-speed bytes passes and whole-array arithmetic: parsing 289 million tokens one by one
    # would take minutes. Each "-1" is rewritten to " N" so that every value is one character.
    raw = b"\n".join(values for _, _, values in block) + b"\n"
    if b"\t" in raw or b"\r" in raw:
        raw = raw.translate(_BLANKS)
    grid = None
    if not raw.translate(None, b"-10 \n"):
        text = np.frombuffer(raw, dtype=np.uint8)
        minus = (text == ord("-")).view(np.uint8)
        digit_before = (text[:-1] == ord("1")) | (text[:-1] == ord("0"))
        fixed = text - minus * (ord("-") - ord(" "))
        # A character after "-" other than "1" turns into one that the next check refuses.
        fixed[1:] += minus[:-1] * (ord("N") - ord("1"))
        solid = (fixed != ord(" ")) & (fixed != ord("\n"))
        # Two characters in a row ("10", "-11") or a sign glued to a value ("1-1") are not one value each.
        rewritten = fixed.tobytes()
        if (
            not np.count_nonzero(digit_before & minus[1:].view(bool))
            and not np.count_nonzero(solid[:-1] & solid[1:])
            and not rewritten.translate(None, b"N10 \n")
        ):
            compact = rewritten.translate(None, b" ")
            if len(compact) == len(block) * (width + 1):
                grid = np.frombuffer(compact, dtype=np.uint8).reshape(len(block), width + 1)
    if grid is None or (grid[:, width] != ord("\n")).any():
        _raise_first_bad_line(path, block, width)
    values = grid[:, :width]
    return (values == ord("1")).view(np.int8) - (values == ord("N")).view(np.int8)


def _raise_first_bad_line(path: Path, block: list[tuple[int, str, bytes]], width: int) -> None:
    for number, name, values in block:
        tokens = values.split()
        if len(tokens) != width:
            raise CatalogError(
                f"{path}, line {number}: expected an image name and {width} values, found {len(tokens)} values "
                f"after {name!r}"
            )
        for column, token in enumerate(tokens, start=2):
            if token not in (b"1", b"-1", b"0"):
                raise CatalogError(
                    f"{path}, line {number}: column {column} should be 1, -1 or 0, found {token.decode(errors='replace')!r}"
                )
    raise CatalogError(f"{path}, lines {block[0][0]}-{block[-1][0]}: malformed values")
