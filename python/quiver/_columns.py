"""Conversions between Arrow (and what converts to it: pandas, polars, dicts of lists, lists
of dicts) and the columnar ``quiver.v1.Column`` of the online and push APIs."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional

import pyarrow as pa
import pyarrow.compute as pc

from quiver.v1 import types_pb2

TIMESTAMP = pa.timestamp("us", tz="UTC")


def to_table(data: Any, what: str) -> pa.Table:
    """``data`` as an Arrow table: a pyarrow Table or RecordBatch, a pandas or polars
    DataFrame, a dict of columns, or a list of row dicts."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, Mapping):
        # Arrow arrays and anything array-like (numpy, pandas) keep their dtype.
        return pa.table({name: values if isinstance(values, (pa.Array, pa.ChunkedArray))
                         or hasattr(values, "__array__") else list(values)
                         for name, values in data.items()})
    if isinstance(data, list):
        if not data:
            raise ValueError(f"{what} is empty: give at least one row")
        names: List[str] = list(data[0].keys())
        return pa.table({name: [row.get(name) for row in data] for name in names})
    module = type(data).__module__
    if module.startswith("pandas"):
        return pa.Table.from_pandas(data, preserve_index=False)
    if module.startswith("polars"):
        return data.to_arrow()
    raise TypeError(f"{what}: expected a pyarrow Table, pandas or polars DataFrame, a dict of "
                    f"columns or a list of row dicts, not {type(data).__name__}")


def column_from_arrow(array: Any) -> types_pb2.Column:
    """One Arrow column as a ``Column`` (nulls kept in ``nulls``)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    kind = array.type
    column = types_pb2.Column()
    if array.null_count:
        column.nulls.extend(array.is_null().to_pylist())
    if pa.types.is_dictionary(kind):
        return column_from_arrow(array.dictionary_decode())
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        offsets = array.offsets
        base = offsets[0].as_py() if len(offsets) else 0
        column.list_values.offsets.extend(o - base for o in offsets.to_pylist())
        inner = array.values.slice(base, (offsets[-1].as_py() - base) if len(offsets) else 0)
        column.list_values.values.CopyFrom(column_from_arrow(inner))
        return column
    if pa.types.is_timestamp(kind):
        micros = pc.cast(array.cast(pa.timestamp("us", tz=kind.tz)), pa.int64())
        column.timestamp_values.micros.extend(_filled(micros, 0))
    elif pa.types.is_boolean(kind):
        column.bool_values.values.extend(_filled(array, False))
    elif pa.types.is_int32(kind) or pa.types.is_int16(kind) or pa.types.is_int8(kind):
        column.int32_values.values.extend(_filled(array, 0))
    elif pa.types.is_integer(kind):
        column.int64_values.values.extend(_filled(array.cast(pa.int64()), 0))
    elif pa.types.is_float32(kind) or pa.types.is_float16(kind):
        column.float_values.values.extend(_filled(array.cast(pa.float32()), 0.0))
    elif pa.types.is_float64(kind):
        column.double_values.values.extend(_filled(array, 0.0))
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        column.string_values.values.extend(_filled(array, ""))
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        column.bytes_values.values.extend(_filled(array, b""))
    else:
        raise TypeError(f"cannot send a column of Arrow type {kind}: use int32/int64, float32/"
                        "float64, bool, string, binary, timestamp or list<float32>")
    return column


def _filled(array: pa.Array, placeholder: Any) -> List[Any]:
    if array.null_count:
        array = pc.fill_null(array, pa.scalar(placeholder, array.type))
    return array.to_pylist()


_PY_KINDS = ((bool, "bool_values"), (int, "int64_values"), (float, "double_values"),
             (str, "string_values"), (bytes, "bytes_values"))


def python_columns(data: Any) -> Optional[Dict[str, List[Any]]]:
    """Entity rows as plain columns when they are a list of dicts or a dict of lists of one
    Python scalar type each (the common case: no Arrow on the way); None otherwise."""
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        names = list(data[0].keys())
        return {name: [row.get(name) for row in data] for name in names}
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        return dict(data)
    return None


def column_from_python(values: List[Any]) -> Optional[types_pb2.Column]:
    """A ``Column`` of Python scalars of one type (None = null); None when they are not."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    for kind, field_name in _PY_KINDS:
        if all(type(v) is kind for v in present):
            placeholder = kind()
            column = types_pb2.Column()
            getattr(column, field_name).values.extend(
                placeholder if v is None else v for v in values)
            if len(present) < len(values):
                column.nulls.extend(v is None for v in values)
            return column
    return None


def column_to_python(column: types_pb2.Column) -> List[Any]:
    """A ``Column`` as Python values (None for nulls), as ``column_to_arrow(...).to_pylist()``
    gives them, without building Arrow arrays for the scalar types."""
    which = column.WhichOneof("values")
    if which in (None, "list_values", "timestamp_values"):
        return column_to_arrow(column).to_pylist()
    values = list(getattr(column, which).values)
    if column.nulls:
        return [None if null else value for value, null in zip(values, column.nulls)]
    return values


def named_columns(table: pa.Table) -> List[types_pb2.NamedColumn]:
    return [types_pb2.NamedColumn(name=name, column=column_from_arrow(table.column(name)))
            for name in table.column_names]


def column_to_arrow(column: types_pb2.Column) -> pa.Array:
    """A ``Column`` as an Arrow array of its natural type (timestamps UTC micros)."""
    which = column.WhichOneof("values")
    nulls: Optional[List[bool]] = list(column.nulls) or None
    if which == "list_values":
        inner = column_to_arrow(column.list_values.values)
        offsets = pa.array(list(column.list_values.offsets), pa.int32())
        mask = pa.array(nulls, pa.bool_()) if nulls else None
        return pa.ListArray.from_arrays(offsets, inner, mask=mask)
    kinds = {
        "bool_values": pa.bool_(), "int32_values": pa.int32(), "int64_values": pa.int64(),
        "float_values": pa.float32(), "double_values": pa.float64(),
        "string_values": pa.string(), "bytes_values": pa.binary(),
    }
    if which == "timestamp_values":
        values: Iterable[Any] = column.timestamp_values.micros
        kind = TIMESTAMP
    elif which in kinds:
        values = getattr(column, which).values
        kind = kinds[which]
    else:  # an empty column (no values at all)
        return pa.array([None] * len(nulls or []), pa.null())
    items = list(values)
    if nulls:
        items = [None if null else value for value, null in zip(items, nulls)]
    if kind == TIMESTAMP:
        return pa.array(items, pa.int64()).cast(TIMESTAMP)
    return pa.array(items, kind)


def columns_to_dict(table: pa.Table) -> Dict[str, List[Any]]:
    return {name: table.column(name).to_pylist() for name in table.column_names}


class Frames:
    """``to_pandas``/``to_df``/``to_polars`` for anything with a ``to_arrow``."""

    def to_arrow(self) -> pa.Table:
        raise NotImplementedError

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def to_df(self) -> Any:
        """Feast's name for :meth:`to_pandas`."""
        return self.to_pandas()

    def to_polars(self) -> Any:
        import polars as pl  # optional extra: quiver-client[polars]

        return pl.from_arrow(self.to_arrow())
