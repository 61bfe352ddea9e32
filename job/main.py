"""Job entry point for a Flink cluster: `flink run -py job/main.py --bootstrap HOST:PORT [options]`.

The same job and options as `freshrank run` (job.options); it imports only the job, not the tools.
"""

import argparse
import os
import sys
from pathlib import Path

# `flink run -py` executes this file as a script: make the project importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from job.errors import run_reporting_errors  # noqa: E402
from job.options import add_run_options, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flink run -py job/main.py", description=__doc__)
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("FRESHRANK_DEBUG")),
                        help="show the full traceback of an error (env FRESHRANK_DEBUG=1)")
    add_run_options(parser)
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: run(args), args.debug, prog="freshrank")


if __name__ == "__main__":
    sys.exit(main())
