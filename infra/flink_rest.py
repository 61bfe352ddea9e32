"""Flink's REST API (a MiniCluster's or a standalone cluster's), one call at a time."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def flink_rest(base_url: str, path: str, method: str = "GET", body: dict[str, Any] | None = None,
               timeout_s: float = 10.0) -> Any:
    """The decoded JSON answer of `method base_url+path` (with `body` as JSON), e.g. ("/overview")."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read() or b"null")
