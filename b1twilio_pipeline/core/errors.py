"""The one exception type every configuration problem raises: its message is a single line saying what is
wrong and how to fix it, which the CLI and the code location print without a traceback."""


class ConfigurationError(Exception):
    """A setting, secret or rules file is missing or invalid."""


class FileConfigError(ConfigurationError):
    """A configuration file (the rules file, the companies file) is invalid; the message is one line naming
    the file, the entry and the field. A value quoted from the file keeps its line breaks and control
    characters visible as escapes (`\\n`), so the message stays one line whatever the file holds."""

    def __init__(self, message: str) -> None:
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in message))
