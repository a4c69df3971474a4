"""What may be written of a secret: nothing. One place that cuts credentials out of URLs and text.

- `redact_url(url)`: how a database or endpoint URL appears in messages, logs and
  manifests: everything kept but the password (and secret-looking query values), so
  the reader can still tell which server and which user.
- `endpoint_name(url)`: the canonical name of an endpoint, for agent stamps and cache
  keys: scheme, host, port and path only (no user, query or fragment), so two spellings
  of one endpoint name it once and nothing secret is ever part of an identity.
- `redact_secret(text, secret)`: a known secret (an API key) cut out of any text
  before it is stored or shown.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[redacted]"
MASK = "***"

# Query parameters whose values are secrets in libpq, HTTP APIs and cloud SDKs.
_SECRET_QUERY = re.compile(r"(?i)(^|&)(password|passwd|pwd|token|access_token|api_key|apikey|key|secret|sig|signature)=[^&]*")


def redact_url(url: str) -> str:
    """`url` with its password, and the values of secret query parameters, replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user_info, _, host = netloc.rpartition("@")
        netloc = f"{user_info.partition(':')[0]}:{MASK}@{host}"
    query = _SECRET_QUERY.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def endpoint_name(url: str) -> str:
    """The URL as an endpoint's identity: scheme://host[:port]/path, without a trailing slash."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def redact_secret(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced by [redacted] (secrets under 4 characters are not one)."""
    if secret and len(secret) >= 4 and secret in text:
        text = text.replace(secret, REDACTED)
    return text
