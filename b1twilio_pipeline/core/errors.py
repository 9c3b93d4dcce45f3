"""The one exception type every configuration problem raises: its message is a single line saying what is
wrong and how to fix it, which the CLI and the code location print without a traceback."""


class ConfigurationError(Exception):
    """A setting, secret or rules file is missing or invalid."""
