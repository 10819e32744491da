"""`python -m askdesk ...`: the same CLI as the `askdesk` command."""

import sys

from .surface.cli import main

sys.exit(main())
