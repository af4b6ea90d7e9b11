"""Uploads stream straight into private spool files under the service home, never into memory or /tmp.

:class:`SpoolingRequest` is the app's request class: every file part of a multipart body is written to a
new ``home/imports/upload-*.part`` file as it arrives. A file the view does not claim (refused, truncated,
too large, failed CSRF or role check) is removed when the request ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from flask import Request, request
from werkzeug.datastructures import FileStorage

from updater.services.bundles import imports
from updater.web.context import web_context

SPOOLED = "corral_spooled"


class SpoolingRequest(Request):
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
