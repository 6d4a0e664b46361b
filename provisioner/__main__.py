import os
import sys

from .cli import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The state file is written atomically after every change, so stopping here
        # loses nothing; the next run takes over this run's lock and resumes.
        sys.stderr.write("\ninterrupted: run the same command again to resume\n")
        sys.stderr.flush()
        os._exit(130)
