"""The answer of ``get_online_features``: values, a status per value, the event time each
view served, and the exact service version that answered."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional, Union

import pyarrow as pa

from quiver import _base, _columns
from quiver.v1 import online_pb2

STATUS_NAMES = {
    online_pb2.FEATURE_STATUS_PRESENT: "PRESENT",
    online_pb2.FEATURE_STATUS_NULL_VALUE: "NULL_VALUE",
    online_pb2.FEATURE_STATUS_NOT_FOUND: "NOT_FOUND",
    online_pb2.FEATURE_STATUS_OUTSIDE_MAX_AGE: "OUTSIDE_MAX_AGE",
}


class OnlineResponse(_columns.Frames):
    """Feature values for the requested entity rows, in request order.

    ``to_dict()`` has Feast's shape (column name -> list), the join keys first; a value whose
    status is not ``PRESENT`` is ``None``. ``statuses`` gives each feature's status per row
    (``PRESENT``, ``NULL_VALUE``, ``NOT_FOUND``, ``OUTSIDE_MAX_AGE``) and
    ``event_timestamps`` each view's served event time per row (``None`` when no row).
    """

    def __init__(self, entities: Union[pa.Table, Dict[str, List[Any]]],
                 response: online_pb2.GetOnlineFeaturesResponse):
        self._entities = entities
        self._response = response
        self.feature_service: Optional[str] = response.feature_service or None
        self.feature_service_version: Optional[int] = (
            response.feature_service_version if response.feature_service else None)
        self.fingerprint: Optional[str] = response.fingerprint or None
        self.served_at: dt.datetime = _base.from_micros(response.served_at_micros)
        self.views: Dict[str, Dict[str, Any]] = {
            view.name: {"version": view.version, "fingerprint": view.fingerprint}
            for view in response.views
        }

    @property
    def proto(self) -> online_pb2.GetOnlineFeaturesResponse:
        """The raw response message."""
        return self._response

    @property
    def statuses(self) -> Dict[str, List[str]]:
        return {f.name: [STATUS_NAMES.get(s, "UNSPECIFIED") for s in f.statuses]
                for f in self._response.features}

    @property
    def event_timestamps(self) -> Dict[str, List[Optional[dt.datetime]]]:
        return {
            view.name: [_base.from_micros(t) if found else None
                        for t, found in zip(view.event_timestamps, view.found)]
            for view in self._response.views
        }

    def to_arrow(self) -> pa.Table:
        entities = self._entities
        columns: Dict[str, Any] = (
            {name: entities.column(name) for name in entities.column_names}
            if isinstance(entities, pa.Table) else {name: pa.array(values)
                                                    for name, values in entities.items()})
        for feature in self._response.features:
            columns[feature.name] = _columns.column_to_arrow(feature.values)
        return pa.table(columns)

    def to_dict(self) -> Dict[str, List[Any]]:
        entities = self._entities
        out: Dict[str, List[Any]] = (
            _columns.columns_to_dict(entities) if isinstance(entities, pa.Table)
            else {name: list(values) for name, values in entities.items()})
        for feature in self._response.features:
            out[feature.name] = _columns.column_to_python(feature.values)
        return out

    def __len__(self) -> int:
        entities = self._entities
        if isinstance(entities, pa.Table):
            return entities.num_rows
        return len(next(iter(entities.values()), []))

    def __repr__(self) -> str:
        service = (f"{self.feature_service}@{self.feature_service_version}"
                   if self.feature_service else "features")
        return (f"OnlineResponse({service}, rows={len(self)}, "
                f"features={[f.name for f in self._response.features]})")
