"""Column readers' conversions (base.py): lazy_float_column, the column float_column gives with each value
converted as it is read, and int_column, which reads a text that is the same on every line once.

Its one assumption, that ``float()`` reads the text at one place of the lines of a shape on all of them or on
none, is checked here on random texts whose digits are changed from line to line.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainmon_tui.parsers.trainlog.base import LazyFloatColumn, float_column, int_column, lazy_float_column


def _other_digits(text: str, rng: random.Random) -> str:
    return "".join(rng.choice("0123456789") if char.isdigit() else char for char in text)


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("0123456789.eE+-_ naifINFxy")), min_size=1, max_size=12),
    st.integers(min_value=0, max_value=10_000),
)
def test_float_reads_a_shapes_text_on_every_line_or_on_none(text: str, seed: int) -> None:
    rng = random.Random(seed)
    lines = [text] + [_other_digits(text, rng) for _ in range(20)]
    readable = []
    for line in lines:
        try:
            float(line)
        except ValueError:
            readable.append(False)
        else:
            readable.append(True)
    assert len(set(readable)) == 1, lines
    if readable[0]:
        lazy = lazy_float_column(lines, 0, (0, len(text)))
        assert repr(list(lazy)) == repr(float_column(lines, 0, (0, len(text))))
    else:
        with pytest.raises(ValueError):
            lazy_float_column(lines, 0, (0, len(text)))


def test_values_are_converted_as_they_are_read() -> None:
    lines = ["[x] lr 1.0e-04", "[x] lr 9.5e-05", "[x] lr 3.0e-03"]
    column = lazy_float_column(lines, 4, (3, 10))
    assert isinstance(column, LazyFloatColumn)
    assert len(column) == 3
    assert (column[0], column[2], column[-1]) == (1.0e-04, 3.0e-03, 3.0e-03)
    assert column._values is None  # nothing converted whole yet
    assert column[0:2] == [1.0e-04, 9.5e-05]
    assert list(column) == [1.0e-04, 9.5e-05, 3.0e-03]
    assert column == [1.0e-04, 9.5e-05, 3.0e-03]
    assert column == lazy_float_column(lines, 4, (3, 10))
    assert column != [1.0e-04]
    assert sum(column) == sum([1.0e-04, 9.5e-05, 3.0e-03])
    assert lazy_float_column([], 0, (0, 1)) == []


def test_nan_values_read_as_float_column_reads_them() -> None:
    lines = ["loss nan", "loss nan"]
    column = lazy_float_column(lines, 0, (5, 8))
    assert all(map(math.isnan, column)) and math.isnan(column[1])
    with pytest.raises(ValueError):
        lazy_float_column(["loss n/a", "loss n/a"], 0, (5, 8))


def test_an_int_column_of_one_text_reads_as_every_line_would() -> None:
    same = ["step 7/120", "step 8/120", "step 9/120"]
    assert int_column(same, 0, (7, 10)) == [120, 120, 120]
    assert int_column(same, 0, (5, 6)) == [7, 8, 9]
    # First and last alike, one between them not.
    assert int_column(["a 120", "a 121", "a 120"], 0, (2, 5)) == [120, 121, 120]
    assert int_column([], 0, (0, 1)) == []
    with pytest.raises(ValueError):
        int_column(["x n/a", "x n/a"], 0, (2, 5))
