"""`streamrec.redaction.redact`: the one function every shown URL passes through.

Values are real-world secret parameter names (cloud signatures, OAuth, JWT, session ids) and
user-info; the channel-by-channel checks on real runs are in tests/test_security.py.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time

import pytest

from streamrec import redaction
from streamrec.redaction import RedactingFormatter, redact, redact_data, show_query_keys, split_userinfo

# Query keys that carry secrets in URLs found in the wild: none of them may need to be listed anywhere.
SECRET_KEYS = ("api_key", "apikey", "access_token", "refresh_token", "id_token", "X-Amz-Signature",
               "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Signature", "Signature", "sig", "signature",
               "token", "password", "passwd", "pwd", "key", "secret", "client_secret", "auth", "authorization",
               "jwt", "session", "sessionid", "PHPSESSID", "sv", "se", "sp", "sr", "st", "code", "passphrase")


def secret_url(scheme: str = "https", host: str = "127.0.0.1:28999") -> tuple[str, list[str]]:
    """A URL with user-info and every secret key; returns it and the secret values in it."""
    values = [f"S3CR3T{i:02d}x" for i in range(len(SECRET_KEYS))]
    query = "&".join(f"{key}={value}" for key, value in zip(SECRET_KEYS, values))
    return f"{scheme}://viewer:PASSW0RD-1@{host}/v.mp4?{query}", ["PASSW0RD-1", *values]


@pytest.fixture(autouse=True)
def nothing_shown():
    """Each test starts, and leaves the process, with every query value masked."""
    show_query_keys(())
    yield
    show_query_keys(())


@pytest.mark.parametrize("scheme", ["rtsp", "rtsps", "rtmp", "http", "https", "srt", "udp", "ftp", "s3", "wss"])
def test_every_query_value_and_the_password_are_masked_for_every_scheme(scheme):
    url, secrets = secret_url(scheme)
    shown = redact(url)
    assert not [s for s in secrets if s in shown], shown
    assert shown.startswith(f"{scheme}://viewer:***@127.0.0.1:28999/v.mp4?api_key=***&apikey=***&")
    assert shown.count("=***") == len(SECRET_KEYS)


def test_urls_inside_free_text_are_masked_and_the_text_around_them_kept():
    url, secrets = secret_url()
    for text in (f"error: stream door: cannot open {url}; check the URL", f"python run_stream.py run --source 'door={url}'",
                 f'{{"source": "{url}", "state": "live"}}', f"(see {url})."):
        shown = redact(text)
        assert not [s for s in secrets if s in shown], shown
        assert shown.replace(redact(url), "URL") in (
            "error: stream door: cannot open URL; check the URL", "python run_stream.py run --source 'door=URL'",
            '{"source": "URL", "state": "live"}', "(see URL).")


@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:hunter2@10.0.0.7/stream1", "rtsp://admin:***@10.0.0.7/stream1"),
    ("rtsp://TOKEN123@cam.local/live", "rtsp://***@cam.local/live"),  # a lone user-info is often a token
    ("rtsp://bob:pw@[::1", "rtsp://bob:***@[::1"),  # does not even parse as a URL
    ("rtsp://user:p@ss@host:554/x", "rtsp://user:***@host:554/x"),  # an unencoded '@' in the password
    ("https://host/cb#access_token=abc.def&state=1", "https://host/cb#***"),  # OAuth puts tokens in the fragment
    ("https://host/x?SECRETONLY&a=", "https://host/x?***&a="),  # a bare item is a value; an empty value hides nothing
    ("udp://@:1234", "udp://@:1234"),
    ("/videos/lobby.mp4", "/videos/lobby.mp4"),
    ("synthetic:size=640x480,fps=30", "synthetic:size=640x480,fps=30"),
    ("camera 0", "camera 0"),
])
def test_what_is_masked_and_what_is_kept(url, shown):
    assert redact(url) == shown
    assert redact(shown) == shown  # masking twice changes nothing


def test_keys_the_user_lets_show_keep_their_values_and_only_those():
    url = "rtsp://admin:pw@cam/cam/realmonitor?Channel=2&subtype=0&token=abc"
    show_query_keys(["channel", "SUBTYPE"])
    assert redact(url) == "rtsp://admin:***@cam/cam/realmonitor?Channel=2&subtype=0&token=***"
    show_query_keys([])
    assert redact(url) == "rtsp://admin:***@cam/cam/realmonitor?Channel=***&subtype=***&token=***"


def test_log_lines_and_their_tracebacks_are_masked():
    url, secrets = secret_url()
    try:
        raise ValueError(f"decoder failed on {url}")
    except ValueError:
        record = logging.LogRecord("streamrec.capture", logging.ERROR, __file__, 1, "stream %s: %s failed", ("door", url),
                                   exc_info=sys.exc_info())
    line = RedactingFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line.startswith(f"ERROR streamrec.capture: stream door: {redact(url)} failed")
    assert "Traceback" in line and f"decoder failed on {redact(url)}" in line
    assert not [s for s in secrets if s in line]


def test_documents_are_masked_in_every_string_they_hold():
    url, secrets = secret_url()
    document = {"setup": {"sources": [url, "synthetic"], "fps": 30.0}, "per_stream": [{"source": url, "error": None}]}
    masked = redact_data(document)
    assert masked == {"setup": {"sources": [redact(url), "synthetic"], "fps": 30.0},
                      "per_stream": [{"source": redact(url), "error": None}]}
    assert not [s for s in secrets if s in str(masked)]


def test_a_source_is_opened_as_given_and_shown_through_the_same_function():
    from streamrec import sources

    url, _ = secret_url()
    spec = sources.parse_source(url)
    assert spec.target == url and spec.display == redact(url)
    assert sources.redact is redaction.redact  # what the broker sinks import


def test_a_url_that_went_through_a_file_path_is_masked_as_the_url_it_was():
    """A path keeps one slash of "scheme://" ("checkpoint ftp:/u:pw@host/w.pt not found"), which
    hid the URL from the mask and printed its password."""
    assert redact("checkpoint ftp:/u:hunter2@127.0.0.1/w.pt not found") == \
        "checkpoint ftp://u:***@127.0.0.1/w.pt not found"
    assert redact("C:/data/x.mp4 and a/b:c/d") == "C:/data/x.mp4 and a/b:c/d"  # paths without credentials stay


# Passwords as users type them into a camera's web page: unencoded '/', '#', '?', ' ', "'", '@'.
TYPED_PASSWORDS = ("pa/ss", "pa#ss", "pa?ss", "p ss", "it's", "b@c", "p@ss/x@y", "a/b?c#d e'f@g", "pa%2Fss")


@pytest.mark.parametrize("password", TYPED_PASSWORDS)
@pytest.mark.parametrize("host", ["cam", "10.0.0.7:554", "[::1]:554", "[::1", "cam.local:x"])
def test_a_password_as_typed_is_masked_whole(password, host):
    """The user-info runs to the last '@' a host follows, not to the first '/', '?' or '#'."""
    url = f"rtsp://admin:{password}@{host}/live?token=t0k3n"
    shown = f"rtsp://admin:***@{host}/live?token=***"
    assert redact(url) == shown and redact(shown) == shown
    pieces = [piece for piece in ("pa", "ss", "it", "b@c", "x@y", "e'f", "%2F") if piece in password]
    for text, expected in ((f"error: stream door: cannot open {url}; check the URL",
                            f"error: stream door: cannot open {shown}; check the URL"),
                           (f"python run_stream.py run --source {shlex.quote(url)} --publish none",
                            f"python run_stream.py run --source {shlex.quote(shown)} "
                            "--publish none"),
                           (f"ERROR streamrec.capture: stream door: {url} failed", None),
                           (f"checkpoint {url.replace('://', ':/')} not found", f"checkpoint {shown} not found")):
        masked = redact(text)
        if expected is not None:
            assert masked == expected
        assert not [piece for piece in pieces if piece in masked.replace("passwd", "")], masked
        assert redact(masked) == masked


def test_a_path_with_an_at_sign_and_no_credentials_stays_but_one_after_a_port_is_masked():
    """The rule's price, documented in streamrec.redaction: without 'USER:' (or a port) right after
    'scheme://', an '@' in the path is a path's; after one, it may end a password, so it is masked."""
    for url in ("https://medium.com/@alice/x.mp4", "https://host/users/@alice", "rtsp://TOKEN@cam/live",
                "https://host/x?mail=a@b.com&x=1"):
        assert redact(url).replace("TOKEN", "***").replace("a@b.com", "***").replace("x=1", "x=***") == \
            url.replace("TOKEN", "***").replace("a@b.com", "***").replace("x=1", "x=***")
    assert redact("http://host:8080/u/@alice/x.mp4") == "http://host:***@alice/x.mp4"
    # A password never runs across another URL of the line, nor past its line.
    assert redact("--source rtsp://cam:554/live --publish mqtt://u:pw@broker/x") == \
        "--source rtsp://cam:554/live --publish mqtt://u:***@broker/x"
    assert redact("rtsp://cam:554/live\nmail admin@example.com") == "rtsp://cam:554/live\nmail admin@example.com"
    # An '@' in the hint after a URL is not a host: "percent-encode '@', ':'".
    assert redact("source rtsp://admin:pa ss@[::1 is bad; percent-encode '@', ':', '/'") == \
        "source rtsp://admin:***@[::1 is bad; percent-encode '@', ':', '/'"


@pytest.mark.parametrize("url, userinfo, bare", [
    ("rtsp://admin:pa/ss@cam/live?x=1", "admin:pa/ss", "rtsp://cam/live?x=1"),
    ("rtsp://admin:p ss@[::1]:554/x", "admin:p ss", "rtsp://[::1]:554/x"),
    ("rtsp://a:b@c@cam/live", "a:b@c", "rtsp://cam/live"),
    ("https://viewer:pa%2Fss@host/x.pyth", "viewer:pa%2Fss", "https://host/x.pyth"),
    ("https://TOKEN@host/x.pyth", "TOKEN", "https://host/x.pyth"),
    ("https://host/@alice/x.pyth", None, "https://host/@alice/x.pyth"),
    ("https://host/x.pyth", None, "https://host/x.pyth"),
    ("/videos/a@b.mp4", None, "/videos/a@b.mp4"),
])
def test_a_url_is_split_by_the_rule_it_is_masked_by(url, userinfo, bare):
    assert split_userinfo(url) == (userinfo, bare)


def test_masking_a_long_line_takes_linear_time():
    start = time.monotonic()
    redact(("a:/b:" + "c" * 50) * 4000)
    redact("rtsp://cam:554/" + "a " * 100_000)
    assert time.monotonic() - start < 5
