"""Checkpoints by URL and zoo name: downloaded once into the cache from a loopback HTTP server,
resumed after a truncated transfer, deleted when they do not match their published hash, then
loaded by the same safe loader as local files; the zoo table itself is checked entry by entry."""

from __future__ import annotations

import base64
import hashlib
import http.server
import inspect
import pickle
import threading
from pathlib import Path

import pytest
import torch

from streamrec import zoo
from streamrec.checkpoints import checkpoint_config, load_checkpoint, load_model
from streamrec.config import load_config
from streamrec.errors import StreamrecError
from streamrec.models import get_arch


class Files(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) with HTTP range requests; ``truncate_once`` paths send half
    their body once and hang up, ``tampered`` paths serve other bytes than the published file's,
    ``redirects`` paths answer 302 to a URL. A server with ``basic_auth`` (``user:password``) wants
    it in every request's Authorization header; ``authorizations`` records what each request sent."""

    files: dict[str, bytes] = {}
    truncate_once: set[str] = set()
    tampered: set[str] = set()
    redirects: dict[str, str] = {}
    requests: list[tuple[str, str | None]] = []
    authorizations: list[tuple[int, str, str | None]] = []  # (server port, path, Authorization)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Files.authorizations.append((self.server.server_address[1], self.path, self.headers.get("Authorization")))
        wanted = getattr(self.server, "basic_auth", None)
        if wanted and self.headers.get("Authorization") != "Basic " + base64.b64encode(wanted.encode()).decode():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="models"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        Files.requests.append((self.path, self.headers.get("Range")))
        if self.path in self.redirects:
            self.send_response(302)
            self.send_header("Location", self.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        if self.path in self.tampered:
            body = body[:-4] + b"evil"
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in self.truncate_once:
            self.truncate_once.discard(self.path)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    Files.files, Files.truncate_once, Files.tampered, Files.requests = {}, set(), set(), []
    Files.redirects, Files.authorizations = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("STREAMREC_CACHE", str(tmp_path / "cache"))
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def tiny():
    return load_config("slowfast_tiny")


def tiny_state(tiny, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    network = load_model(tiny).network
    with torch.no_grad():
        for tensor in network.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_(1.0 if tensor.dim() == 1 else 0.0, 0.1)
    return network.state_dict()


def served_torch_file(tmp_path: Path, payload, path: str) -> tuple[str, bytes]:
    file = tmp_path / "payload.pt"
    torch.save(payload, file)
    data = file.read_bytes()
    Files.files[path] = data
    return path, data


def hashed_name(stem: str, data: bytes) -> str:
    """A torchvision-style file name carrying the first 8 hex digits of the file's SHA-256."""
    return f"/models/{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def test_a_zoo_file_downloads_once_then_comes_from_the_cache(server, tiny, tmp_path, monkeypatch, capsys):
    httpd, base = server
    path, data = served_torch_file(tmp_path, {"model_state": tiny_state(tiny)}, "/zoo/tiny.pyth")
    monkeypatch.setitem(zoo.ZOO, "tiny_test", zoo.ZooEntry(base + path, "slowfast_tiny", "a test"))

    local = zoo.checkpoint_file("zoo:tiny_test")
    assert local.read_bytes() == data
    assert local == tmp_path / "cache" / "127.0.0.1" / "zoo" / "tiny.pyth"
    assert "100%" in capsys.readouterr().err  # the progress bar reached the end
    httpd.shutdown()  # offline from here
    assert zoo.checkpoint_file("zoo:tiny_test") == local
    assert len(Files.requests) == 1


def test_a_zoo_name_loads_with_the_entrys_config(server, tiny, tmp_path, monkeypatch):
    _, base = server
    state = tiny_state(tiny)
    path, _ = served_torch_file(tmp_path, {"model_state": state}, "/zoo/tiny.pyth")
    monkeypatch.setitem(zoo.ZOO, "tiny_test", zoo.ZooEntry(base + path, "slowfast_tiny", "a test"))

    config = checkpoint_config("zoo:tiny_test")  # a PySlowFast-style file records no config: the entry names it
    assert config.name == "slowfast_tiny" and config.checkpoint == "zoo:tiny_test"
    loaded = load_model(config).network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_zoo_entry_sets_the_model_values_its_files_layout_needs(server, tiny, tmp_path, monkeypatch):
    _, base = server
    path, _ = served_torch_file(tmp_path, {"model_state": tiny_state(tiny)}, "/zoo/tiny.pyth")
    monkeypatch.setitem(zoo.ZOO, "tiny_test", zoo.ZooEntry(base + path, "slowfast_tiny", "a test", None,
                                                           {"dropout": 0.1}))
    assert checkpoint_config("zoo:tiny_test").model.kwargs["dropout"] == 0.1
    assert load_model(tiny.replace(checkpoint="zoo:tiny_test")).network.head.dropout.p == 0.1


def test_a_truncated_download_resumes_where_it_stopped(server, tiny, tmp_path):
    _, base = server
    path, data = served_torch_file(tmp_path, {"model_state": tiny_state(tiny)}, "/zoo/tiny.pyth")
    Files.truncate_once.add(path)
    with pytest.raises(StreamrecError, match=rf"stopped at {len(data) // 2} of {len(data)} bytes; run the command "
                                             "again to resume"):
        load_checkpoint(base + path)
    partial = zoo.cached_path(base + path).with_name("tiny.pyth.part")
    assert partial.stat().st_size == len(data) // 2
    assert not zoo.cached_path(base + path).exists()

    checkpoint = load_checkpoint(base + path)
    assert Files.requests[-1] == (path, f"bytes={len(data) // 2}-")
    assert zoo.cached_path(base + path).read_bytes() == data and not partial.exists()
    assert checkpoint.origin == "pyslowfast"


def test_a_resumed_download_is_checked_whole_against_the_published_hash(server, tiny, tmp_path):
    _, base = server
    _, data = served_torch_file(tmp_path, tiny_state(tiny), "/tmp.pt")
    path = hashed_name("tiny", data)
    Files.files[path] = data
    Files.truncate_once.add(path)
    with pytest.raises(StreamrecError, match="stopped at"):
        zoo.checkpoint_file(base + path)
    assert zoo.checkpoint_file(base + path).read_bytes() == data


@pytest.mark.parametrize("named_by", ["url", "zoo"])
def test_a_tampered_download_is_deleted(server, tiny, tmp_path, monkeypatch, named_by):
    """The published hash: in a torchvision-style file name, or in the zoo entry."""
    _, base = server
    _, data = served_torch_file(tmp_path, tiny_state(tiny), "/tmp.pt")
    path = hashed_name("tiny", data)
    Files.files[path] = data
    Files.tampered.add(path)
    reference = base + path
    if named_by == "zoo":
        path = "/zoo/tiny.pth"
        Files.files[path], reference = data, "zoo:tiny_test"
        Files.tampered.add(path)
        monkeypatch.setitem(zoo.ZOO, "tiny_test", zoo.ZooEntry(base + path, "slowfast_tiny", "a test",
                                                               hashlib.sha256(data).hexdigest()))
    with pytest.raises(StreamrecError, match="does not match its published SHA-256.*deleted it"):
        zoo.checkpoint_file(reference)
    cached = zoo.cached_path(base + path)
    assert not cached.exists() and not cached.with_name(cached.name + ".part").exists()


def test_an_untampered_hashed_file_passes(server, tiny, tmp_path):
    _, base = server
    _, data = served_torch_file(tmp_path, tiny_state(tiny), "/tmp.pt")
    path = hashed_name("tiny", data)
    Files.files[path] = data
    assert zoo.checkpoint_file(base + path).read_bytes() == data


def test_a_downloaded_file_goes_through_the_safe_loader(server, tmp_path):
    _, base = server
    marker = tmp_path / "it-ran"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    Files.files["/evil.pkl"] = pickle.dumps({"blobs": {"conv1_w": Exploit()}}, protocol=2)
    with pytest.raises(StreamrecError, match="is refused: its pickle calls "):
        load_checkpoint(base + "/evil.pkl")
    assert not marker.exists()


def test_http_errors_and_unreachable_servers_are_one_line(server, tmp_path):
    _, base = server
    with pytest.raises(StreamrecError, match="failed: HTTP 404"):
        zoo.checkpoint_file(base + "/missing.pth")
    with pytest.raises(StreamrecError, match="cannot download .* check the network") as error:
        zoo.checkpoint_file("http://127.0.0.1:9/nothing-listens-here.pth")
    assert "\n" not in str(error.value)


def test_a_mistyped_zoo_name_suggests_the_close_ones():
    with pytest.raises(StreamrecError, match="no zoo checkpoint 'slowfast_r50_8x8_k40'; did you mean "
                                             "zoo:slowfast_r50_8x8_k400"):
        zoo.checkpoint_file("zoo:slowfast_r50_8x8_k40")


def test_local_paths_are_not_downloaded(tmp_path):
    assert zoo.checkpoint_file(tmp_path / "model.pt") == tmp_path / "model.pt"
    assert not zoo.is_remote("streamrec/weights/slowfast_tiny/model.pt") and zoo.is_remote("zoo:x3d_m_k400")


def test_the_cache_folder_is_the_users_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("STREAMREC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "streamrec" / "checkpoints"
    monkeypatch.setenv("STREAMREC_CACHE", str(tmp_path / "mine"))
    assert zoo.cache_dir() == tmp_path / "mine"


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_every_zoo_entry_fits_a_shipped_config_and_keeps_its_published_hash(name):
    entry = zoo.ZOO[name]
    assert entry.url.startswith("https://") and entry.source
    config = load_config(entry.config)
    accepted = inspect.signature(get_arch(config.model.arch).builder).parameters
    assert set(entry.model) <= set(accepted)
    named = zoo.HASH_IN_NAME.search(entry.url.rsplit("/", 1)[1])
    if named:
        assert entry.sha256 == named[1], "a hash the file name publishes must be the entry's, so it is checked"


def test_a_url_checkpoint_runs_on_the_onnx_runtime_engine_too(server, tiny, tmp_path, engine_dir):
    """A config's checkpoint may be a URL (or zoo name): kept as given, not read as a path, and
    fetched when the engine cache hashes it for the export."""
    from streamrec.backends import create_engine

    httpd, base = server
    path, data = served_torch_file(tmp_path, {"model_state": tiny_state(tiny)}, "/zoo/tiny.pyth")
    config = load_config("slowfast_tiny", values={"checkpoint": base + path, "engine.backend": "onnxruntime"})
    assert config.checkpoint == base + path
    engine = create_engine(config)
    assert engine.name == "onnxruntime" and [p for p, _ in Files.requests if p == path]


# --------------------------------------------------------------------------- URLs with a user name and password


@pytest.mark.parametrize("password, typed", [("s3cret-pw", "s3cret-pw"), ("pa/ss", "pa/ss"),
                                             ("p@ss w#rd?", "p@ss w#rd?"), ("pa/ss", "pa%2Fss"), ("it's", "it%27s")])
def test_a_url_with_a_user_name_and_password_downloads_with_basic_auth(server, tiny, tmp_path, capsys, password,
                                                                       typed):
    """As typed or percent-encoded: the user-info leaves the URL and goes as HTTP basic auth, from the
    first request on; the cache keeps the file under its host and path, no password in its path."""
    httpd, base = server
    httpd.basic_auth = f"viewer:{password}"
    path, data = served_torch_file(tmp_path, {"model_state": tiny_state(tiny)}, "/zoo/tiny.pyth")
    url = base.replace("http://", f"http://viewer:{typed}@") + path

    local = zoo.checkpoint_file(url)
    assert local.read_bytes() == data
    assert local == tmp_path / "cache" / "127.0.0.1" / "zoo" / "tiny.pyth"
    expected = "Basic " + base64.b64encode(f"viewer:{password}".encode()).decode()
    assert Files.authorizations == [(httpd.server_address[1], path, expected)]  # no 401 round first
    assert password not in capsys.readouterr().err
    assert zoo.checkpoint_file(url) == local and len(Files.authorizations) == 1  # from the cache then


def test_a_checkpoint_url_with_credentials_loads(server, tiny, tmp_path):
    httpd, base = server
    httpd.basic_auth = "viewer:pa/ss"
    state = tiny_state(tiny)
    path, _ = served_torch_file(tmp_path, {"model_state": state}, "/zoo/tiny.pyth")
    checkpoint = load_checkpoint(base.replace("http://", "http://viewer:pa/ss@") + path)
    assert checkpoint.origin == "pyslowfast"


@pytest.mark.parametrize("typed", ["wrong", "pa/ss-wrong", None])
def test_a_refused_password_is_one_line_that_masks_it(server, tmp_path, typed):
    httpd, base = server
    httpd.basic_auth = "viewer:right"
    Files.files["/zoo/x.pyth"] = b"x"
    url = (base.replace("http://", f"http://viewer:{typed}@") if typed else base) + "/zoo/x.pyth"
    with pytest.raises(StreamrecError) as error:
        zoo.checkpoint_file(url)
    message = str(error.value)
    assert "\n" not in message and "wrong" not in message
    if typed:
        assert message == (f"download of {base.replace('http://', 'http://viewer:***@')}/zoo/x.pyth failed: HTTP 401 "
                           "Unauthorized; check the user name and password in it")
    else:
        assert message.endswith("HTTP 401 Unauthorized; the server asks for a user name and password: put "
                                "USER:PASSWORD@ before the URL's host")


def test_credentials_go_to_their_host_only_not_where_it_redirects(server, tmp_path):
    """A redirect to the same host keeps the basic auth; one to another host (another port) does not get it."""
    httpd, base = server
    httpd.basic_auth = "viewer:s3cret"
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        Files.files["/real/x.pyth"] = b"weights"
        Files.redirects["/moved/x.pyth"] = "/real/x.pyth"
        Files.redirects["/away/x.pyth"] = f"http://127.0.0.1:{other.server_address[1]}/real/x.pyth"
        credentialed = base.replace("http://", "http://viewer:s3cret@")
        assert zoo.checkpoint_file(credentialed + "/moved/x.pyth").read_bytes() == b"weights"
        assert zoo.checkpoint_file(credentialed + "/away/x.pyth").read_bytes() == b"weights"
    finally:
        other.shutdown()
        other.server_close()
    sent = [(port == httpd.server_address[1], path, auth is not None) for port, path, auth in Files.authorizations]
    assert sent == [(True, "/moved/x.pyth", True), (True, "/real/x.pyth", True), (True, "/away/x.pyth", True),
                    (False, "/real/x.pyth", False)]


@pytest.mark.parametrize("url", ["https://user:pw-9f8e@127.0.0.1:9/x.pyth",
                                 "https://user:pw-9f8e@nohost.invalid/x.pyth",
                                 "http://user:pw-9f8e@127.0.0.1:notaport/x.pyth", "http://user:pw/9f8e@127.0.0.1:9/x"])
def test_an_unreachable_credentialed_url_is_one_line_without_its_password(monkeypatch, tmp_path, url):
    """It was an http.client.InvalidURL traceback naming the password as the port ("nonnumeric port")."""
    monkeypatch.setenv("STREAMREC_CACHE", str(tmp_path / "cache"))
    with pytest.raises(StreamrecError) as error:
        zoo.checkpoint_file(url, show_progress=False)
    message = str(error.value)
    assert "9f8e" not in message and "\n" not in message and ":***@" in message
