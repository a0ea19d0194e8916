from __future__ import annotations

import os
import sys

from .cli import main

try:
    sys.exit(main())
except BrokenPipeError:
    # The reader (such as `head`) went away; stop quietly, as Unix tools do.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(1)
