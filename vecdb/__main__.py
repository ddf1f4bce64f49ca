"""``python -m vecdb`` runs the ``vecdb`` command."""
import sys

from vecdb.cli import main

sys.exit(main())
