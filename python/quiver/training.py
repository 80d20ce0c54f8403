"""Training sets over Arrow Flight: the label table goes up by DoPut, the point-in-time join
is planned by GetFlightInfo and streamed back by DoGet as record batches."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

from quiver import _base, _columns
from quiver.errors import from_flight_error
from quiver.v1 import offline_pb2, types_pb2

# Record batches per DoPut write when a label file is streamed from disk.
UPLOAD_BATCH_ROWS = 65_536


def export_request(service: Optional[str], features: Optional[list], **fields: Any) -> bytes:
    """A serialized ``quiver.v1.ExportRequest``: the Flight command."""
    if (service is None) == (features is None):
        raise ValueError("give exactly one of service= and features=")
    request = offline_pb2.ExportRequest(**{k: v for k, v in fields.items() if v is not None})
    if service is not None:
        request.feature_service = service
    else:
        request.features.CopyFrom(types_pb2.FeatureRefs(refs=list(features or [])))
    return request.SerializeToString()


def upload_labels(client: flight.FlightClient, options: flight.FlightCallOptions,
                  entity_df: Any) -> str:
    """Sends the label table (a frame, an Arrow table or a local Parquet path, streamed batch
    by batch) as an upload and returns its name."""
    name = f"py-{uuid.uuid4().hex}"
    descriptor = flight.FlightDescriptor.for_path("labels", name)
    if isinstance(entity_df, (str, Path)):
        source = pq.ParquetFile(str(entity_df))
        batches: Iterator[pa.RecordBatch] = source.iter_batches(batch_size=UPLOAD_BATCH_ROWS)
        schema = source.schema_arrow
    else:
        table = _columns.to_table(entity_df, "entity_df")
        batches = iter(table.to_batches(max_chunksize=UPLOAD_BATCH_ROWS))
        schema = table.schema
    try:
        writer, _ = client.do_put(descriptor, schema, options)
        with writer:
            for batch in batches:
                writer.write_batch(batch)
    except flight.FlightError as e:
        raise from_flight_error(e) from None
    except pa.ArrowException as e:
        raise from_flight_error(e) from None
    return name


class TrainingJob(_columns.Frames):
    """A planned training set. Nothing is read until ``to_arrow``/``to_pandas``/
    ``to_polars``/``to_parquet``/``batches``; each of them runs the join once more (the
    server's tickets are single-use), except the first, which uses the planned one."""

    def __init__(self, client: flight.FlightClient, options: flight.FlightCallOptions,
                 command: bytes):
        self._client = client
        self._options = options
        self._command = command
        try:
            self._info = client.get_flight_info(flight.FlightDescriptor.for_command(command),
                                                options)
        except (flight.FlightError, pa.ArrowException) as e:
            raise from_flight_error(e) from None
        self._ticket: Optional[flight.Ticket] = self._info.endpoints[0].ticket
        raw = self._info.app_metadata or b"{}"
        self.metadata: Dict[str, str] = json.loads(raw)

    @property
    def schema(self) -> pa.Schema:
        return self._info.schema

    @property
    def feature_service(self) -> Optional[str]:
        return self.metadata.get("quiver.feature_service")

    @property
    def version(self) -> Optional[int]:
        version = self.metadata.get("quiver.feature_service_version")
        return int(version) if version else None

    @property
    def fingerprint(self) -> Optional[str]:
        return self.metadata.get("quiver.fingerprint")

    def _reader(self) -> flight.FlightStreamReader:
        ticket, self._ticket = self._ticket, None
        if ticket is None:
            ticket = flight.Ticket(self._command)
        try:
            return self._client.do_get(ticket, self._options)
        except (flight.FlightError, pa.ArrowException) as e:
            raise from_flight_error(e) from None

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows as record batches, streamed (one label row each, in label order)."""
        reader = self._reader()
        try:
            for chunk in reader:
                yield chunk.data
        except (flight.FlightError, pa.ArrowException) as e:
            raise from_flight_error(e) from None

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)

    def to_parquet(self, path: Any) -> int:
        """Writes the rows to a Parquet file batch by batch (bounded memory, the export's
        metadata in the file's key-value metadata); returns the row count."""
        schema = self.schema.with_metadata({**(self.schema.metadata or {}),
                                            **{k.encode(): v.encode()
                                               for k, v in self.metadata.items()}})
        rows = 0
        with pq.ParquetWriter(str(path), schema) as writer:
            for batch in self.batches():
                writer.write_batch(batch.replace_schema_metadata(schema.metadata))
                rows += batch.num_rows
        return rows

    def __repr__(self) -> str:
        return f"TrainingJob({self.feature_service or 'features'}, columns={self.schema.names})"


class FlightConnection:
    """The Arrow Flight side of a client (sync or asyncio): one connection, made on first use
    under a lock, so one client serves many threads."""

    def __init__(self, settings: "_base.Settings") -> None:
        self._settings = settings
        self._client: Optional[flight.FlightClient] = None
        self._lock = threading.Lock()

    def _connect(self) -> flight.FlightClient:
        with self._lock:
            if self._client is None:
                s = self._settings
                kwargs = {"tls_root_certs": s.root_certificates} if s.root_certificates else {}
                self._client = flight.FlightClient(s.flight_location, **kwargs)
            return self._client

    def _options(self) -> flight.FlightCallOptions:
        headers = [(k.encode(), v.encode()) for k, v in self._settings.metadata]
        return flight.FlightCallOptions(headers=headers, timeout=self._settings.timeout)

    def historical(self, entity_df: Any, service: Optional[str], features: Optional[list],
                   **fields: Any) -> TrainingJob:
        """Uploads the labels (if any), plans the export and returns the job to read."""
        client, options = self._connect(), self._options()
        upload = upload_labels(client, options, entity_df) if entity_df is not None else None
        command = export_request(service, features, labels_upload=upload, **fields)
        return TrainingJob(client, options, command)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
