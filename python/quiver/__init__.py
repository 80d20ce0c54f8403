"""Quiver's Python client: online features over gRPC, training sets over Arrow Flight, and
the registry, pushes and materialization, in the shape Feast users know.

    import quiver
    with quiver.Client("http://127.0.0.1:50051") as client:
        rows = client.get_online_features(service="driver_model",
                                          entity_rows=[{"driver_id": 1001}]).to_dict()
"""

from quiver._base import RegistryObject
from quiver.aio import AsyncClient
from quiver.client import Client
from quiver.errors import (Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded,
                           FailedPrecondition, Internal, InvalidArgument, JobFailed, NotFound,
                           OutOfRange, PermissionDenied, QuiverError, ResourceExhausted,
                           Unauthenticated, Unavailable, Unimplemented, Unknown)
from quiver.online import OnlineResponse
from quiver.training import TrainingJob

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "Client", "OnlineResponse", "RegistryObject", "TrainingJob",
    "QuiverError", "Aborted", "AlreadyExists", "Cancelled", "DataLoss", "DeadlineExceeded",
    "FailedPrecondition", "Internal", "InvalidArgument", "JobFailed", "NotFound",
    "OutOfRange", "PermissionDenied", "ResourceExhausted", "Unauthenticated", "Unavailable",
    "Unimplemented", "Unknown",
]
