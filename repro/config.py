"""Experiment configs: one pinned YAML per experiment and tier, resolved with jsonargparse.

A config mirrors the constructors it builds, as LightningCLI configs do::

    model:   {class_path: papers.<paper>.model.<LightningModule>, init_args: {...}}
    data:    {class_path: papers.<paper>.data.<LightningDataModule>, init_args: {...}}
    trainer: {max_epochs: ..., gradient_clip_val: ..., ...}       # lightning.Trainer arguments

Overrides come as dotted keys (``model.lr=0.3``, ``trainer.max_epochs=5``; ``init_args`` may be left out).
Every key is checked against the constructor signatures first, so a typo fails with the key's name and the
nearest valid one instead of jsonargparse's union-type report. The resolved config (all defaults filled in)
is what each run record stores and what ``repro config`` prints.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
from pathlib import Path
from typing import Any

import yaml

SECTIONS = ("model", "data", "trainer")
# Trainer arguments the harness owns: it sets them from the run (loggers, callbacks, folders).
HARNESS_TRAINER_KEYS = {
    "logger",
    "callbacks",
    "default_root_dir",
    "enable_checkpointing",
    "plugins",
    "enable_progress_bar",
}


class ConfigError(ValueError):
    """A config problem; the message names the key and the fix."""


def load(path: Path, overrides: list[str] | tuple[str, ...] = (), seed: int | None = None) -> dict[str, Any]:
    """Read a pinned config, apply ``key=value`` overrides, check every key, and fill in defaults.

    ``seed`` (the run's seed) becomes the ``seed`` argument of the model and the data module when their
    constructors take one, so that every seed of an experiment draws its own data; an explicit
    ``data.seed=...`` override still wins.
    """
    if not Path(path).exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with sections {', '.join(SECTIONS)}")
    if seed is not None:
        for section in ("model", "data"):
            body = raw.get(section)
            if isinstance(body, dict) and "seed" in init_parameters(import_class(body.get("class_path", ""))):
                body.setdefault("init_args", {})["seed"] = seed
    for item in overrides:
        apply_override(raw, item)
    check_keys(raw, source=str(path))
    resolved = resolve(raw)
    # A LightningModule may check what spans sections (a glimpse wider than the data's canvas) when the config
    # is read, rather than at the first batch: ``check_config(resolved)`` raising ConfigError.
    check = getattr(import_class(resolved["model"]["class_path"]), "check_config", None)
    if check is not None:
        check(resolved)
    return resolved


def apply_override(config: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value, e.g. model.lr=0.3")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if parts[0] not in SECTIONS:
        raise _unknown(parts[0], list(SECTIONS), "top-level section", f"override '{item}'")
    node = config.setdefault(parts[0], {})
    path = parts[1:]
    if parts[0] in ("model", "data") and path and path[0] not in ("class_path", "init_args"):
        path = ["init_args", *path]
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if not path:
        raise ConfigError(f"override '{item}' names a whole section; name a key inside it")
    node[path[-1]] = yaml.safe_load(text)


def _unknown(key: str, valid: list[str], what: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown {what} '{key}' in {where}.{hint} Valid keys: {', '.join(sorted(valid))}")


def import_class(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"cannot import class_path '{class_path}': {err}") from err


def init_parameters(cls: type) -> list[str]:
    return [
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def check_keys(config: dict[str, Any], source: str) -> None:
    for key in config:
        if key not in SECTIONS:
            raise _unknown(key, list(SECTIONS), "top-level section", source)
    for section in ("model", "data"):
        body = config.get(section)
        if not isinstance(body, dict) or "class_path" not in body:
            raise ConfigError(f"{source}: section '{section}' needs a class_path (and init_args)")
        for key in body:
            if key not in ("class_path", "init_args"):
                raise _unknown(key, ["class_path", "init_args"], f"key of '{section}'", source)
        valid = init_parameters(import_class(body["class_path"]))
        for key in body.get("init_args") or {}:
            if key not in valid:
                raise _unknown(key, valid, f"{section} argument", f"{source} ({body['class_path']})")
    import lightning

    valid = [k for k in init_parameters(lightning.Trainer) if k not in HARNESS_TRAINER_KEYS]
    for key in config.get("trainer") or {}:
        if key not in valid:
            raise _unknown(key, valid, "trainer argument", source)


def _parser():
    import lightning
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(lightning.LightningModule, "model", required=True)
    parser.add_subclass_arguments(lightning.LightningDataModule, "data", required=True)
    parser.add_class_arguments(lightning.Trainer, "trainer", skip=HARNESS_TRAINER_KEYS)
    return parser


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Type-check with jsonargparse and return the config with every default written out."""
    from jsonargparse import ArgumentError

    parser = _parser()
    try:
        namespace = parser.parse_object(copy.deepcopy(config))
    except ArgumentError as err:
        raise ConfigError(f"invalid config value: {err}") from err
    # skip_none=False: a default of None (trainer.precision, data.validation_nmin, ...) is a setting too, and
    # the record must show it.
    return yaml.safe_load(parser.dump(namespace, skip_none=False))


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def instantiate(config: dict[str, Any]):
    """Build (LightningModule, LightningDataModule) from a resolved config."""
    model_cls = import_class(config["model"]["class_path"])
    data_cls = import_class(config["data"]["class_path"])
    model = model_cls(**(config["model"].get("init_args") or {}))
    data = data_cls(**(config["data"].get("init_args") or {}))
    return model, data
