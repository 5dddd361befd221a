"""``python -m pyksm``."""

import sys

from pyksm.cli import main

sys.exit(main())
