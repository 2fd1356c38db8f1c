"""How the `labtrain` commands reach the service: through `labtrain.Client` (the one HTTP layer
of the Python client and the command), with the options every command shares and one readable
line for every failure.

A refusal of the service, or a service that cannot be reached, ends the command with exit code
1; a local problem (a file that cannot be read, a usage error) with exit code 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from labtrain import Client, LabtrainError, SpecFileError

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The service (default: LABTRAIN_URL, else http://LABTRAIN_HOST:LABTRAIN_PORT as `labtrain up` "
        "reads them, else http://127.0.0.1:8000).",
        show_default=False,
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", help="API key, sent as a Bearer token (default: LABTRAIN_API_KEY).", show_default=False),
]

console = Console(stderr=True, highlight=False, soft_wrap=True)


class LocalError(Exception):
    """A usage or local file problem found before anything was sent."""

    exit_code = 2


@contextmanager
def service(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client of the service; a failure ends the command with one line `error: ...`."""
    try:
        with Client(url, api_key) as client:
            yield client
    except (LocalError, SpecFileError) as exc:
        raise fail(str(exc), 2) from None
    except LabtrainError as exc:
        raise fail(str(exc), 1) from None


def fail(message: str, code: int = 1) -> typer.Exit:
    """Say `error: message` on stderr; the exit to raise. The message is not markup: a service's
    `[...]` is shown as it is."""
    console.print(f"[bold red]error[/]: {escape(message)}")
    return typer.Exit(code)
