"""What the sync and asyncio clients share: connection settings, request builders and
response converters. The clients only differ in how they send."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import json

import grpc
import pyarrow as pa
from google.protobuf import json_format

from quiver import _columns
from quiver.v1 import jobs_pb2, offline_pb2, online_pb2, registry_pb2, types_pb2

DEFAULT_SERVER = "http://127.0.0.1:50051"
Time = Union[dt.datetime, str, int]

KINDS: Dict[str, "registry_pb2.ObjectKind"] = {
    "entity": registry_pb2.OBJECT_KIND_ENTITY,
    "source": registry_pb2.OBJECT_KIND_SOURCE,
    "feature_view": registry_pb2.OBJECT_KIND_FEATURE_VIEW,
    "feature_service": registry_pb2.OBJECT_KIND_FEATURE_SERVICE,
}
KIND_NAMES = {number: name for name, number in KINDS.items()}
PUSH_MODES = {
    "online": online_pb2.PUSH_MODE_ONLINE,
    "offline": online_pb2.PUSH_MODE_OFFLINE,
    "online_and_offline": online_pb2.PUSH_MODE_ONLINE_AND_OFFLINE,
}
# Codes after which an idempotent read is tried again (the server did not act on it).
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


@dataclass(frozen=True)
class Settings:
    """Where the server is and how to reach it: see :class:`quiver.Client`."""

    target: str
    tls: bool
    token: Optional[str]
    root_certificates: Optional[bytes]
    timeout: Optional[float]
    retries: int

    @staticmethod
    def resolve(url: Optional[str], token: Optional[str], tls_ca: Optional[str],
                timeout: Optional[float], retries: int) -> "Settings":
        url = url or os.environ.get("QUIVER_SERVER") or DEFAULT_SERVER
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https", "grpc", "grpc+tcp", "grpc+tls"):
            raise ValueError(f"server URL {url!r}: use http://HOST:PORT or https://HOST:PORT")
        if not parsed.hostname or not parsed.port:
            raise ValueError(f"server URL {url!r} needs a host and a port")
        tls_ca = tls_ca or os.environ.get("QUIVER_TLS_CA")
        certificates = Path(tls_ca).read_bytes() if tls_ca else None
        host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        return Settings(
            target=f"{host}:{parsed.port}",
            tls=parsed.scheme in ("https", "grpc+tls") or certificates is not None,
            token=token if token is not None else os.environ.get("QUIVER_TOKEN") or None,
            root_certificates=certificates,
            timeout=timeout,
            retries=max(0, retries),
        )

    @property
    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    @property
    def flight_location(self) -> str:
        return f"grpc+{'tls' if self.tls else 'tcp'}://{self.target}"

    @property
    def channel_options(self) -> List[Tuple[str, Any]]:
        return [("grpc.max_receive_message_length", 256 << 20),
                ("grpc.max_send_message_length", 256 << 20)]


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def from_micros(micros: int) -> dt.datetime:
    """Microseconds since the epoch as a UTC datetime."""
    return EPOCH + dt.timedelta(microseconds=micros)


def micros(value: Time, what: str) -> int:
    """A time as microseconds since the epoch: a datetime (naive = UTC), an RFC 3339 string
    or an int of microseconds."""
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected a datetime, an RFC 3339 string or micros")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        delta = value - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    raise TypeError(f"{what}: expected a datetime, an RFC 3339 string or micros, "
                    f"not {type(value).__name__}")


def request_metadata(request_id: Optional[str]) -> Tuple[Tuple[str, str], ...]:
    """The extra call metadata of a read: ``x-request-id`` when given (the id the server logs
    the served rows under, for training sets built from the served-row log)."""
    if request_id is None:
        return ()
    if not request_id or len(request_id) > 128 or not all(33 <= ord(c) <= 126 for c in request_id):
        raise ValueError("request_id: 1 to 128 printable ASCII characters without spaces")
    return (("x-request-id", request_id),)


def served_log_join(join_on: Optional[str], request_id_column: Optional[str],
                    max_age: Any) -> Optional[offline_pb2.ServedLogJoin]:
    """``from_served_log=`` of a training set: ``"request_id"`` or ``"keys"``."""
    if join_on is None:
        if request_id_column is not None or max_age is not None:
            raise ValueError("request_id_column= and max_age= go with from_served_log=")
        return None
    if join_on not in ("request_id", "keys"):
        raise ValueError("from_served_log= is 'request_id' or 'keys'")
    if isinstance(max_age, dt.timedelta):
        max_age = max_age // dt.timedelta(microseconds=1)
    elif max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int)):
        raise TypeError("max_age: a datetime.timedelta or an int of microseconds")
    return offline_pb2.ServedLogJoin(join_on=join_on, request_id_column=request_id_column or "",
                                     max_age_micros=max_age or 0)


def online_request(features: Any, service: Optional[str], entities: Any,
                   full_names: bool, expected_fingerprint: Optional[str]):
    """The request and the entity keys it was built from. As in Feast, ``features`` may
    also be a feature service (from ``get_feature_service``)."""
    if isinstance(features, RegistryObject) and features.kind == "feature_service":
        features, service = None, service or f"{features.name}@{features.version}"
    if (features is None) == (service is None):
        raise ValueError("give exactly one of features=[...] and service='name[@N]'")
    if isinstance(features, str):
        raise TypeError("features= is a list of 'view:feature' references")
    entity_columns = _entity_columns(entities)
    request = online_pb2.GetOnlineFeaturesRequest(
        entities=entity_columns[1], full_names=full_names,
        expected_fingerprint=expected_fingerprint or "")
    if service is not None:
        request.feature_service = service
    else:
        request.features.CopyFrom(types_pb2.FeatureRefs(refs=list(features or [])))
    return request, entity_columns[0]


def _entity_columns(entities: Any) -> Tuple[Any, List[types_pb2.NamedColumn]]:
    """(the keys as given, as Python lists or an Arrow table; the wire columns). Lists of
    plain Python keys skip Arrow, which costs more than the rest of a small read."""
    plain = _columns.python_columns(entities)
    if plain is not None:
        wire = {name: _columns.column_from_python(values) for name, values in plain.items()}
        if all(column is not None for column in wire.values()):
            return plain, [types_pb2.NamedColumn(name=name, column=column)
                           for name, column in wire.items()]
    table = _columns.to_table(entities, "entity_rows")
    return table, _columns.named_columns(table)


_SCALARS = {
    "int64": pa.int64(), "int32": pa.int32(), "float32": pa.float32(),
    "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string(), "bytes": pa.binary(),
    "timestamp": _columns.TIMESTAMP,
}


def arrow_type(name: str) -> Optional[pa.DataType]:
    """The Arrow type of a manifest type name (``int64``, ``list<float32>``, ...)."""
    if name.startswith("list<") and name.endswith(">"):
        inner = _SCALARS.get(name[5:-1])
        return pa.list_(inner) if inner is not None else None
    return _SCALARS.get(name)


def push_schema(views: List[RegistryObject]) -> Dict[str, pa.DataType]:
    """The column types a push to these views takes: join keys, event time, features."""
    schema: Dict[str, pa.DataType] = {}
    for view in views:
        spec = view.spec
        for field in [*spec.get("join_keys", []), *spec.get("features", [])]:
            kind = arrow_type(field.get("type", ""))
            if kind is not None:
                schema[field["name"]] = kind
        source = spec.get("source", {})
        for column in (source.get("event_time"), source.get("created_time")):
            if column:
                schema[column] = _columns.TIMESTAMP
    return schema


def conform(table: pa.Table, schema: Dict[str, pa.DataType]) -> pa.Table:
    """``table`` with its columns cast to the declared types (pandas' float64 for a float32
    feature, list<double> for list<float32>, an all-null column, ...); a value the cast would
    change (an int out of int32 range) raises."""
    for index, name in enumerate(table.column_names):
        want = schema.get(name)
        if want is not None and table.schema.field(name).type != want:
            try:
                column = table.column(name).cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise TypeError(f"column {name!r} cannot be sent as {want}: {e}") from None
            table = table.set_column(index, pa.field(name, want), column)
    return table


def push_target(name: str, view: Optional[RegistryObject],
                views: List[RegistryObject]) -> Tuple[str, Dict[str, pa.DataType]]:
    """How a push to ``name`` is addressed and typed: to the view itself when ``view`` is
    it, else to the source ``name``, typed by the views among ``views`` that read it."""
    if view is not None:
        return "feature_view", push_schema([view])
    return "source", push_schema([v for v in views if v.spec.get("source_name") == name])


def push_request(target_kind: str, name: str, df: Any, to: Any,
                 schema: Dict[str, pa.DataType]) -> online_pb2.PushRequest:
    # Feast passes an enum (PushMode.ONLINE): its name works here too.
    to = getattr(to, "name", to)
    to = to.lower() if isinstance(to, str) else to
    if to not in PUSH_MODES:
        raise ValueError(f"to={to!r}: use one of {sorted(PUSH_MODES)}")
    table = conform(_columns.to_table(df, "df"), schema)
    request = online_pb2.PushRequest(columns=_columns.named_columns(table), mode=PUSH_MODES[to])
    setattr(request, target_kind, name)
    return request


def manifests(path: Union[str, Path]) -> List[registry_pb2.ManifestFile]:
    """The *.yaml/*.yml files at ``path`` (a file or a directory, recursively), sorted, as the
    server reads them (absolute paths: relative Parquet paths resolve against them)."""
    root = Path(path).absolute()
    files = (sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
             if root.is_dir() else [root])
    if not files:
        raise ValueError(f"no *.yaml or *.yml manifest files under {root}")
    return [registry_pb2.ManifestFile(path=str(p), content=p.read_text()) for p in files]


def to_dict(message: Any) -> Dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@dataclass(frozen=True)
class RegistryObject:
    """One version of an entity, source, feature view or feature service."""

    kind: str
    name: str
    version: int
    latest_version: int
    fingerprint: str
    registry_version: int
    created_at: dt.datetime
    spec: Dict[str, Any]
    description: str = ""
    owner: str = ""
    tags: Dict[str, str] = field(default_factory=dict)
    applied_by: str = ""

    @staticmethod
    def from_proto(obj: registry_pb2.RegistryObject) -> "RegistryObject":
        return RegistryObject(
            kind=KIND_NAMES.get(obj.kind, "unknown"), name=obj.name, version=obj.version,
            latest_version=obj.latest_version, fingerprint=obj.fingerprint,
            registry_version=obj.registry_version,
            created_at=from_micros(obj.created_at_micros),
            spec=json.loads(obj.spec_json) if obj.spec_json else {},
            description=obj.description, owner=obj.owner, tags=dict(obj.tags),
            applied_by=obj.applied_by)


def kind_number(kind: str) -> "registry_pb2.ObjectKind":
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {sorted(KINDS)}")
    return KINDS[kind]


def materialize_args(start: Optional[Time], end: Optional[Time], views: Optional[Sequence[str]],
                     feast: Dict[str, Any]) -> Tuple[Optional[Time], Time, Optional[Sequence[str]]]:
    """The window and views, also under Feast's keyword names (``start_date``, ``end_date``,
    ``feature_views``)."""
    unknown = set(feast) - {"start_date", "end_date", "feature_views"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    start = start if start is not None else feast.get("start_date")
    end = end if end is not None else feast.get("end_date")
    views = views if views is not None else feast.get("feature_views")
    if end is None:
        raise TypeError("end (or Feast's end_date) is required")
    return start, end, views


def materialize_request(start: Optional[Time], end: Time, views: Optional[Sequence[str]],
                        incremental: bool) -> jobs_pb2.StartMaterializationRequest:
    if not incremental and start is None:
        raise TypeError("start (or Feast's start_date) is required; "
                        "materialize_incremental starts at each view's watermark")
    return jobs_pb2.StartMaterializationRequest(
        views=list(views or []), start_micros=micros(start, "start") if start is not None else 0,
        end_micros=micros(end, "end"), incremental=incremental)


JOB_STATES = {
    jobs_pb2.JOB_STATE_RUNNING: "RUNNING", jobs_pb2.JOB_STATE_SUCCEEDED: "SUCCEEDED",
    jobs_pb2.JOB_STATE_FAILED: "FAILED", jobs_pb2.JOB_STATE_CANCELLED: "CANCELLED",
}


def job_summary(job: jobs_pb2.Job) -> Dict[str, Any]:
    """A job as a plain dict: ``id``, ``state``, ``rows_scanned``, ``keys_written``,
    ``views`` (per view: ``view``, ``version``, ``state``, ``rows_scanned``, ``keys_written``,
    ``profile_id`` (None until the run's profile is stored) and ``violations``, a list of
    ``{"feature", "rule", "count"}`` over the rows scanned), ``error``."""
    return {
        "id": job.id, "state": JOB_STATES.get(job.state, "UNSPECIFIED"),
        "rows_scanned": job.rows_scanned, "keys_written": job.keys_written,
        "elapsed_seconds": job.elapsed_micros / 1e6, "error": job.error,
        "views": [{"view": v.view, "version": v.version,
                   "state": JOB_STATES.get(v.state, "UNSPECIFIED"),
                   "rows_scanned": v.rows_scanned, "keys_written": v.keys_written,
                   "profile_id": v.profile_id or None,
                   "violations": [{"feature": r.feature, "rule": r.rule, "count": r.count}
                                  for r in v.violations]}
                  for v in job.views],
    }
