"""``python -m fastrec``: the same as the ``fastrec`` command."""
import sys

from .cli import main

sys.exit(main())
