"""Reading the operator's YAML files (the rules file, the companies file): safe YAML that refuses a key
given twice, and one-line errors that name the file and say how to fix it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from b1twilio_pipeline.core.errors import ConfigurationError


class UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping: PyYAML would keep the last one silently,
    so a second `template:` or a second group of the same name would replace the first unnoticed."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: construct_mapping says so
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice in the same mapping", key_node.start_mark)
        return super().construct_mapping(node, deep)


def read_yaml(source: Path, what: str, hint: str, error: type[ConfigurationError]) -> Any:
    """The parsed content of `source` (a `what`, e.g. "rules file"); `error` (one line, naming the file)
    when it is missing (with `hint`), unreadable, not UTF-8 or not YAML."""
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{source}: {what} not found: {hint}") from None
    except OSError as exc:
        raise error(f"{source}: cannot read {what}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"{source}: {what} is not UTF-8 text") from None
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise error(f"{source}: {where}YAML syntax error: {problem}") from None
    except RecursionError:
        raise error(too_deeply_nested(source, what)) from None


def too_deeply_nested(source: Path, what: str) -> str:
    """What to say about a file nested too deeply for the parser (or the models after it)."""
    return f"{source}: nested too deeply to be a {what} (lists or mappings inside each other thousands of " \
           "levels deep)"
