"""``python -m vaeinv.cli``: the ``vaeinv`` command."""

import sys

from .parser import main

sys.exit(main())
