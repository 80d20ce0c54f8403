"""The asyncio client: the same methods as :class:`quiver.Client`, awaitable. gRPC calls use
``grpc.aio``; Arrow Flight (training sets) runs in a worker thread."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional, Sequence, Tuple

import grpc

from quiver import _base, errors
from quiver._base import RegistryObject, Settings, Time
from quiver.client import Progress, _print_progress
from quiver.online import OnlineResponse
from quiver.training import FlightConnection, TrainingJob
from quiver.v1 import (jobs_pb2, jobs_pb2_grpc, online_pb2_grpc, registry_pb2,
                       registry_pb2_grpc)


class AsyncClient:
    """See :class:`quiver.Client` for the arguments. Create it inside a running event loop;
    ``async with`` or ``await close()``."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None,
                 tls_ca: Optional[str] = None, timeout: Optional[float] = 30.0,
                 retries: int = 2) -> None:
        self._settings = Settings.resolve(url, token, tls_ca, timeout, retries)
        s = self._settings
        if s.tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=s.root_certificates)
            self._channel = grpc.aio.secure_channel(s.target, credentials, s.channel_options)
        else:
            self._channel = grpc.aio.insecure_channel(s.target, s.channel_options)
        self._online = online_pb2_grpc.OnlineServiceStub(self._channel)
        self._registry = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        # Flight is synchronous: its calls run in worker threads.
        self._flight = FlightConnection(self._settings)
        self._push_targets: Dict[str, Tuple[str, Dict[str, Any]]] = {}

    async def _call(self, method: Any, request: Any, idempotent: bool = False,
                    metadata: Tuple[Tuple[str, str], ...] = ()) -> Any:
        attempts = 1 + (self._settings.retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                return await method(request, timeout=self._settings.timeout,
                                    metadata=self._settings.metadata + metadata)
            except grpc.RpcError as e:
                if attempt + 1 < attempts and e.code() in _base.RETRYABLE:
                    await asyncio.sleep(0.1 * 2 ** attempt)
                    continue
                raise errors.from_rpc_error(e) from None
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self._channel.close()
        self._flight.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def get_online_features(self, features: Optional[Sequence[str]] = None,
                                  entity_rows: Any = None, *, service: Optional[str] = None,
                                  full_names: bool = False,
                                  expected_fingerprint: Optional[str] = None,
                                  request_id: Optional[str] = None) -> OnlineResponse:
        request, table = _base.online_request(features, service, entity_rows, full_names,
                                              expected_fingerprint)
        response = await self._call(self._online.GetOnlineFeatures, request, True,
                                    _base.request_metadata(request_id))
        return OnlineResponse(table, response)

    async def push(self, view_or_source: str, df: Any, to: Any = "online") -> Dict[str, Any]:
        if view_or_source not in self._push_targets:
            try:
                view: Optional[RegistryObject] = await self.get_feature_view(view_or_source)
            except errors.NotFound:
                view = None
            views = [view] if view else await self.list_feature_views()
            self._push_targets[view_or_source] = _base.push_target(view_or_source, view, views)
        kind, schema = self._push_targets[view_or_source]
        request = _base.push_request(kind, view_or_source, df, to, schema)
        return _base.to_dict(await self._call(self._online.Push, request))

    async def get_historical_features(self, entity_df: Any = None,
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
        """As :meth:`quiver.Client.get_historical_features`; read the returned job with
        ``await asyncio.to_thread(job.to_pandas)`` (or stream ``job.batches()``)."""
        return await asyncio.to_thread(
            self._flight.historical, entity_df, service,
            list(features) if features is not None else None,
            full_names=full_names, as_known_at=as_known_at, timestamp_column=timestamp_column,
            expected_fingerprint=expected_fingerprint,
            from_served_log=_base.served_log_join(from_served_log, request_id_column, max_age),
            start_micros=_base.micros(start, "start") if start is not None else None,
            end_micros=_base.micros(end, "end") if end is not None else None)

    async def materialize(self, start: Optional[Time] = None, end: Optional[Time] = None,
                    views: Optional[Sequence[str]] = None, progress: Progress = False,
                    **feast: Any) -> Dict[str, Any]:
        """Copies the latest row per key in ``[start, end)`` of each view's source online;
        waits for the job and returns its summary (raises ``JobFailed`` if it fails).
        ``progress``: True prints each state, a callable receives it. Feast's keyword names
        (``start_date``, ``end_date``, ``feature_views``) work too."""
        start, end, views = _base.materialize_args(start, end, views, feast)
        return await self._run_job(_base.materialize_request(start, end, views, False), progress)

    async def materialize_incremental(self, end: Optional[Time] = None,
                                views: Optional[Sequence[str]] = None,
                                progress: Progress = False, **feast: Any) -> Dict[str, Any]:
        """As ``materialize``, from each view's watermark to ``end``."""
        _, end, views = _base.materialize_args(None, end, views, feast)
        return await self._run_job(_base.materialize_request(None, end, views, True), progress)

    async def _run_job(self, request: jobs_pb2.StartMaterializationRequest,
                       progress: Progress) -> Dict[str, Any]:
        started = await self._call(self._jobs.StartMaterialization, request)
        report = _print_progress if progress is True else (progress or None)
        summary = _base.job_summary(started.job)
        try:
            async for job in self._jobs.WatchJob(jobs_pb2.WatchJobRequest(id=started.job.id),
                                                 metadata=self._settings.metadata):
                summary = _base.job_summary(job)
                if report:
                    report(summary)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None
        if summary["state"] != "SUCCEEDED":
            raise errors.JobFailed(summary)
        return summary

    async def plan(self, path: Any) -> Dict[str, Any]:
        request = registry_pb2.PlanRequest(manifests=_base.manifests(path))
        return _base.to_dict(await self._call(self._registry.Plan, request))

    async def apply(self, path: Any, force: bool = False,
                    tag: Optional[str] = None) -> Dict[str, Any]:
        request = registry_pb2.ApplyRequest(manifests=_base.manifests(path), force=force,
                                            tag=tag or "")
        return _base.to_dict(await self._call(self._registry.Apply, request))

    async def _list(self, kind: str) -> List[RegistryObject]:
        request = registry_pb2.ListObjectsRequest(kind=_base.kind_number(kind))
        response = await self._call(self._registry.ListObjects, request, True)
        return [RegistryObject.from_proto(o) for o in response.objects]

    async def _get(self, kind: str, name: str) -> RegistryObject:
        request = registry_pb2.GetObjectRequest(kind=_base.kind_number(kind), name=name)
        response = await self._call(self._registry.GetObject, request, True)
        return RegistryObject.from_proto(response.object)

    async def list_entities(self) -> List[RegistryObject]:
        return await self._list("entity")

    async def list_data_sources(self) -> List[RegistryObject]:
        return await self._list("source")

    async def list_feature_views(self) -> List[RegistryObject]:
        return await self._list("feature_view")

    async def list_feature_services(self) -> List[RegistryObject]:
        return await self._list("feature_service")

    async def get_entity(self, name: str) -> RegistryObject:
        return await self._get("entity", name)

    async def get_data_source(self, name: str) -> RegistryObject:
        return await self._get("source", name)

    async def get_feature_view(self, name: str) -> RegistryObject:
        return await self._get("feature_view", name)

    async def get_feature_service(self, name: str) -> RegistryObject:
        return await self._get("feature_service", name)

    async def list_versions(self, kind: str, name: str) -> List[RegistryObject]:
        request = registry_pb2.ListVersionsRequest(kind=_base.kind_number(kind), name=name)
        response = await self._call(self._registry.ListVersions, request, True)
        return [RegistryObject.from_proto(o) for o in response.versions]
