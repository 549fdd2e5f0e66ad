"""YAML that remembers where things are, and errors that say so.

``load_yaml(path)`` returns plain dicts and lists (``LineDict``, ``LineList``) that also
know the line of every key and item, refuses duplicate keys (PyYAML silently keeps the
last one), and expands ``${VAR}`` from the environment in strings. ``validation_error``
turns a pydantic ``ValidationError`` into one ``ConfigError`` that names the file, the
line, the place, what was expected and what was found, with a "did you mean".
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from monitor.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class LineDict(dict[Any, Any]):
    line: int = 0
    key_lines: dict[Any, int]


class LineList(list[Any]):
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    path = ""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in out:
            raise ConfigError(f"duplicate key '{key}' (first at line {out.key_lines[key]})",
                              path=loader.path, line=line, hint="remove one of them")
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [n.start_mark.line + 1 for n in node.value]
    return out


def _string(loader: _Loader, node: yaml.ScalarNode) -> str:
    value = loader.construct_scalar(node)
    return expand_env(str(value), loader.path, node.start_mark.line + 1)


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _sequence)
_Loader.add_constructor("tag:yaml.org,2002:str", _string)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _string)  # times stay text


def expand_env(text: str, path: str = "", line: int | None = None) -> str:
    """``${VAR}`` and ``${VAR:-default}`` from the environment; a missing VAR is an error."""
    if "${" not in text:
        return text

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            if m.group(2) is not None:
                return m.group(2)
            raise ConfigError(f"environment variable {m.group(1)} is not set", path=path,
                              line=line, hint=f"export {m.group(1)}=... or give a default: "
                              f"${{{m.group(1)}:-value}}")
        return value

    return _ENV.sub(sub, text)


def load_yaml_text(text: str, path: str) -> Any:
    loader = _Loader(text)
    loader.path = path
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"not valid YAML: {e.problem or e}", path=path, line=line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", path=path) from None
    finally:
        loader.dispose()


def load_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError("file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", path=path) from None
    return load_yaml_text(text, path)


def line_of(data: Any, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest place in ``data`` that ``loc`` reaches."""
    line = getattr(data, "line", None) or None
    node = data
    for part in loc:
        if isinstance(node, LineDict) and part in node:
            line = node.key_lines.get(part, line)
            node = node[part]
        elif isinstance(node, LineList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.item_lines[part]
            node = node[part]
        else:
            break
        inner = getattr(node, "line", None)
        if inner and not isinstance(node, LineList | LineDict):
            line = inner
    return line


def _place(loc: tuple[Any, ...], data: Any, label: str) -> str:
    """'rule 'name', key 'when.mentions'' from a pydantic location."""
    parts = [str(p) for p in loc if not isinstance(p, int) and p != "[key]"]
    node, named = data, ""
    for p in loc:
        if isinstance(node, Mapping) and p in node or isinstance(node, list) and isinstance(
                p, int) and p < len(node):
            node = node[p]
            if isinstance(node, Mapping) and isinstance(node.get("name"), str) and not named:
                named = f"{label} '{node['name']}'"
    where = ".".join(parts[1:] if named and len(parts) > 1 else parts)
    return ", ".join(x for x in (named, f"key '{where}'" if where else "") if x)


def validation_error(err: ValidationError, data: Any, path: str, label: str,
                     model: type[BaseModel] | None = None) -> ConfigError:
    """One precise ConfigError for the first problem pydantic found."""
    errors = err.errors(include_url=False)
    # a misspelt key also makes the real one "missing": report the misspelling first
    first = min(errors, key=lambda e: (e["type"] == "missing", len(e["loc"])))
    loc = _without_tags(tuple(first["loc"]), data)
    line = line_of(data, loc)
    found = first.get("input")
    kind = first["type"]
    place = _place(loc, data, label)
    more = len(err.errors()) - 1
    tail = f" ({more} more problem{'s' if more > 1 else ''} after this one)" if more else ""
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1]) if model else None
        valid = sorted(_fields(parent)) if parent else []
        guess = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = (f"did you mean '{guess[0]}'? " if guess else "") + (
            f"valid keys: {', '.join(valid)}" if valid else "")
        return ConfigError(f"{place}: unknown key '{loc[-1]}'{tail}", path=path, line=line,
                           hint=hint or None)
    if kind == "missing":
        return ConfigError(f"{place}: required key missing{tail}", path=path, line=line)
    msg = first["msg"].removeprefix("Value error, ")
    if loc and loc[-1] == "[key]":
        return ConfigError(f"{place}: {msg}{tail}", path=path, line=line)
    shown = f", found {found!r}" if not isinstance(found, dict | list) else ""
    return ConfigError(f"{place}: {msg}{shown}{tail}", path=path, line=line)


def _without_tags(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """A location without the tags pydantic adds for a union chosen by ``type``
    (``channels.pr.email.to`` is ``channels.pr.to`` in the file)."""
    out, node = [], data
    for p in loc:
        if isinstance(node, Mapping) and p not in node and node.get("type") == p:
            continue
        out.append(p)
        if isinstance(node, Mapping) and p in node or isinstance(node, list) and isinstance(
                p, int) and p < len(node):
            node = node[p]
        else:
            node = None
    return tuple(out)


def _fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Follow a pydantic location through nested models (lists and dicts skipped)."""
    import typing

    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = None
        for name, f in current.model_fields.items():
            if part in (name, f.alias):
                field = f
        if field is None:
            return None
        current = field.annotation
        for _ in range(3):  # unwrap list[X], X | None, dict[str, X]
            args = [a for a in typing.get_args(current) if a is not type(None)]
            if isinstance(current, type) and issubclass(current, BaseModel):
                break
            current = args[-1] if args else current
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None
