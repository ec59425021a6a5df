"""Secrets never shown: every URL that reaches a user passes through `redact`.

A URL shown anywhere (events, logs, error lines, metrics, bench documents) keeps its scheme,
host, port and path; its user-info password and every query value become ``***``. Every
value, not those of a list of secret-looking names: ``X-Amz-Signature``, ``access_token``,
``jwt`` and ``sig`` look like any other key, and a list is always one name short. The fragment
(``#access_token=...`` in OAuth redirects) is masked whole.

The user may let some keys' values show (``events.show_query_keys``, e.g. ``channel`` and
``subtype`` of a camera's stream URL): `show_query_keys` sets that once for the process, so
every channel shows a URL alike. Paths are never masked: a token in a path segment cannot be
told from a folder name.

Users type passwords unencoded (a camera's web page allows ``/``, ``?``, ``#``, ``@``, ``'`` and
spaces), so ``user:password@`` is not read the standard way, where the host starts after the
first ``/``, ``?`` or ``#``: after ``scheme://USER:`` (a user name holds no ``/``, ``?``, ``#``,
``:``, white space or quote) the password runs to the LAST ``@`` on the line that a host follows
(a name, an address or ``[IPv6``, maybe ``:PORT``, then ``/``, ``?``, ``#``, white space, a quote,
punctuation or the end), never across another ``scheme://`` nor past 1,024 characters (a longer
one is read the standard way). ``rtsp://admin:pa/ss@cam/live`` shows as
``rtsp://admin:***@cam/live``. The price, where a URL has a port or credentials and an ``@``
later in its path or last query value (``http://host:8080/u/@alice/x``), is that it shows masked
from the port to that ``@`` (``http://host:***@alice/x``): no password shows, some text that was
none may be hidden. Without ``USER:`` (``https://host/@alice/x``, or a lone token
``rtsp://TOKEN@host``) the user-info is read the standard way and such a path stays as it is.
`split_userinfo` splits a URL by the same rule, for code that opens it.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable
from urllib.parse import unquote

MASK = "***"
# A URL in free text: a scheme, "://", then anything up to white space or a quote, without the
# punctuation that ends a sentence ("cannot open rtsp://host/x; check ...").
URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]*[^\s\"'<>.,;:!?)\]}]")
# A URL's "scheme:/" as a file path leaves it, followed by user-info: its credentials show.
COLLAPSED_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*):/(?=[^/\s\"'<>@]*@)")
# What may follow the "@" that ends the user-info: a host (a name, an address, "[IPv6", even
# unclosed; a mistyped one too, an error line names it) and maybe ":PORT" (a mistyped one too),
# then the end of the host part, of the text or of the sentence. No "@" in it, nor "&" or "=",
# which an address in a query value is followed by ("?mail=a@b.com&x=1").
_HOST_FOLLOWS = (r"(?=(?:\[[^\s/?#@\"'<>\]]*\]?|[^\s/?#@\"'<>:\[\]&=]+)(?::[^\s/?#@\"'<>&=]*)?"
                 r"(?:[/?#\s\"'<>,;)\]}!]|$))")
# "scheme://USER:PASSWORD@" (or a collapsed "scheme:/USER:PASSWORD@") where the password may hold
# anything but a line break or another "scheme://": it runs to the last "@" a host follows (a
# bound keeps a long line of "x:/y:" linear; a longer password is one the standard way reads).
CREDENTIALS = re.compile(r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):/(?P<slash>/)?(?P<user>[^\s/?#:\"'<>]*):"
                         r"(?P<password>(?:(?!://)[^\r\n]){0,1024})@" + _HOST_FOLLOWS)
# A query key the user may list: no separator, no white space.
QUERY_KEY = re.compile(r"[^\s=&#?]+")

_shown_query_keys: frozenset[str] = frozenset()


def show_query_keys(keys: Iterable[str]) -> None:
    """Let the values of these query keys show (case-insensitive); every other value stays masked."""
    global _shown_query_keys
    _shown_query_keys = frozenset(key.lower() for key in keys)


def redact(text: str) -> str:
    """``text`` with every URL in it masked: a URL on its own, a command line, a log line, an
    error message. Text without a URL comes back as it is; masking twice changes nothing. A URL
    that went through a file path (``ftp:/user:pw@host/...``: a path keeps one slash) is masked
    as the URL it was."""
    text = CREDENTIALS.sub(_mask_credentials, str(text))
    text = COLLAPSED_URL.sub(r"\1://", text)
    return URL.sub(lambda match: _mask_url(match.group(0)), text)


def split_userinfo(url: str) -> tuple[str | None, str]:
    """``(user-info, the URL without it)`` by the rule `redact` masks by (the module's docstring):
    ``rtsp://admin:pa/ss@cam/live`` is ``("admin:pa/ss", "rtsp://cam/live")``; ``(None, url)``
    for a URL without user-info. The user-info is as written (percent-encoded or not)."""
    url = str(url)
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", url):
        return None, url
    scheme, _, rest = url.partition("://")
    match = CREDENTIALS.match(url)
    if match and match["slash"]:
        return f"{match['user']}:{match['password']}", f"{scheme}://{url[match.end():]}"
    authority = re.match(r"[^/?#]*", rest)[0]
    if "@" not in authority:
        return None, url
    userinfo, _, host = authority.rpartition("@")
    return userinfo, f"{scheme}://{host}{rest[len(authority):]}"


def redact_data(value: Any) -> Any:
    """Plain data (a JSON document; tuples become lists) with every string in it through `redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value


class RedactingFormatter(logging.Formatter):
    """Log lines through `redact`, tracebacks included: a URL in any log message shows masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _mask_credentials(match: re.Match) -> str:
    password = MASK if match["password"] else ""
    return f"{match['scheme']}://{match['user']}:{password}@"


def _mask_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    rest, hash_sign, fragment = rest.partition("#")
    rest, question_mark, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user, colon, password = userinfo.partition(":")
        if colon:
            authority = f"{user}:{MASK if password else ''}@{host}"
        elif userinfo:
            authority = f"{MASK}@{host}"  # a lone user-info is often a token
    masked = f"{scheme}://{authority}{slash}{path}"
    if question_mark:
        masked += "?" + "&".join(_mask_item(item) for item in query.split("&"))
    if hash_sign:
        masked += "#" + (MASK if fragment else "")
    return masked


def _mask_item(item: str) -> str:
    """One ``key=value`` of a query: the value masked unless its key is shown; a bare item is a value."""
    key, equals, value = item.partition("=")
    if not equals:
        return MASK if item else item
    if not value or unquote(key).lower() in _shown_query_keys:
        return item
    return f"{key}={MASK}"
