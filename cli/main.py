"""The `labtrain` command (Typer). Commands that talk to a running service use HTTP only; the
ones here start processes (`up`, `worker`) or migrate the database, and import the service's
code lazily so `labtrain --help` stays fast."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from cli import data_commands, tags
from cli.client import ApiKeyOption, UrlOption, fail, service
from cli.commands import register
from core.settings import Settings, get_settings
from labtrain import __version__


def _plain_help_types() -> None:
    """Help without `<bool>` beside every flag and `<str>` beside every option (what Typer's
    rich help writes since 0.20): a flag shows no type, a value its kind in click's words."""
    import typer.core

    words = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "bool": "BOOLEAN"}

    def display_type(self: typer.core.TyperOption | typer.core.TyperArgument, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        if self.metavar is not None and isinstance(self, typer.core.TyperOption):
            return self.metavar  # an argument's metavar is its name, already shown
        kind = str(self.display_type(ctx)).strip("<>").split(" ")[0]
        return words.get(kind, kind.upper())

    for cls in (typer.core.TyperOption, typer.core.TyperArgument):
        if hasattr(cls, "display_type_rich"):
            cls.display_type_rich = display_type  # type: ignore[method-assign]


_plain_help_types()

app = typer.Typer(
    name="labtrain",
    help="Train PyTorch models from experiment specs over REST.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"labtrain {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train PyTorch models from experiment specs over REST."""


def load_settings(fresh: bool = False) -> Settings:
    """The settings, or exit 2 naming each bad variable. `fresh` reads the environment again
    (`get_settings` keeps the first read for the processes `up` starts)."""
    try:
        return Settings() if fresh else get_settings()
    except ValidationError as exc:
        problems = "; ".join(f"LABTRAIN_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise fail(f"invalid configuration: {problems}", code=2) from exc


@app.command()
def up(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: LABTRAIN_HOST, else 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: LABTRAIN_PORT, else 8000).", min=1, max=65535)
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes to run beside the API.", min=0)] = 1,
    insecure: Annotated[
        bool, typer.Option(help="Listen beyond loopback without LABTRAIN_API_KEYS (a trusted network only).")
    ] = False,
    grace: Annotated[
        float, typer.Option(help="Seconds a busy worker gets to finish before its experiment is put back.", min=0)
    ] = 5.0,
) -> None:
    """Run the service: migrations, Redis (embedded unless LABTRAIN_REDIS_URL), the API and workers."""
    from cli.up import UpError, serve

    settings = load_settings()
    try:
        code = serve(settings, host or settings.host, port or settings.port, workers, insecure, grace)
    except UpError as exc:
        raise fail(str(exc), exc.code) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


@app.command()
def worker(
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated queues: cpu, gpu (default: gpu,cpu with CUDA, else cpu).")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Experiments trained at once by this worker.", min=1)] = 1,
) -> None:
    """Start one worker alone, for more workers here or on hosts sharing the database and Redis."""
    settings = load_settings()
    if not settings.redis_url:
        raise fail(
            "LABTRAIN_REDIS_URL is not set. A worker started alone cannot find the embedded Redis of "
            "`labtrain up`: set LABTRAIN_REDIS_URL to the broker the API uses (the URL `labtrain up` prints "
            "under 'broker', or redis://host:6379/0) and LABTRAIN_DATABASE_URL to its database.",
            code=2,
        )
    from core.db import upgrade_database
    from worker.run import worker_argv

    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    try:
        argv = worker_argv(queues=queue_list, concurrency=concurrency)
    except ValueError as exc:
        raise fail(str(exc), code=2) from exc
    upgrade_database(settings.resolved_database_url)  # a fresh database works from any first process
    os.execv(argv[0], argv)  # this process becomes the worker: signals and exit code are Celery's


@app.command()
def migrate() -> None:
    """Apply the database migrations (`labtrain up` and `labtrain worker` do it themselves)."""
    from cli.up import hide_password
    from core.db import upgrade_database

    settings = load_settings()
    upgrade_database(settings.resolved_database_url)
    console.print(f"database {hide_password(settings.resolved_database_url)} is at the latest schema")


register(app)  # submit, watch, list, show, metrics, predict, table, plot, cancel (cli/commands.py)
for command in [*data_commands.COMMANDS, *tags.COMMANDS]:  # datasets, upload, evaluate, download; tag
    app.command()(command)

study_app = typer.Typer(help="Run the lab report's studies (studies/*.yaml) against a running service.")
app.add_typer(study_app, name="study")


@study_app.command("run")
def study_run(
    file: Annotated[str, typer.Argument(help="A study file, e.g. studies/exercise1.yaml.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the results (default: studies/ under LABTRAIN_DATA_DIR; "
            "--out studies/results regenerates the committed ones).",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Submit a study, follow it, print our table beside the report's, then evaluate the chosen rows on test."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cli.study import StudyError, run_study

    path = Path(file)
    if not path.is_file():
        raise fail(f"no study file {file!r}", code=2)
    folder = out if out is not None else load_settings(fresh=True).data_dir / "studies"
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,  # a log gets one line per change instead
    )
    task = progress.add_task(path.stem, total=None)
    shown: list[str] = []

    def on_progress(sweep: dict) -> None:
        counts = sweep["counts"]
        done = sum(n for s, n in counts.items() if s not in ("queued", "running"))
        description = f"{path.stem} ({sweep['id']}) {sweep['status']}"
        progress.update(task, total=sum(counts.values()), completed=done, description=description)
        line = f"{description}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
        if not console.is_terminal and shown != [line]:
            console.print(line)
            shown[:] = [line]

    with service(url, api_key) as client:
        try:
            with progress:
                run_study(client, path, folder, on_progress)
        except StudyError as exc:
            raise fail(str(exc)) from exc
        except OSError as exc:
            raise fail(f"cannot write the results under {folder}: {exc.strerror}", code=2) from exc
    console.print(f"results: {folder / path.stem}.md, .json and .csv")
    typer.echo((folder / f"{path.stem}.md").read_text())


if __name__ == "__main__":
    app()
