"""The datasets resource: the built-ins and the owner's uploads (list, read, upload, delete).

`POST /datasets` reads its multipart body as a stream: a Content-Length above the limit is
refused before anything is read, and a body that grows past it is refused (413) as soon as it
does, so a 2 GB file is never held, in memory or on disk, to be refused afterwards.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Request, Response, status
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool

from api.deps import OwnerDep, SettingsDep, UowDep
from api.errors import DatasetInvalid, UploadTooLarge
from api.schemas import DatasetPage, DatasetRead
from api.services import datasets as service

router = APIRouter(prefix="/datasets", tags=["datasets"])

DatasetName = Annotated[
    str, Path(min_length=1, max_length=200, description="a built-in's name, or an upload's name or id")
]
ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "no such built-in or upload (`DatasetNotFound`)"}}

FIELDS = ("file", "target", "name", "format")
FIELD_MAX_BYTES = 1000  # a text field (target, name, format)
FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries, part headers and the text fields


def _invalid(field: str, message: str) -> DatasetInvalid:
    return DatasetInvalid([{"loc": ["body", field], "msg": message, "type": "value_error"}])


class _Form:
    """python-multipart callbacks collecting the fields, the file counted against its limit."""

    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.fields: dict[str, bytearray] = {}
        self.filename: str | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._current: bytearray | None = None
        self._current_name = ""

    def too_large(self) -> UploadTooLarge:
        return UploadTooLarge(
            f"the upload is larger than the limit of {self.max_file_bytes:,} bytes (LABTRAIN_MAX_UPLOAD_BYTES)"
        )

    def on_part_begin(self) -> None:
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_field).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name not in FIELDS:
            raise _invalid(name or "?", f"unknown form field {name!r}; the fields are {', '.join(FIELDS)}")
        if name in self.fields:
            raise _invalid(name, f"the form field {name!r} is given twice")
        if name == "file":
            filename = options.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename is not None else None
        self._current_name = name
        self._current = self.fields[name] = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._current is not None
        self._current += data[start:end]
        if self._current_name == "file":
            if len(self._current) > self.max_file_bytes:
                raise self.too_large()
        elif len(self._current) > FIELD_MAX_BYTES:
            name = self._current_name
            raise _invalid(name, f"the field {name!r} is longer than {FIELD_MAX_BYTES} bytes")

    def callbacks(self) -> dict[str, Any]:
        names = ("on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
                 "on_part_data")  # fmt: skip
        return {name: getattr(self, name) for name in names}

    def text(self, name: str) -> str | None:
        value = self.fields.get(name)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid(name, f"the field {name!r} is not UTF-8 text") from None


async def read_upload(request: Request, max_file_bytes: int) -> service.UploadForm:
    """The multipart form of an upload, read as it arrives and refused (413) once too large."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise _invalid("file", "send the dataset as multipart/form-data, e.g. curl -F file=@data.csv -F target=label")
    form = _Form(max_file_bytes)
    max_body = max_file_bytes + FORM_OVERHEAD_BYTES
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        raise form.too_large()  # refused before a byte of the body is read
    received = 0
    try:
        parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                raise form.too_large()
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise _invalid("file", f"the body is not valid multipart/form-data: {exc}") from None
    if parser.state != MultipartState.END:
        raise _invalid("file", "the multipart body ended before its closing boundary")
    if "file" not in form.fields:
        raise DatasetInvalid([{"loc": ["body", "file"], "msg": "the form has no `file` field", "type": "missing"}])
    return service.UploadForm(
        data=bytes(form.fields["file"]),
        filename=form.filename,
        target=form.text("target"),
        name=form.text("name"),
        format=form.text("format"),
    )


async def _upload_form(request: Request, settings: SettingsDep) -> service.UploadForm:
    return await read_upload(request, settings.max_upload_bytes)


def _parse_limiter(app: Any, slots: int) -> anyio.CapacityLimiter:
    """The API process's one limiter of upload parses, made on first use (in the event loop:
    nothing runs between the check and the assignment)."""
    limiter = getattr(app.state, "upload_parse_limiter", None)
    if limiter is None:
        limiter = app.state.upload_parse_limiter = anyio.CapacityLimiter(slots)
    return limiter


async def _parsed_upload(
    request: Request, settings: SettingsDep, form: Annotated[service.UploadForm, Depends(_upload_form)]
) -> service.ParsedUpload:
    # Parsing is CPU work: in a worker thread (never the event loop), at most
    # LABTRAIN_UPLOAD_PARSE_CONCURRENCY at once, and before the database session is taken.
    limiter = _parse_limiter(request.app, settings.upload_parse_concurrency)
    limits = service.upload_limits(settings)
    return await anyio.to_thread.run_sync(service.parse_upload, form, limits, limiter=limiter)


# Resolved after the key check and before the database session (dependencies resolve in the
# order of the handler's parameters): a slow upload, or its parse, never holds one of the API's
# session slots, so uploads cannot stall reads.
ParsedUploadDep = Annotated[service.ParsedUpload, Depends(_parsed_upload)]


@router.get("")
def list_datasets(uow: UowDep, owner: OwnerDep) -> DatasetPage:
    """The built-in datasets and your uploads, each with its schema."""
    return DatasetPage(items=service.list_datasets(uow.session, owner))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "you already have a dataset of this name, or it is a built-in's (`DatasetNameTaken`)"},
        413: {
            "description": "the file is above LABTRAIN_MAX_UPLOAD_BYTES, or its columns, cells or inflated arrays "
            "above LABTRAIN_MAX_UPLOAD_COLUMNS, _CELLS, _INFLATED_BYTES (`UploadTooLarge`, `limit` names it)"
        },
        422: {"description": "the form or the file was refused; `errors` names the field, column or array"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary", "description": "a CSV or an NPZ"},
                            "target": {"type": "string", "description": "CSV: the column to predict"},
                            "name": {"type": "string", "description": "default: the file's name"},
                            "format": {
                                "type": "string",
                                "enum": list(service.FORMATS),
                                "description": "default: from the file's name or content",
                            },
                        },
                    }
                }
            },
        }
    },
)
async def upload_dataset(owner: OwnerDep, upload: ParsedUploadDep, uow: UowDep, response: Response) -> DatasetRead:
    """Upload a CSV (numeric features and a `target` column) or an NPZ (arrays `x` and `y`)."""
    row = await run_in_threadpool(service.create_dataset, uow, owner=owner, upload=upload)
    response.headers["Location"] = f"/datasets/{row.id}"
    return service.upload_read(row)


@router.get("/{name}", responses=ERRORS)
def read_dataset(uow: UowDep, owner: OwnerDep, name: DatasetName) -> DatasetRead:
    """A built-in by name, or one of your uploads by name or id."""
    return service.read_dataset(uow.session, owner, name)


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **ERRORS,
        409: {"description": "a queued or running experiment trains on it (`DatasetInUse`), or it is a built-in"},
    },
)
def delete_dataset(uow: UowDep, owner: OwnerDep, name: DatasetName) -> Response:
    """Delete one of your uploads (by name or id); finished experiments keep their models."""
    service.delete_dataset(uow, owner, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
