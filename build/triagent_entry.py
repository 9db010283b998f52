"""PyInstaller entry script for the `triagent` onefile binary (console script `triagent = agent.cli:main`).

Kept in build/ so the package code never needs a `__main__` of its own for freezing.
"""

import sys

from agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
