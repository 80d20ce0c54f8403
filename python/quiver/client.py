"""The synchronous client."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import grpc
from quiver import _base, errors
from quiver._base import RegistryObject, Settings, Time
from quiver.online import OnlineResponse
from quiver.training import FlightConnection, TrainingJob
from quiver.v1 import (jobs_pb2, jobs_pb2_grpc, online_pb2_grpc, registry_pb2,
                       registry_pb2_grpc)

Progress = Union[bool, Callable[[Dict[str, Any]], None]]


def _print_progress(job: Dict[str, Any]) -> None:
    print(f"materialize {job['id']}: {job['state']} rows_scanned={job['rows_scanned']} "
          f"keys_written={job['keys_written']}", file=sys.stderr)


class Client:
    """A Quiver server over gRPC (online, registry, jobs) and Arrow Flight (training sets).

    ``url`` defaults to ``$QUIVER_SERVER`` (else ``http://127.0.0.1:50051``; ``https://``
    for TLS), ``token`` to ``$QUIVER_TOKEN``, ``tls_ca`` (a PEM file) to ``$QUIVER_TLS_CA``.
    ``timeout`` bounds each call in seconds (None: no bound); idempotent reads are tried
    ``retries`` more times when the server is unavailable. Thread safe; use it as a context
    manager or call ``close()``.
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None,
                 tls_ca: Optional[str] = None, timeout: Optional[float] = 30.0,
                 retries: int = 2) -> None:
        self._settings = Settings.resolve(url, token, tls_ca, timeout, retries)
        s = self._settings
        if s.tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=s.root_certificates)
            self._channel = grpc.secure_channel(s.target, credentials, s.channel_options)
        else:
            self._channel = grpc.insecure_channel(s.target, s.channel_options)
        self._online = online_pb2_grpc.OnlineServiceStub(self._channel)
        self._registry = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._flight = FlightConnection(self._settings)
        self._push_targets: Dict[str, Tuple[str, Dict[str, Any]]] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, method: Any, request: Any, idempotent: bool = False,
              metadata: Tuple[Tuple[str, str], ...] = ()) -> Any:
        attempts = 1 + (self._settings.retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                return method(request, timeout=self._settings.timeout,
                              metadata=self._settings.metadata + metadata)
            except grpc.RpcError as e:
                if attempt + 1 < attempts and e.code() in _base.RETRYABLE:
                    time.sleep(0.1 * 2 ** attempt)
                    continue
                raise errors.from_rpc_error(e) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._channel.close()
        self._flight.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- online ----------------------------------------------------------------------------

    def get_online_features(self, features: Optional[Sequence[str]] = None,
                            entity_rows: Any = None, *, service: Optional[str] = None,
                            full_names: bool = False,
                            expected_fingerprint: Optional[str] = None,
                            request_id: Optional[str] = None) -> OnlineResponse:
        """Latest values for ``entity_rows`` (a list of dicts, a dict of columns or a
        DataFrame/Table of join keys) of ``features=["view:feature", ...]`` or
        ``service="name[@N]"``. ``request_id``: the id the served rows are logged under
        (sent as ``x-request-id``), for training sets ``from_served_log="request_id"``."""
        request, table = _base.online_request(features, service, entity_rows, full_names,
                                              expected_fingerprint)
        metadata = _base.request_metadata(request_id)
        return OnlineResponse(table, self._call(self._online.GetOnlineFeatures, request, True,
                                                metadata))

    def push(self, view_or_source: str, df: Any, to: Any = "online") -> Dict[str, Any]:
        """Writes rows to a feature view or to every view of a source: ``to`` is
        ``online``, ``offline`` or ``online_and_offline``. Columns are cast to the declared
        types first (pandas' float64 for a float32 feature). Returns the per-view counts."""
        kind, schema = self._push_target(view_or_source)
        request = _base.push_request(kind, view_or_source, df, to, schema)
        return _base.to_dict(self._call(self._online.Push, request))

    def _push_target(self, name: str) -> Tuple[str, Dict[str, Any]]:
        """Whether ``name`` is a view or a source, and the types of its columns (cached)."""
        if name not in self._push_targets:
            try:
                view: Optional[RegistryObject] = self.get_feature_view(name)
            except errors.NotFound:
                view = None
            views = [view] if view else self.list_feature_views()
            self._push_targets[name] = _base.push_target(name, view, views)
        return self._push_targets[name]

    # -- training --------------------------------------------------------------------------

    def get_historical_features(self, entity_df: Any = None,
                                features: Optional[Sequence[str]] = None, *,
                                service: Optional[str] = None, full_names: bool = False,
                                as_known_at: bool = False,
                                timestamp_column: Optional[str] = None,
                                expected_fingerprint: Optional[str] = None,
                                start: Optional[Time] = None,
                                end: Optional[Time] = None,
                                from_served_log: Optional[str] = None,
                                request_id_column: Optional[str] = None,
                                max_age: Any = None) -> TrainingJob:
        """A point-in-time correct training set for the labels in ``entity_df`` (a DataFrame,
        an Arrow table or a local Parquet path; join keys and ``event_timestamp``), or with
        no labels every row in ``[start, end)``. Returns a job to read it from.

        ``from_served_log="request_id"`` (labels carry the ``request_id`` of the serving call,
        or ``request_id_column``) or ``"keys"`` (the latest row served for the keys at or
        before the label time, no older than ``max_age``, a timedelta) builds it from what
        ``service`` actually served instead; ``start``/``end`` then bound the logged rows."""
        return self._flight.historical(
            entity_df, service, list(features) if features is not None else None,
            full_names=full_names, as_known_at=as_known_at, timestamp_column=timestamp_column,
            expected_fingerprint=expected_fingerprint,
            from_served_log=_base.served_log_join(from_served_log, request_id_column, max_age),
            start_micros=_base.micros(start, "start") if start is not None else None,
            end_micros=_base.micros(end, "end") if end is not None else None)

    # -- materialization -------------------------------------------------------------------

    def materialize(self, start: Optional[Time] = None, end: Optional[Time] = None,
                    views: Optional[Sequence[str]] = None, progress: Progress = False,
                    **feast: Any) -> Dict[str, Any]:
        """Copies the latest row per key in ``[start, end)`` of each view's source online;
        waits for the job and returns its summary (raises ``JobFailed`` if it fails).
        ``progress``: True prints each state, a callable receives it. Feast's keyword names
        (``start_date``, ``end_date``, ``feature_views``) work too."""
        start, end, views = _base.materialize_args(start, end, views, feast)
        return self._run_job(_base.materialize_request(start, end, views, False), progress)

    def materialize_incremental(self, end: Optional[Time] = None,
                                views: Optional[Sequence[str]] = None,
                                progress: Progress = False, **feast: Any) -> Dict[str, Any]:
        """As ``materialize``, from each view's watermark to ``end``."""
        _, end, views = _base.materialize_args(None, end, views, feast)
        return self._run_job(_base.materialize_request(None, end, views, True), progress)

    def _run_job(self, request: jobs_pb2.StartMaterializationRequest,
                 progress: Progress) -> Dict[str, Any]:
        started = self._call(self._jobs.StartMaterialization, request)
        report = _print_progress if progress is True else (progress or None)
        summary = _base.job_summary(started.job)
        try:
            for job in self._jobs.WatchJob(jobs_pb2.WatchJobRequest(id=started.job.id),
                                           metadata=self._settings.metadata):
                summary = _base.job_summary(job)
                if report:
                    report(summary)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None
        if summary["state"] != "SUCCEEDED":
            raise errors.JobFailed(summary)
        return summary

    # -- registry --------------------------------------------------------------------------

    def plan(self, path: Any) -> Dict[str, Any]:
        """The changes applying the manifests at ``path`` would make (``changes``,
        ``breaking``, ``base_version``)."""
        request = registry_pb2.PlanRequest(manifests=_base.manifests(path))
        return _base.to_dict(self._call(self._registry.Plan, request))

    def apply(self, path: Any, force: bool = False, tag: Optional[str] = None) -> Dict[str, Any]:
        """Applies the manifests at ``path`` atomically (``force`` for breaking changes);
        returns ``registry_version`` and ``changes``."""
        request = registry_pb2.ApplyRequest(manifests=_base.manifests(path), force=force,
                                            tag=tag or "")
        return _base.to_dict(self._call(self._registry.Apply, request))

    def _list(self, kind: str) -> List[RegistryObject]:
        request = registry_pb2.ListObjectsRequest(kind=_base.kind_number(kind))
        response = self._call(self._registry.ListObjects, request, True)
        return [RegistryObject.from_proto(o) for o in response.objects]

    def _get(self, kind: str, name: str) -> RegistryObject:
        request = registry_pb2.GetObjectRequest(kind=_base.kind_number(kind), name=name)
        return RegistryObject.from_proto(self._call(self._registry.GetObject, request, True).object)

    def list_entities(self) -> List[RegistryObject]:
        return self._list("entity")

    def list_data_sources(self) -> List[RegistryObject]:
        return self._list("source")

    def list_feature_views(self) -> List[RegistryObject]:
        return self._list("feature_view")

    def list_feature_services(self) -> List[RegistryObject]:
        return self._list("feature_service")

    def get_entity(self, name: str) -> RegistryObject:
        return self._get("entity", name)

    def get_data_source(self, name: str) -> RegistryObject:
        return self._get("source", name)

    def get_feature_view(self, name: str) -> RegistryObject:
        """``name`` (latest) or ``name@N``."""
        return self._get("feature_view", name)

    def get_feature_service(self, name: str) -> RegistryObject:
        return self._get("feature_service", name)

    def list_versions(self, kind: str, name: str) -> List[RegistryObject]:
        """Every version of one object; ``kind`` is entity, source, feature_view or
        feature_service."""
        request = registry_pb2.ListVersionsRequest(kind=_base.kind_number(kind), name=name)
        response = self._call(self._registry.ListVersions, request, True)
        return [RegistryObject.from_proto(o) for o in response.versions]
