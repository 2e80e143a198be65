"""The ``Range`` header of a blob or package request: one byte range, or a refusal (416).

Clients that resume a download (containerd, skopeo, apt) ask for one range. Several
ranges in one request (a multipart answer) are refused rather than half-served, as is
anything that is not ``bytes=FIRST-[LAST]`` or ``bytes=-SUFFIX`` inside the blob.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


class BadRange(Exception):
    """The header cannot be satisfied: answer 416 with ``Content-Range: bytes */SIZE``."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first byte, byte count) of the requested range, or None when the whole blob is wanted."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        raise BadRange(header)
    first, last = match.group(1), match.group(2)
    if not first and not last:
        raise BadRange(header)
    if not first:                        # the last N bytes
        count = min(int(last), size)
        if count == 0:
            raise BadRange(header)
        return size - count, count
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise BadRange(header)
    return start, end - start + 1
