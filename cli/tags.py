"""`labtrain tag`: add or remove tags, set or clear notes, of an experiment or a sweep (PATCH).
Exit codes as for every command: 0 ok, 1 the service refused (or could not be reached), 2 a
usage error."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli.client import ApiKeyOption, UrlOption, console, service
from labtrain import Experiment, Sweep


def _split(values: list[str] | None) -> list[str]:
    """`--add a,b --add c` → [a, b, c]: a tag has no comma (the service refuses one)."""
    return [t.strip() for v in values or [] for t in v.split(",") if t.strip()]


def tag(
    resource_id: Annotated[str, typer.Argument(metavar="ID", help="The experiment (or sweep, with --sweep).")],
    add: Annotated[
        list[str] | None, typer.Option("--add", help="Tags to add (repeat it, or a comma list: a,b).")
    ] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Tags to remove (as --add).")] = None,
    notes: Annotated[str | None, typer.Option("--notes", help="New notes ('' removes them).")] = None,
    sweep: Annotated[bool, typer.Option("--sweep", help="ID is a sweep (its members are found by its tags).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The service's JSON answer, for scripts.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Tag an experiment or a sweep, or change its notes; with no option, print its tags and notes."""
    added, removed = _split(add), _split(remove)
    with service(url, api_key) as client:
        resource: Experiment | Sweep = client.sweep(resource_id) if sweep else client.experiment(resource_id)
        if added or removed or notes is not None:
            # Read, then replace: the service stores the whole list (a tag added by someone else
            # between the two requests is kept only if it was already read).
            tags = [t for t in dict.fromkeys([*resource.tags, *added]) if t not in set(removed)]
            changes: dict[str, Any] = {"tags": tags} if added or removed else {}
            if notes is not None:
                changes["notes"] = notes or None
            resource.update(**changes)
    if as_json:
        typer.echo(json.dumps(resource.data, indent=2))
        return
    what = "sweep" if sweep else "experiment"
    typer.echo(",".join(resource.tags))
    console.print(f"{what} {resource.id}: tags {escape(', '.join(resource.tags)) or '(none)'}")
    if resource.notes:
        console.print(f"notes: {escape(resource.notes)}")


COMMANDS = [tag]
