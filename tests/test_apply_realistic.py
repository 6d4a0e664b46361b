"""tests/test_apply.py again, with the simulator answering as AWS does (tests/realistic.py)."""

from tests.realistic import realistic_aws  # noqa: F401 (autouse fixture)
from tests.test_apply import *  # noqa: F401,F403 (the same tests)
