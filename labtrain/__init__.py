"""The labtrain client: submit experiments and sweeps to a labtrain service, follow them, read
their metrics and tables as DataFrames, predict, evaluate and download their models.

    from labtrain import Client

    client = Client()  # LABTRAIN_URL, else LABTRAIN_HOST/LABTRAIN_PORT (127.0.0.1:8000); LABTRAIN_API_KEY
    run = client.submit("examples/model22.yaml").wait()
    print(run.status, run.metrics().tail())

Only httpx is needed at import time; pandas (DataFrames) and PyYAML (YAML specs) are imported
when a method needs them.
"""

from labtrain._frames import flatten_prediction
from labtrain._http import Event, default_url
from labtrain.client import Client
from labtrain.errors import (
    APIError,
    BadRequest,
    Conflict,
    LabtrainError,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnreachable,
    SpecFileError,
    StreamLost,
    TooLarge,
    Unauthorized,
    Unavailable,
    ValidationError,
    WaitTimeout,
)
from labtrain.resources import TERMINAL, Dataset, Experiment, Sweep

__version__ = "0.1.0"

__all__ = [
    "TERMINAL",
    "APIError",
    "BadRequest",
    "Client",
    "Conflict",
    "Dataset",
    "Event",
    "Experiment",
    "LabtrainError",
    "NotFound",
    "RateLimited",
    "ServerError",
    "ServiceUnreachable",
    "SpecFileError",
    "StreamLost",
    "Sweep",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "ValidationError",
    "WaitTimeout",
    "__version__",
    "default_url",
    "flatten_prediction",
]
