"""The few error types the CLI turns into exit codes."""


class UserError(Exception):
    """Bad input (config, state file, arguments): exit code 2, before any AWS call."""

    exit_code = 2


class ConfigError(UserError):
    """One or more config violations, each naming the key and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class StateError(UserError):
    """The state file cannot be trusted; it is left untouched."""


class LockHeld(Exception):
    """Another run holds this deployment's lock."""

    exit_code = 1


class SandboxError(Exception):
    """The sandbox simulator could not be started (nothing is left running)."""

    exit_code = 1


class StepError(Exception):
    """A step cannot proceed for a reason the operator must fix (message says how)."""
