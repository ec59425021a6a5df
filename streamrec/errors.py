"""The one exception type users see, and the check every path a user names for output passes.

Anything a user can fix (a bad config key, a missing file, an unreachable camera) raises
`StreamrecError` with a single line naming the problem and the fix; the CLI prints that
line and exits non-zero instead of showing a traceback.

`check_output_path` lives here because every writer of a user-named file or folder (export
``--output``, bench ``--json``/``--markdown``/``--plot``, ``--event-log``, ``--output-video``,
``--timeline``, ``keys --dir``, ...) raises the same errors for the same mistakes: one helper,
not a copy per writer.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from streamrec.redaction import redact

# "scheme://" as typed, or "scheme:/" as a Path leaves it (Path("ftp://h/x") is "ftp:/h/x"). Two
# letters at least, so a Windows drive ("C:/") is a path. A folder really named "name:" is still
# reachable as "./name:/...".
URL_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")


class StreamrecError(Exception):
    """A problem the user can fix; ``str(err)`` is the one-line message shown to them."""


def check_output_path(path: str | os.PathLike, flag: str | None = None, *, folder: bool = False) -> Path:
    """``path`` as a `Path` when streamrec may write there, else the one-line `StreamrecError`
    naming ``flag`` (the option or setting the user gave it with). Checks only, creates nothing.

    Refused, for a file: a URL (these options write local files only; its password is masked in
    the line), an existing folder, and anything existing that is not a regular file (a device
    such as /dev/full, a FIFO, a socket), which writing would replace or block on. A symbolic link
    to a regular file is a regular file. With ``folder`` (a folder written into), a URL and an
    existing non-folder. Both: a parent that exists but is not a folder.
    """
    text = os.fspath(path)
    named = f"{flag} {text}" if flag else text
    kind = "folder" if folder else "file"
    if URL_PREFIX.match(text):
        raise StreamrecError(redact(f"{named} is a URL, but {flag or 'this'} takes a local {kind} only (nothing is "
                                    "uploaded); give a path on this machine"))
    if not text.strip():
        raise StreamrecError(f"{named or 'the output path'} is empty; give a {kind} path")
    target = Path(text)
    try:
        mode = target.stat().st_mode
    except OSError:  # none there, or a parent that is a file (said below); EACCES: the writer says it
        mode = None
    if mode is not None:
        if folder and not stat.S_ISDIR(mode):
            raise StreamrecError(redact(f"cannot write into {named}: it is not a folder; give a folder (or a new "
                                        "name) to write into"))
        if not folder and stat.S_ISDIR(mode):
            raise StreamrecError(redact(f"cannot write {named}: it is a folder; give a file name (e.g. "
                                        f"{target / _example(flag)})"))
        if not folder and not stat.S_ISREG(mode):
            raise StreamrecError(redact(f"cannot write {named}: it is a {_file_kind(mode)}, not a regular file, "
                                        "which writing would replace or block on; give the path of a regular file"))
        return target
    for parent in target.absolute().parents:  # the nearest one that exists must be a folder
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise StreamrecError(redact(f"cannot write {named}: {parent} is not a folder; give a path inside "
                                            "a folder"))
            break
    return target


def check_figure_path(path: str | os.PathLike, flag: str) -> Path:
    """`check_output_path` for a matplotlib figure, and a format matplotlib writes (.png, .svg,
    .pdf, ...): a run should not end in a traceback after it has done its work."""
    target = check_output_path(path, flag)
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise StreamrecError(f"{flag} needs matplotlib: pip install 'streamrec[plots]'") from None
    formats = Figure().canvas.get_supported_filetypes()
    if target.suffix.lower().lstrip(".") not in formats:
        raise StreamrecError(redact(f"{flag} {os.fspath(path)}: use a file name ending in .png, .svg or .pdf "
                                    f"(matplotlib writes {', '.join('.' + f for f in sorted(formats))})"))
    return target


def why_not_a_file(path: str | os.PathLike) -> str:
    """What stands at ``path`` where a file to read was wanted: "not found", "is a folder, not a
    file" or "is a device, not a regular file" (a FIFO, a socket...)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "not found"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    return f"is a {_file_kind(mode)}, not a regular file"


def _file_kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _example(flag: str | None) -> str:
    """A file name to suggest inside a folder given for ``flag``."""
    names = {"--output": "model.onnx", "--output-video": "out.mp4", "--timeline": "timeline.png",
             "--json": "report.json", "--markdown": "BENCHMARKS.md", "--plot": "plot.png",
             "--event-log": "events.jsonl"}
    return names.get(flag or "", "out")
