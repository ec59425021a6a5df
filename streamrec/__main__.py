"""``python -m streamrec``: the command line, as ``run_stream.py`` and ``streamrec`` run it."""

import sys

from streamrec import interrupts

interrupts.install()  # first: a Ctrl-C while the rest loads stops cleanly too

from streamrec.cli import main  # noqa: E402

sys.exit(main())
