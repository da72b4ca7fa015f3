"""One configuration object per job: loaded from a file, overridable from the
command line, validated up front.

A job declares a pydantic model; `parse_job_config` turns it into a command
line automatically, so every field is settable three ways, later ones winning:

    defaults  <  --config FILE (YAML or JSON)  <  --set a.b=value  <  --field-name value

Validation errors exit with status 2 and a message naming the field, the bad
value and where it came from, before any Spark session or worker starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound=BaseModel)


def is_remote(location: str) -> bool:
    """True for a URI with a scheme other than file (s3a://, hdfs://, gs://, ...)."""
    return "://" in location and not location.startswith("file:")


def absolute_location(location: str) -> str:
    """A local path -> an absolute path (relative to the working directory, `~` expanded);
    a `file:` URI -> its absolute local path; any other URI unchanged.

    Jobs resolve every path once, when their config is validated: Spark, Delta
    (`DeltaTable...location(...)` takes a relative path for a table NAME), worker
    processes and executors all run with other working directories.
    """
    if is_remote(location):
        return location
    if location.startswith("file:"):
        from urllib.parse import unquote, urlparse

        location = unquote(urlparse(location).path)
    return str(Path(location).expanduser().resolve())


# A config field naming a file, folder or table: absolute once validated.
Location = Annotated[str, AfterValidator(absolute_location)]


class JobConfig(BaseModel):
    """Base for job configs: unknown keys are errors (a typo must not pass silently).
    Defaults are validated too, so a default `Location` is made absolute like a given one."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class ConfigError(SystemExit):
    """Raised (as exit status 2) with a message that says what to fix."""

    def __init__(self, message: str):
        print(f"config error: {message}", file=sys.stderr)
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    args = typing.get_args(annotation)
    return bool(args) and set(args) <= {bool, type(None)}


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(a) for a in typing.get_args(annotation))
    return False


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class _NoDatesLoader(yaml.SafeLoader):
    """YAML without implicit timestamps: `2026-01-01` stays a string that
    pydantic turns into a date (or keeps as a string) by the field's type."""


_NoDatesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _parse_scalar(text: str) -> Any:
    """A `--set` value: a YAML scalar or list (`3`, `true`, `[a, b]`, `null`)."""
    try:
        return yaml.load(text, Loader=_NoDatesLoader)  # noqa: S506 (safe loader subclass)
    except yaml.YAMLError:
        return text


def _accepts_none(annotation: Any) -> bool:
    return annotation is type(None) or type(None) in typing.get_args(annotation)


def _flag_value(text: str, nullable: bool) -> Any:
    """A `--field value`: kept as text for pydantic to coerce by the field's
    type (so `--user 123` stays a string for a str field), except `none`/`null`
    for a field that can be None (a choice named "none" stays a word)."""
    return None if nullable and text.strip().lower() in ("none", "null") else text


def _set_dotted(target: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = target.get(key)
        if not isinstance(node, dict):
            node = target[key] = {}
        target = node
    target[keys[-1]] = value


def mapping_from_text(value: Any) -> Any:
    """A mapping setting given on the command line arrives as text (`--model-params '{num_levels: 2}'`):
    read it as YAML/JSON; anything else passes through for pydantic to validate."""
    if isinstance(value, str):
        parsed = yaml.safe_load(value)
        return {} if parsed is None else parsed
    return value


def load_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_NoDatesLoader)  # noqa: S506; YAML is a superset of JSON
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def _help(text: str) -> str:
    # argparse %-formats help strings (%(default)s): a literal % must be doubled.
    return text.replace("%", "%%")


def build_parser(config_cls: type[BaseModel], prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file with settings for this job")
    parser.add_argument(
        "--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
        help="override any setting, nested ones with dots (repeatable)",
    )
    for name, field in config_cls.model_fields.items():
        help_text = _help(field.description or "")
        if _is_model(field.annotation):
            continue  # nested sections: --config or --set section.key=value
        if _is_bool(field.annotation):
            parser.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        elif _is_sequence(field.annotation):
            parser.add_argument(_flag(name), dest=name, nargs="+", default=argparse.SUPPRESS,
                                metavar="VALUE", help=help_text)
        else:
            shown_default = field.get_default(call_default_factory=True)
            parser.add_argument(_flag(name), dest=name, default=argparse.SUPPRESS, metavar="VALUE",
                                help=f"{help_text} (default: {_help(repr(shown_default))})" if not field.is_required()
                                else f"{help_text} (required)")
    return parser


def _format_validation_error(err: ValidationError, sources: dict[str, str]) -> str:
    lines = []
    for problem in err.errors():
        location = ".".join(str(p) for p in problem["loc"]) or "(config)"
        top = str(problem["loc"][0]) if problem["loc"] else ""
        source = sources.get(top, "defaults")
        value = problem.get("input")
        shown = "" if problem["type"] == "missing" else f" (got {value!r})"
        hint = f"; set it with {_flag(top)} or in --config" if problem["type"] == "missing" else ""
        lines.append(f"  {location}: {problem['msg']}{shown} [from {source}]{hint}")
    return "invalid settings:\n" + "\n".join(lines)


def parse_job_config(
    config_cls: type[T], argv: list[str] | None, prog: str, description: str = ""
) -> T:
    """Parse argv into a validated `config_cls`, or exit 2 with a clear message."""
    parser = build_parser(config_cls, prog, description or (config_cls.__doc__ or "").strip())
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if args.config:
        for key, value in load_config_file(args.config).items():
            values[key] = value
            sources[key] = f"--config {args.config}"
    for override in args.overrides:
        if "=" not in override:
            raise ConfigError(f"--set expects KEY=VALUE, got {override!r}")
        key, raw = override.split("=", 1)
        _set_dotted(values, key.strip(), _parse_scalar(raw))
        sources[key.split(".")[0]] = f"--set {override}"
    for name, field in config_cls.model_fields.items():
        if name in vars(args):
            raw = getattr(args, name)
            nullable = _accepts_none(field.annotation)
            if isinstance(raw, list):
                item = (typing.get_args(field.annotation) or (None,))[0]
                values[name] = [_flag_value(v, _accepts_none(item)) for v in raw]
            else:
                values[name] = raw if isinstance(raw, bool) else _flag_value(raw, nullable)
            sources[name] = _flag(name)
    return validate_config(config_cls, values, sources)


def validate_config(config_cls: type[T], values: dict, sources: dict[str, str] | None = None) -> T:
    try:
        return config_cls.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, sources or {})) from None


def config_as_dict(config: BaseModel) -> dict:
    """JSON-safe dict of a config, for run records."""
    return json.loads(config.model_dump_json())
