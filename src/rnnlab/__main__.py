"""``python -m rnnlab``: the ``rnnlab`` command line."""
import sys

from .cli import main

sys.exit(main())
