"""``python -m spangraph.cli``: the ``spangraph`` command."""

import sys

from ._main import main

sys.exit(main())
