"""A sample of the crash tests again, with the simulator answering as AWS does
(tests/realistic.py): a crash mid-apply and its resume (test_destroy_realistic adds a crash
mid-destroy and a destroy after a crashed apply)."""

from tests.realistic import realistic_aws  # noqa: F401 (autouse fixture)
from tests.test_crash_resume import test_resume_after_a_crash_keeps_what_the_state_recorded  # noqa: F401
