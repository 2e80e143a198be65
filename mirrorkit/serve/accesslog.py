"""One access log line per request on standard output: text (common log format, roughly) or JSON.

Never the Authorization header nor anything from it but the user name it proved.
Bytes counts what went out, ``sendfile`` included (aiohttp does not see those bytes).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

FORMATS = ("text", "json")
SENT = "mirrorkit_sent"   # request key: body bytes a handler sent past aiohttp's writer
USER = "mirrorkit_user"   # request key: the user basic auth proved


class AccessLogger(AbstractAccessLogger):
    """``log_format`` is "text" or "json"."""

    def log(self, request: BaseRequest, response: StreamResponse, time_taken: float) -> None:
        sent = request.get(SENT)
        size = sent if isinstance(sent, int) else response.body_length
        peer = request.remote or "-"
        user = request.get(USER) or "-"
        if self.log_format == "json":
            self.logger.info(json.dumps({
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "remote": peer, "user": user,
                "method": request.method, "path": request.raw_path, "status": response.status, "bytes": size,
                "seconds": round(time_taken, 6), "user_agent": request.headers.get("User-Agent", ""),
            }, separators=(",", ":")))
            return
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        agent = request.headers.get("User-Agent", "-").replace('"', "'")
        self.logger.info(f'{peer} - {user} [{stamp}] "{request.method} {request.raw_path} HTTP/'
                         f'{request.version.major}.{request.version.minor}" {response.status} {size} '
                         f'{time_taken:.4f} "{agent}"')


def access_logger() -> logging.Logger:
    """A logger writing bare lines to standard output, flushed per line (journald, pipes)."""
    logger = logging.getLogger("mirrorkit.serve.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger
