"""One error type per stage. Only cli.py catches them and maps them to exit 2.

Each message is meant for a person: one paragraph that names the culprit
(the file, the line, the symbol, the command) and, where it helps, what to do.
"""


class HarnessError(Exception):
    """The harness could not do its job (exit 2)."""

    stage = "harness"


class SpecError(HarnessError):
    stage = "spec"


class SourceError(HarnessError):
    stage = "source"


class ConfigError(HarnessError):
    stage = "config"


class BuildError(HarnessError):
    stage = "build"


class BootError(HarnessError):
    stage = "boot"


class GuestError(HarnessError):
    stage = "guest"


class ToolMissing(HarnessError):
    stage = "setup"
