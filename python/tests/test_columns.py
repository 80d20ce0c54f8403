"""Arrow <-> quiver.v1.Column without a server: every type and nulls survive a round trip,
inputs keep their dtypes, and a push is cast to the declared types."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from quiver import _base, _columns
from conftest import TS, source_table


def test_every_type_round_trips_with_its_nulls():
    table = source_table()
    for name in table.column_names:
        column = table.column(name)
        back = _columns.column_to_arrow(_columns.column_from_arrow(column))
        assert back.type == column.type, name
        assert back.to_pylist() == column.to_pylist(), name


def test_inputs_keep_their_types():
    table = _columns.to_table({"a": np.array([1, 2], np.int32), "b": iter([1.5, None])}, "x")
    assert table.schema.types == [pa.int32(), pa.float64()]
    rows = _columns.to_table([{"k": 1, "s": "x"}, {"k": 2, "s": None}], "rows")
    assert rows.column("s").to_pylist() == ["x", None]
    with pytest.raises(TypeError):
        _columns.to_table(42, "entity_rows")


def test_pushes_are_cast_to_the_declared_types():
    schema = {"f": pa.float32(), "l": pa.list_(pa.float32()), "t": TS, "i": pa.int32()}
    table = pa.table({
        "f": pa.array([0.5], pa.float64()),
        "l": pa.array([[1.0, 2.0]], pa.list_(pa.float64())),
        "t": pa.array([dt.datetime(2026, 1, 1)], pa.timestamp("ns")),  # naive = UTC
        "i": pa.array([None], pa.null()),
        "extra": pa.array(["kept"]),
    })
    cast = _base.conform(table, schema)
    assert [cast.schema.field(n).type for n in "flti"] == [schema[n] for n in "flti"]
    assert cast.column("t").to_pylist() == [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)]
    with pytest.raises(TypeError, match="'i'"):
        _base.conform(pa.table({"i": pa.array([2**40], pa.int64())}), schema)


def test_times_are_microseconds_in_utc():
    assert _base.micros("1970-01-01T00:00:01Z", "t") == 1_000_000
    assert _base.micros(dt.datetime(1970, 1, 1, 0, 0, 2), "t") == 2_000_000
    with pytest.raises(TypeError):
        _base.micros(True, "t")


def test_plain_python_keys_take_the_short_path_and_mean_the_same():
    values = [1, None, 3]
    short = _columns.column_from_python(values)
    assert short == _columns.column_from_arrow(pa.array(values, pa.int64()))
    assert _columns.column_to_python(short) == values
    assert _columns.column_from_python([1, "a"]) is None  # mixed: the Arrow path decides
    assert _columns.column_from_python([None]) is None
    assert _columns.python_columns([{"k": 1}, {"k": 2}]) == {"k": [1, 2]}
    assert _columns.python_columns(pa.table({"k": [1]})) is None
