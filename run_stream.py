#!/usr/bin/env python3
"""streamrec command line: `python run_stream.py --help`."""

import sys

from streamrec import interrupts

interrupts.install()  # first: a Ctrl-C while the rest loads stops cleanly too

from streamrec.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
