"""``python -m deu.benchmark`` (``make bench``)."""

import sys

from deu.benchmark.report import main

sys.exit(main())
