"""SQL values in JSON: BLOBs travel as `{"$blob": "<base64>"}` in rows and in params.

JSON has no bytes type; a tagged object keeps BLOB distinct from TEXT in both directions, so
a value read back and written again stays a BLOB.
"""

from __future__ import annotations

import base64
import json
from typing import Any

BLOB = "$blob"


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {BLOB: base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not a SQL value")


def dumps(obj: Any) -> bytes:
    """JSON with BLOBs tagged; costs nothing extra when there are no BLOBs."""
    return json.dumps(obj, default=_default, separators=(",", ":")).encode()


def _hook(obj: dict) -> Any:
    if len(obj) == 1 and BLOB in obj:
        try:
            return base64.b64decode(obj[BLOB], validate=True)
        except (ValueError, TypeError):
            raise ValueError(f"{BLOB} must hold base64 text") from None
    return obj


def loads(raw: bytes | str) -> Any:
    """JSON with tagged BLOBs turned back into bytes."""
    return json.loads(raw, object_hook=_hook)
