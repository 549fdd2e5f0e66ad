"""Config, rules and topics, validated before anything runs (bad ones raise ConfigError).

Light on purpose: the command line validates and starts reading the input before the
engine, the database layer and the sentiment model are even imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.config import Config, load_config
from monitor.errors import UsageError
from monitor.rules import RuleSet, load_rules
from monitor.topics import TopicMatcher


@dataclass
class Setup:
    config: Config
    rules: RuleSet
    matcher: TopicMatcher


def setup(config_path: str | None, rules_paths: Sequence[str] = (),
          match: Sequence[str] = ()) -> Setup:
    """Load and cross-check the config, the rules and the topics (or ``--match`` terms)."""
    config = load_config(config_path)
    matcher = TopicMatcher.for_match(match) if match else TopicMatcher(config.topics)
    rules = checked_rules(list(rules_paths) or list(config.rules_paths()), matcher)
    return Setup(config=config, rules=rules, matcher=matcher)


def checked_rules(paths: Sequence[str], matcher: TopicMatcher) -> RuleSet:
    """Load rules files and check them against the topics watched (a reload of a
    running daemon goes through here too)."""
    rules = load_rules(paths)
    for rule in rules.rules:
        unknown = (rule.topics or frozenset()) - set(matcher.names)
        if unknown:
            raise UsageError(f"rule '{rule.name}' names topic(s) {sorted(unknown)} that are "
                             f"not watched here (topics: {', '.join(matcher.names)})",
                             path=rule.path, line=rule.line)
    return rules
