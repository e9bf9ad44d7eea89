"""Which reply frames are error replies."""

from __future__ import annotations

import re

from bridge.upstream.replies.frames import Frame


class ErrorRule:
    """An error reply by the framing's own rules (RESP ``-ERR``, memcached
    ``CLIENT_ERROR``, SMTP 5xx...) or one matching ``reply_error_pattern``."""

    def __init__(self, pattern: str | None) -> None:
        self._pattern = re.compile(pattern.encode("utf-8")) if pattern else None

    def __call__(self, frame: Frame) -> bool:
        if frame.error:
            return True
        pattern = self._pattern
        return pattern is not None and pattern.search(frame.text) is not None
