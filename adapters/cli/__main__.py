"""``python -m chatledger.adapters.cli``: the same as the ``chatledger`` command."""

import sys

from chatledger.adapters.cli.main import main

sys.exit(main())
