"""``python -m harness`` is ``nn-parity``."""

import sys

from harness.cli import main

sys.exit(main())
