"""``run_stream.py keys``: make a CURVE key pair for the event socket (publisher or subscriber)."""

from __future__ import annotations

import argparse
import os
import re

from streamrec.errors import StreamrecError, check_output_path

KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # a file name, never a path: --dir says where


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="key pair name, e.g. 'server' or 'dashboard'")
    parser.add_argument("--dir", default="keys", help="folder to write NAME.key and NAME.key_secret into (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    import zmq.auth

    if not KEY_NAME.fullmatch(args.name):
        raise StreamrecError(f"key name {args.name!r} must be a plain name of letters, digits, '_', '-' and '.' (at "
                             "most 64, e.g. 'server'); choose the folder with --dir")
    folder = check_output_path(args.dir, "--dir", folder=True)  # a local folder (or none yet), never a URL
    public_file, secret_file = folder / f"{args.name}.key", folder / f"{args.name}.key_secret"
    if public_file.exists() or secret_file.exists():
        raise StreamrecError(f"{public_file} already exists; choose another name or remove the old pair first")
    umask = os.umask(0o077)  # the secret file is never readable by others, not even for a moment
    try:
        folder.mkdir(parents=True, exist_ok=True)
        zmq.auth.create_certificates(str(folder), args.name)
    except OSError as exc:
        raise StreamrecError(f"cannot write keys into {folder}: {exc.strerror}; pass a folder you may write with "
                             "--dir") from None
    finally:
        os.umask(umask)
    os.chmod(public_file, 0o644 & ~umask)  # the public one is for sharing
    print(f"public key: {public_file}  (give to the other side; subscribers' public keys go in the "
          "publisher's events.curve_allowed_clients folder)")
    print(f"secret key: {secret_file}  (keep private; readable by you only)")
    return 0
