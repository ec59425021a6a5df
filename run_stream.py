#!/usr/bin/env python3
"""streamrec command line: `python run_stream.py --help`."""

import sys

from streamrec.cli import main

if __name__ == "__main__":
    sys.exit(main())
