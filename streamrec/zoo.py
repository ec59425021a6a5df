"""Pretrained weights by name or URL: ``--checkpoint zoo:x3d_m_k400`` or ``--checkpoint https://...``.

`ZOO` is the one table of the model-zoo files this project reads, each naming the document that
publishes its URL and the config its weights fit. A file is downloaded once into the cache
(`cache_dir`: ``$STREAMREC_CACHE``, else ``$XDG_CACHE_HOME/streamrec/checkpoints`` or
``~/.cache/streamrec/checkpoints``), under its host and path, so later runs (and offline ones) use
the copy. A download goes to ``<file>.part`` first: an interrupted one resumes from there on the
next run (an HTTP range request), and the file only takes its name once it is complete and, where
a hash is published, matches it (torchvision's file names carry the first hex digits of their
SHA-256, ``r2plus1d_18-91a641e6.pth``; a mismatch deletes the download). Loading is then the same
safe loader as for any local file (`streamrec.checkpoints.load_checkpoint`).

A URL may carry a user name and password (``https://user:pw@host/x.pyth``, percent-encoded or as
typed, read by the rule the mask reads them by: `streamrec.redaction.split_userinfo`): they are
taken out of the URL and sent as HTTP basic auth, to that host only (not to one a redirect names),
and every message shows the URL masked.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TextIO

from streamrec.errors import StreamrecError
from streamrec.redaction import redact, split_userinfo

ZOO_PREFIX = "zoo:"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")  # torch.hub's convention: name-<sha256 prefix>.ext


@dataclass(frozen=True)
class ZooEntry:
    """A published checkpoint: where it is, who publishes it, and the config its weights fit."""

    url: str
    config: str  # a config in configs/
    source: str  # the document that publishes the URL (and the hash, where there is one)
    sha256: str | None = None  # the published SHA-256 or its published prefix
    model: Mapping[str, Any] = field(default_factory=dict)  # model values this file's layout needs beyond the config's


_PYSLOWFAST = "https://dl.fbaipublicfiles.com/pyslowfast"
_PYSLOWFAST_DOC = "facebookresearch/SlowFast MODEL_ZOO.md"
_MVITV2_DOC = "facebookresearch/SlowFast projects/mvitv2/README.md (and MODEL_ZOO.md)"
_PTV = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
_PTV_DOC = "facebookresearch/pytorchvideo docs/source/model_zoo.md"
_PTV_MOBILE_DOC = "facebookresearch/pytorchvideo docs/source/model_zoo.md (Accelerator Model Zoo)"
_TV = "https://download.pytorch.org/models"
_TV_DOC = "pytorch/vision torchvision/models/video/{}.py (the weights' url; the hash is in the file name)"
_PYSLOWFAST_X3D = {"stride_shortcut_bn": True}  # PySlowFast's X3D normalises res2's strided shortcut

# name -> entry. Names are <config>_k400 for the first source listed, <config>_k400_<source> for others.
ZOO: dict[str, ZooEntry] = {
    # PySlowFast (Caffe2 model zoo .pkl and PyTorch .pyth)
    "slowfast_r50_8x8_k400": ZooEntry(f"{_PYSLOWFAST}/model_zoo/kinetics400/SLOWFAST_8x8_R50.pkl", "slowfast_r50_8x8",
                                      _PYSLOWFAST_DOC),
    "slowfast_r50_4x16_k400": ZooEntry(f"{_PYSLOWFAST}/model_zoo/kinetics400/SLOWFAST_4x16_R50.pkl",
                                       "slowfast_r50_4x16", _PYSLOWFAST_DOC),
    "slow_r50_8x8_k400": ZooEntry(f"{_PYSLOWFAST}/model_zoo/kinetics400/SLOWONLY_8x8_R50.pkl", "slow_r50_8x8",
                                  _PYSLOWFAST_DOC),
    "i3d_r50_8x8_k400": ZooEntry(f"{_PYSLOWFAST}/model_zoo/kinetics400/I3D_8x8_R50.pkl", "i3d_r50_8x8",
                                 _PYSLOWFAST_DOC),
    "i3d_nln_r50_8x8_k400": ZooEntry(f"{_PYSLOWFAST}/model_zoo/kinetics400/I3D_NLN_8x8_R50.pkl", "i3d_nln_r50_8x8",
                                     _PYSLOWFAST_DOC),
    "x3d_xs_k400": ZooEntry(f"{_PYSLOWFAST}/x3d_models/x3d_xs.pyth", "x3d_xs", _PYSLOWFAST_DOC, None, _PYSLOWFAST_X3D),
    "x3d_s_k400": ZooEntry(f"{_PYSLOWFAST}/x3d_models/x3d_s.pyth", "x3d_s", _PYSLOWFAST_DOC, None, _PYSLOWFAST_X3D),
    "x3d_m_k400": ZooEntry(f"{_PYSLOWFAST}/x3d_models/x3d_m.pyth", "x3d_m", _PYSLOWFAST_DOC, None, _PYSLOWFAST_X3D),
    "x3d_l_k400": ZooEntry(f"{_PYSLOWFAST}/x3d_models/x3d_l.pyth", "x3d_l", _PYSLOWFAST_DOC, None, _PYSLOWFAST_X3D),
    "mvitv2_s_16x4_k400": ZooEntry(
        f"{_PYSLOWFAST}/model_zoo/mvitv2/pysf_video_models/MViTv2_S_16x4_k400_f302660347.pyth", "mvitv2_s_16x4",
        _MVITV2_DOC),
    "mvitv2_b_32x3_k400": ZooEntry(
        f"{_PYSLOWFAST}/model_zoo/mvitv2/pysf_video_models/MViTv2_B_32x3_k400_f304025456.pyth", "mvitv2_b_32x3",
        _MVITV2_DOC),
    # PyTorchVideo (its model zoo's .pyth files, as its torch.hub entry points download them)
    "slowfast_r50_8x8_k400_pytorchvideo": ZooEntry(f"{_PTV}/SLOWFAST_8x8_R50.pyth", "slowfast_r50_8x8", _PTV_DOC),
    "slowfast_r50_4x16_k400_pytorchvideo": ZooEntry(f"{_PTV}/SLOWFAST_4x16_R50.pyth", "slowfast_r50_4x16", _PTV_DOC),
    "slowfast_r101_8x8_k400": ZooEntry(f"{_PTV}/SLOWFAST_8x8_R101.pyth", "slowfast_r101_8x8", _PTV_DOC),
    "slowfast_r101_16x8_k400": ZooEntry(f"{_PTV}/SLOWFAST_16x8_R101_50_50.pyth", "slowfast_r101_16x8", _PTV_DOC),
    "slow_r50_8x8_k400_pytorchvideo": ZooEntry(f"{_PTV}/SLOW_8x8_R50.pyth", "slow_r50_8x8", _PTV_DOC),
    "i3d_r50_8x8_k400_pytorchvideo": ZooEntry(f"{_PTV}/I3D_8x8_R50.pyth", "i3d_r50_8x8", _PTV_DOC),
    "c2d_r50_k400": ZooEntry(f"{_PTV}/C2D_8x8_R50.pyth", "c2d_r50", _PTV_DOC),
    "csn_r101_k400": ZooEntry(f"{_PTV}/CSN_32x2_R101.pyth", "csn_r101", _PTV_DOC),
    "r2plus1d_r50_k400": ZooEntry(f"{_PTV}/R2PLUS1D_16x4_R50.pyth", "r2plus1d_r50", _PTV_DOC),
    "x3d_xs_k400_pytorchvideo": ZooEntry(f"{_PTV}/X3D_XS.pyth", "x3d_xs", _PTV_DOC),
    "x3d_s_k400_pytorchvideo": ZooEntry(f"{_PTV}/X3D_S.pyth", "x3d_s", _PTV_DOC),
    "x3d_m_k400_pytorchvideo": ZooEntry(f"{_PTV}/X3D_M.pyth", "x3d_m", _PTV_DOC),
    "x3d_l_k400_pytorchvideo": ZooEntry(f"{_PTV}/X3D_L.pyth", "x3d_l", _PTV_DOC),
    "efficient_x3d_xs_k400": ZooEntry(f"{_PTV}/efficient_x3d_xs_original_form.pyth", "efficient_x3d_xs",
                                      _PTV_MOBILE_DOC),
    "efficient_x3d_s_k400": ZooEntry(f"{_PTV}/efficient_x3d_s_original_form.pyth", "efficient_x3d_s", _PTV_MOBILE_DOC),
    "mvit_b_16x4_k400": ZooEntry(f"{_PTV}/MVIT_B_16x4.pyth", "mvit_b_16x4", _PTV_DOC),
    "mvit_b_32x3_k400": ZooEntry(f"{_PTV}/MVIT_B_32x3_f294077834.pyth", "mvit_b_32x3", _PTV_DOC),
    # torchvision (its weights enums; each file name carries its SHA-256 prefix)
    "r2plus1d_18_k400": ZooEntry(f"{_TV}/r2plus1d_18-91a641e6.pth", "r2plus1d_18", _TV_DOC.format("resnet"),
                                 "91a641e6"),
    "s3d_k400": ZooEntry(f"{_TV}/s3d-d76dad2f.pth", "s3d", _TV_DOC.format("s3d"), "d76dad2f"),
    "mvit_b_16x4_k400_torchvision": ZooEntry(f"{_TV}/mvit_v1_b-dbeb1030.pth", "mvit_b_16x4", _TV_DOC.format("mvit"),
                                             "dbeb1030", {"pool_norm_eps": 1e-6}),
    "mvitv2_s_16x4_k400_torchvision": ZooEntry(f"{_TV}/mvit_v2_s-ae3be167.pth", "mvitv2_s_16x4",
                                               _TV_DOC.format("mvit"), "ae3be167"),
}


def is_remote(reference: str | os.PathLike) -> bool:
    """A zoo name or an http(s) URL, rather than a local path."""
    text = str(reference)
    return text.startswith(ZOO_PREFIX) or text.startswith(("https://", "http://"))


def zoo_entry(reference: str) -> ZooEntry:
    """The entry ``zoo:NAME`` names, or a clear error with the closest names."""
    name = reference[len(ZOO_PREFIX):] if reference.startswith(ZOO_PREFIX) else reference
    if name not in ZOO:
        close = difflib.get_close_matches(name, ZOO, n=3)
        hint = f"did you mean {', '.join(ZOO_PREFIX + c for c in close)}? " if close else ""
        raise StreamrecError(f"no zoo checkpoint '{name}'; {hint}the zoo has: {', '.join(sorted(ZOO))}")
    return ZOO[name]


def cache_dir() -> Path:
    """Where downloads are kept: ``$STREAMREC_CACHE``, else the user's cache folder."""
    if os.environ.get("STREAMREC_CACHE"):
        return Path(os.environ["STREAMREC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamrec" / "checkpoints"


def checkpoint_file(reference: str | os.PathLike, *, show_progress: bool = True) -> Path:
    """The local file of a checkpoint reference: a zoo name or URL, downloaded into the cache unless it
    is there already (a progress bar on stderr meanwhile); a local path as it is."""
    text = str(reference)
    if not is_remote(text):
        return Path(text)
    if text.startswith(ZOO_PREFIX):
        entry = zoo_entry(text)
        url, sha256 = entry.url, entry.sha256
    else:
        url, sha256 = text, None
        named = HASH_IN_NAME.search(Path(urllib.parse.urlsplit(split_userinfo(url)[1]).path).name)
        sha256 = named[1] if named else None
    destination = cached_path(url)
    if destination.is_file():
        return destination
    return download(url, destination, sha256=sha256, progress=sys.stderr if show_progress else None)


def cached_path(url: str) -> Path:
    """The cache file of a URL: its host and path under `cache_dir` (two files of one name stay apart)."""
    try:
        parts = urllib.parse.urlsplit(split_userinfo(url)[1])
        hostname = parts.hostname
    except ValueError:  # an unclosed "[IPv6"
        hostname = None
    segments = [urllib.parse.unquote(s) for s in parts.path.split("/") if s] if hostname else []
    if not hostname or not segments or any(s in (".", "..") or "\\" in s for s in segments):
        raise StreamrecError(f"checkpoint URL {redact(url)} names no file; pass the URL of a checkpoint file")
    return cache_dir().joinpath(hostname, *segments)


def download(url: str, destination: Path, *, sha256: str | None = None, progress: TextIO | None = None) -> Path:
    """Fetch ``url`` into ``destination`` by way of ``destination.part``, resuming a partial download,
    then check the published hash (full or prefix) where there is one; ``progress``: where the bar goes."""
    partial = destination.with_name(destination.name + ".part")
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.is_file() else 0
    userinfo, bare = split_userinfo(url)
    try:
        response = _open(bare, userinfo, have)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the partial file is whole
            return _finish(partial, destination, url, sha256)
        if exc.code in (401, 403):
            hint = ("check the user name and password in it" if userinfo else
                    "the server asks for a user name and password: put USER:PASSWORD@ before the URL's host")
        else:
            hint = "check the URL"
        raise StreamrecError(f"download of {redact(url)} failed: HTTP {exc.code} {exc.reason}; {hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", exc)  # the URL without its user-info was opened: no password in it
        raise StreamrecError(f"cannot download {redact(url)} ({redact(str(reason))}); check the network, or "
                             "download the file yourself and pass its path to --checkpoint") from None
    with response:
        if have and response.status != 206:  # the server ignored the range: start again
            have = 0
        total = _total_bytes(response, have)
        bar = ProgressBar(destination.name, total, progress)
        try:
            with partial.open("ab" if have else "wb") as file:
                while chunk := response.read(CHUNK_BYTES):
                    file.write(chunk)
                    have += len(chunk)
                    bar.show(have)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError):
            pass  # judged by the byte count below
        finally:
            bar.close()
    if total is not None and have < total:
        raise StreamrecError(f"download of {redact(url)} stopped at {have} of {total} bytes; run the command "
                             f"again to resume it (kept in {partial})")
    return _finish(partial, destination, url, sha256)


def _open(url: str, userinfo: str | None, have: int) -> http.client.HTTPResponse:
    """``url`` (no user-info in it) opened from byte ``have`` on; ``userinfo`` (``user:password``,
    percent-encoded or not) sent as HTTP basic auth from the first request on, to this scheme, host
    and port only: a redirect elsewhere does not get it."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    handlers = []
    if userinfo:
        user, _, password = userinfo.partition(":")
        parts = urllib.parse.urlsplit(url)
        passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
        passwords.add_password(None, f"{parts.scheme}://{parts.netloc}/", urllib.parse.unquote(user),
                               urllib.parse.unquote(password), is_authenticated=True)
        handlers.append(urllib.request.HTTPBasicAuthHandler(passwords))
    return urllib.request.build_opener(*handlers).open(request, timeout=TIMEOUT_S)


def _total_bytes(response: http.client.HTTPResponse, have: int) -> int | None:
    """The whole file's size: from Content-Range on a resumed download, else Content-Length."""
    content_range = response.headers.get("Content-Range", "")
    if m := re.fullmatch(r"bytes \d+-\d+/(\d+)", content_range.strip()):
        return int(m[1])
    length = response.headers.get("Content-Length")
    return have + int(length) if length and length.isdigit() else None


def _finish(partial: Path, destination: Path, url: str, sha256: str | None) -> Path:
    if sha256:
        digest = sha256_of(partial)
        if not digest.startswith(sha256.lower()):
            partial.unlink()
            raise StreamrecError(f"download of {redact(url)} does not match its published SHA-256 ({sha256}...; got "
                                 f"{digest[:len(sha256)]}...): deleted it; run again to download it afresh, "
                                 "or check the URL")
    partial.replace(destination)
    return destination


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


class ProgressBar:
    """One line on ``stream``, redrawn at most ten times a second: ``name [#####-----] 52% 61.3/118.0 MB``."""

    WIDTH = 30

    def __init__(self, name: str, total: int | None, stream: TextIO | None):
        self.name, self.total, self.stream = name, total, stream
        self.drawn_at = 0.0
        self.last = 0

    def show(self, done: int, force: bool = False) -> None:
        self.last = done
        now = time.monotonic()
        if self.stream is None or (not force and now - self.drawn_at < 0.1):
            return
        self.drawn_at = now
        megabytes = f"{done / 1e6:.1f}"
        if self.total:
            filled = int(self.WIDTH * min(done / self.total, 1.0))
            line = (f"{self.name} [{'#' * filled}{'-' * (self.WIDTH - filled)}] {100 * done // self.total:3d}% "
                    f"{megabytes}/{self.total / 1e6:.1f} MB")
        else:
            line = f"{self.name} {megabytes} MB"
        self.stream.write("\r" + line)
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.show(self.last, force=True)
            self.stream.write("\n")
            self.stream.flush()
