"""Masking of secrets before anything is logged or stored.

Three sources of secrets are covered: passwords inside URLs (`scheme://user:pw@host`), values
under keys that name a secret (`password`, `token`, ...), and values registered at run time
(everything read through `${env:NAME}`), which may appear verbatim inside error messages.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

MASK = "***"

# user:password@ right after a scheme; the password is anything up to the last '@' of the
# authority (a raw '@' or '/' in a password is invalid in a URL, so this is a safe bound).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*):(?P<pw>[^\s/@]*)@")
# Query parameters of signed URLs (S3 presigned, SAS, tokens) grant access by themselves.
_SIGNED_QUERY = re.compile(
    r"(?P<key>[?&](?:X-Amz-(?:Signature|Credential|Security-Token)|Signature|sig|token|"
    r"access_token|AWSAccessKeyId)=)(?P<value>[^&\s#]+)",
    re.IGNORECASE,
)
_SECRET_KEY = re.compile(r"(^|_)pass(word|wd)?$|secret|token|api_?key|credential", re.IGNORECASE)

# Too-short values would mask unrelated text (e.g. an env var holding "1").
_MIN_SECRET_LEN = 4
_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Mask `value` wherever it appears later in logged or stored text."""
    if isinstance(value, str) and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _registered.add(value)


def mask_url(s: str) -> str:
    """`scheme://user:pw@host/db` -> `scheme://user:***@host/db`, and signature/token query
    parameters of signed URLs -> `***`; other text is unchanged."""
    s = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{MASK}@" if m["pw"] else m[0], s)
    return _SIGNED_QUERY.sub(lambda m: f"{m['key']}{MASK}", s)


def mask_text(s: str) -> str:
    """Mask URL passwords and every registered secret value inside free text."""
    with _lock:
        values = sorted(_registered, key=len, reverse=True)  # longest first: no partial leak
    for value in values:
        if value in s:
            s = s.replace(value, MASK)
    return mask_url(s)


def mask_secrets(obj: Any) -> Any:
    """A copy of a JSON-like structure with every secret masked (see the module doc)."""
    if isinstance(obj, str):
        return mask_text(obj)
    if isinstance(obj, Mapping):
        return {
            k: (MASK if _is_secret_key(k) and v not in (None, "") else mask_secrets(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [mask_secrets(v) for v in obj]
    return obj


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and _SECRET_KEY.search(key) is not None
