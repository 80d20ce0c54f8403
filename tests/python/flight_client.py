"""An ordinary pyarrow.flight client against Quiver: upload labels with DoPut, ask for the
point-in-time join with GetFlightInfo (the command is a serialized quiver.v1.ExportRequest),
read it with DoGet. Prints a JSON summary on its last line."""

import json
import sys

import pyarrow as pa
import pyarrow.flight as flight

T0 = 1_800_000_000_000_000


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, wire_type, payload):
    return varint((number << 3) | wire_type) + payload


def string_field(number, text):
    data = text.encode()
    return field(number, 2, varint(len(data)) + data)


def main():
    client = flight.connect(sys.argv[1])
    ts = pa.timestamp("us", tz="UTC")
    labels = pa.table({
        "user_id": pa.array([9, 0, 12345, 9], pa.int64()),
        "event_timestamp": pa.array([T0 + 10_000_000, T0, T0, T0 + 60_000_000], ts),
        "label": pa.array([1, 0, 1, 0], pa.int8()),
    })
    descriptor = flight.FlightDescriptor.for_path("labels", "py_labels")
    writer, _ = client.do_put(descriptor, labels.schema)
    writer.write_table(labels)
    writer.close()

    # ExportRequest { feature_service = "model" (1), labels_upload = "py_labels" (4) }
    command = string_field(1, "model") + string_field(4, "py_labels")
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.column("label").to_pylist() == [1, 0, 1, 0], table
    assert table.schema.field("event_timestamp").type == ts

    # An empty label table (its schema, no record batch) exports 0 rows with the full schema.
    empty = flight.FlightDescriptor.for_path("labels", "py_empty")
    writer, _ = client.do_put(empty, labels.schema)
    writer.close()
    command = string_field(1, "model") + string_field(4, "py_empty")
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    empty_table = client.do_get(info.endpoints[0].ticket).read_all()
    assert empty_table.column_names == table.column_names, empty_table.schema
    print(json.dumps({"rows": table.num_rows, "a": table.column("a").to_pylist(),
                      "columns": table.column_names, "empty_rows": empty_table.num_rows}))


if __name__ == "__main__":
    main()
