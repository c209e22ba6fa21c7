"""``python -m zeroseg_ros.tools.bench``: the same as ``zeroseg bench``."""

import sys

from zeroseg_ros.tools.bench.cli import main

sys.exit(main())
