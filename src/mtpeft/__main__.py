"""``python -m mtpeft``: the same as the ``mtpeft`` command."""

import sys

from mtpeft.cli import main

sys.exit(main())
