"""Job entry point for a Flink cluster: `flink run -py job/main.py --bootstrap HOST:PORT [options]`.

The same as `freshrank run`; every option of `freshrank run --help` applies.
"""

import sys
from pathlib import Path

# `flink run -py` executes this file as a script: make the project importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from job.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
