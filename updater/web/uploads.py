"""Uploads stream straight into private spool files under the service home, never into memory or /tmp.

:class:`SpoolingRequest` is the app's request class: every file part of a multipart body is written to a
new ``home/imports/upload-*.part`` file as it arrives. A file the view does not claim (refused, truncated,
too large, failed CSRF or role check) is removed when the request ends.

Werkzeug answers every limit of a multipart body with the same bare 413; the parser here says which limit
was hit (the body's size, one field's size, the number of parts), so a client is told what to change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from flask import Request, request
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData, State

from updater.services.bundles import imports
from updater.web.context import web_context

SPOOLED = "corral_spooled"


def body_too_large(limit: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"the request body is larger than the upload limit of {limit} bytes")


def field_too_large(limit: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"a form field is larger than the limit of {limit} bytes for one field")


def headers_too_large(limit: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"a form part's headers are larger than the limit of {limit} bytes")


def too_many_parts(limit: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"the form has more than {limit} parts")


class _NamingDecoder(MultipartDecoder):
    """Werkzeug's decoder, whose bare 413s name the limit they enforce."""

    def receive_data(self, data: bytes | None) -> None:
        try:
            super().receive_data(data)
        except RequestEntityTooLarge:
            limit = self.max_form_memory_size or 0
            # Only a part's headers (or the preamble before them) pile up in the buffer; data is passed on.
            raise (headers_too_large if self.state in (State.PREAMBLE, State.PART) else field_too_large)(
                limit
            ) from None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except RequestEntityTooLarge:
            raise too_many_parts(self.max_parts or 0) from None


class _NamingMultiPartParser(MultiPartParser):
    """Werkzeug's ``MultiPartParser.parse`` (3.1) with :class:`_NamingDecoder` and a named field limit."""

    def parse(
        self, stream: IO[bytes], boundary: bytes, content_length: int | None
    ) -> tuple[MultiDict[str, str], MultiDict[str, FileStorage]]:
        decoder = _NamingDecoder(
            boundary, max_form_memory_size=self.max_form_memory_size, max_parts=self.max_form_parts
        )
        fields: list[tuple[str, str]] = []
        files: list[tuple[str, FileStorage]] = []
        part: Field | File | None = None
        chunks: list[bytes] = []
        field_size = 0
        container: IO[bytes] | None = None
        for data in _chunks(stream.read, self.buffer_size):
            decoder.receive_data(data)
            event = decoder.next_event()
            while not isinstance(event, Epilogue | NeedData):
                if isinstance(event, Field):
                    part, chunks, field_size, container = event, [], 0, None
                elif isinstance(event, File):
                    part, container = event, self.start_file_streaming(event, content_length)
                elif isinstance(event, Data) and part is not None:
                    if container is None:
                        field_size += len(event.data)
                        if self.max_form_memory_size is not None and field_size > self.max_form_memory_size:
                            raise field_too_large(self.max_form_memory_size)
                        chunks.append(event.data)
                    else:
                        container.write(event.data)
                    if not event.more_data:
                        if container is None:
                            charset = self.get_part_charset(part.headers)
                            fields.append((part.name, b"".join(chunks).decode(charset, "replace")))
                        elif isinstance(part, File):
                            container.seek(0)
                            files.append(
                                (
                                    part.name,
                                    FileStorage(container, part.filename, part.name, headers=part.headers),
                                )
                            )
                event = decoder.next_event()
        return self.cls(fields), self.cls(files)


def _chunks(read: Callable[[int], bytes], size: int) -> Any:
    while data := read(size):
        yield data
    yield None


class _NamingFormDataParser(FormDataParser):
    def _parse_multipart(
        self, stream: IO[bytes], mimetype: str, content_length: int | None, options: dict[str, str]
    ) -> Any:
        parser = _NamingMultiPartParser(
            stream_factory=self.stream_factory,
            max_form_memory_size=self.max_form_memory_size,
            max_form_parts=self.max_form_parts,
            cls=self.cls,
        )
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files


class SpoolingRequest(Request):
    form_data_parser_class = _NamingFormDataParser

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        path, handle = imports.spool_file(web_context().config)
        spooled: list[tuple[Any, Path]] = self.__dict__.setdefault(SPOOLED, [])
        spooled.append((handle, path))
        stream: IO[bytes] = handle
        return stream


def spooled_path(upload: FileStorage) -> Path:
    """The spool file an uploaded file part was written to (flushed to disk)."""
    for handle, path in request.__dict__.get(SPOOLED, []):
        if upload.stream is handle:
            handle.flush()
            return Path(path)
    raise LookupError("this upload was not spooled")  # pragma: no cover - every file part is


def cut_short_bytes() -> int | None:
    """When the body ended inside a file part (a truncated upload: the client stopped or the connection was
    cut), the bytes of that file that arrived; None when no file part was left incomplete."""
    spooled = request.__dict__.get(SPOOLED, [])
    claimed = {id(upload.stream) for upload in request.files.values()}
    partial = [handle for handle, _ in spooled if id(handle) not in claimed]
    if not partial:
        return None
    partial[-1].flush()
    return sum(Path(path).stat().st_size for handle, path in spooled if handle in partial)


def remove_unclaimed_uploads(_error: BaseException | None = None) -> None:
    """Teardown: close and remove every spool file of this request that no import claimed."""
    for handle, path in request.__dict__.pop(SPOOLED, []):
        handle.close()
        Path(path).unlink(missing_ok=True)
