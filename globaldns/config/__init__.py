"""Configuration: model (frozen dataclasses with reasoned defaults), parse (errors with
file + key path), default.yaml (the embedded default)."""

from globaldns.config.model import Config
from globaldns.config.parse import ConfigError, load, load_default, parse_text

__all__ = ["Config", "ConfigError", "load", "load_default", "parse_text"]
