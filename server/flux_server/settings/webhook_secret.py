"""``--webhook-secret``: a Standard Webhooks signing secret, checked when the settings are
read: a bad one stops the server at start, and is never echoed (the ``standardwebhooks``
library signs with it, :mod:`flux_server.jobs.webhooks`)."""

from __future__ import annotations

import base64
import binascii


def check_webhook_secret(secret: str) -> bytes:
    """The key of a ``whsec_`` secret; ``ValueError`` (never echoing the secret) when it
    is not ``whsec_`` and the base64 of 24 to 64 bytes, as Standard Webhooks asks."""
    body = secret.strip().removeprefix("whsec_")
    if body == secret.strip():
        raise ValueError("must start with whsec_ (Standard Webhooks secret)")
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"decodes to {len(key)} bytes; use 24 to 64 random bytes")
    return key
