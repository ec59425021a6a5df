"""``run_stream.py keys``: make a CURVE key pair for the event socket (publisher or subscriber)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from streamrec.errors import StreamrecError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="key pair name, e.g. 'server' or 'dashboard'")
    parser.add_argument("--dir", default="keys", help="folder to write NAME.key and NAME.key_secret into (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    import zmq.auth

    folder = Path(args.dir)
    public_file, secret_file = folder / f"{args.name}.key", folder / f"{args.name}.key_secret"
    if public_file.exists() or secret_file.exists():
        raise StreamrecError(f"{public_file} already exists; choose another name or remove the old pair first")
    folder.mkdir(parents=True, exist_ok=True)
    zmq.auth.create_certificates(str(folder), args.name)
    os.chmod(secret_file, 0o600)
    print(f"public key: {public_file}  (give to the other side; subscribers' public keys go in the "
          "publisher's events.curve_allowed_clients folder)")
    print(f"secret key: {secret_file}  (keep private; readable by you only)")
    return 0
