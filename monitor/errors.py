"""Stormwatch's error tree. Only these cross module boundaries.

    StormwatchError                 anything Stormwatch reports to a person
    ├── UsageError                  bad command-line usage                (exit 2)
    ├── ConfigError                 a config or rules file is wrong       (exit 2)
    │   └── RulesError              ... a rules file specifically
    ├── DumpError                   a dump cannot be opened or read at all (exit 1)
    ├── StoreError                  the database refused or is unreachable (exit 1)
    ├── NotFound                    no record with the id asked for         (exit 2)
    └── RuleTestFailure             `rules test` found failing cases      (exit 1)

Errors that point into a file carry ``path`` and ``line`` so the command line can
print them the way a compiler does: ``rules/default.yaml:12: rule 'x': ...``.
"""

from __future__ import annotations


class StormwatchError(Exception):
    """Base of every error Stormwatch reports to a person."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.hint = hint

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        text = f"{where}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class UsageError(StormwatchError):
    exit_code = 2


class ConfigError(StormwatchError):
    exit_code = 2


class RulesError(ConfigError):
    pass


class DumpError(StormwatchError):
    exit_code = 1


class StoreError(StormwatchError):
    exit_code = 1


class NotFound(StormwatchError):
    exit_code = 2


class RuleTestFailure(StormwatchError):
    exit_code = 1
