"""The config file (``stormwatch.yaml``): database, rules files, topics. Named defaults.

```yaml
database: sqlite:///stormwatch.db      # or ${DATABASE_URL}; PostgreSQL: postgresql+psycopg://...
rules: [rules/default.yaml]            # files or directories, relative to this file
topics:
  acme:
    terms: [acme, "acme corp", "@acme", "#acmefail"]
    exclude: ["acme hardware"]
```

Every mistake is one ``ConfigError`` with file, line, key and what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from monitor.errors import ConfigError
from monitor.topics import Topic, term_pattern
from monitor.yamlfile import LineDict, load_yaml, validation_error

DEFAULT_DATABASE = "sqlite:///stormwatch.db"
DEFAULT_BASELINE_BIN = 300          # seconds per baseline bin
DEFAULT_BASELINE_WARMUP = 86400     # history needed before topic baselines speak
BATCH_SIZE = 2000                   # mentions per transaction in replay


def default_rules_path() -> str:
    """The rules that ship with Stormwatch (``rules/default.yaml``)."""
    return str(resources.files("rules").joinpath("default.yaml"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopicSpec(_Strict):
    terms: list[str]
    exclude: list[str] = []

    @field_validator("terms", "exclude")
    @classmethod
    def _terms(cls, v: list[str]) -> list[str]:
        for t in v:
            if not t.strip():
                raise ValueError("terms must not be empty strings")
            term_pattern(t)
        return v

    @field_validator("terms")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a topic needs at least one term")
        return v


class ConfigSpec(_Strict):
    database: str = DEFAULT_DATABASE
    rules: list[str] = []
    topics: dict[str, TopicSpec] = {}


@dataclass(frozen=True)
class Config:
    database: str = DEFAULT_DATABASE
    rules: tuple[str, ...] = ()
    topics: tuple[Topic, ...] = ()
    path: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def rules_paths(self) -> tuple[str, ...]:
        return self.rules or (default_rules_path(),)


def load_config(path: str | None) -> Config:
    """Read a config file; ``None`` gives the embedded defaults (SQLite, shipped rules)."""
    if path is None:
        return Config()
    data = load_yaml(path)
    if data is None:
        data = LineDict()
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of settings (database, rules, topics)",
                          path=path, line=getattr(data, "line", 1) or 1)
    try:
        spec = ConfigSpec.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, data, path, "topic", ConfigSpec) from None
    base = os.path.dirname(os.path.abspath(path))
    rules = tuple(p if os.path.isabs(p) else os.path.join(base, p) for p in spec.rules)
    topics = tuple(Topic(name=name, terms=tuple(t.terms), exclude=tuple(t.exclude))
                   for name, t in spec.topics.items())
    database = spec.database
    if database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        rel = database.removeprefix("sqlite:///")
        if rel and not os.path.isabs(rel) and rel != ":memory:":
            database = "sqlite:///" + os.path.join(base, rel)
    return Config(database=database, rules=rules, topics=topics, path=path)
