"""The config base: ``from_dict``/``to_dict`` round trips, one-line errors for unknown keys, help in one place."""

import subprocess
import sys

import pytest

from metaprune.config import ScheduleConfig, TrainConfig, default_of, help_of
from metaprune.errors import MetapruneError
from metaprune.evaluate.config import EvaluateConfig
from metaprune.fit.core import FitConfig
from metaprune.harvest.config import HarvestConfig

CONFIGS = (HarvestConfig, TrainConfig, ScheduleConfig, FitConfig, EvaluateConfig)


@pytest.mark.parametrize("cls", CONFIGS)
def test_round_trip_through_a_dict(cls):
    config = cls()
    assert cls.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("cls", CONFIGS)
def test_unknown_key_is_one_line_naming_it(cls):
    with pytest.raises(MetapruneError) as info:
        cls.from_dict({"no_such_field": 1})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"unknown {cls.kind} config fields ['no_such_field']; accepted: [")


def test_nested_configs_are_checked_and_rebuilt():
    config = HarvestConfig.from_dict({"train": {"epochs": 3}, "features": list(HarvestConfig().features)})
    assert config.train == TrainConfig(epochs=3) and isinstance(config.features, tuple)
    with pytest.raises(MetapruneError, match=r"^unknown train config fields \['epoch'\]; accepted: \[.*'epochs'"):
        HarvestConfig.from_dict({"train": {"epoch": 3}})


def test_the_store_name_hash_is_unchanged():
    """The identity (hashed into default store names) does not depend on how the config class is written:
    pinned at its value for the trajectory schema (adding ``trajectory`` changed it from ffa6b1d4)."""
    assert HarvestConfig().short_hash() == "0e3ded09"


def test_defaults_and_help_come_from_the_fields():
    assert default_of(HarvestConfig, "levels") == 10 and default_of(HarvestConfig, "train").epochs == 50
    assert default_of(ScheduleConfig, "rounds") == 100 and help_of(ScheduleConfig, "rounds")
    assert all(help_of(TrainConfig, name) for name in ("epochs", "patience", "lr", "batch_size"))
    with pytest.raises(AttributeError):
        help_of(TrainConfig, "no_such_field")


def test_the_config_layer_does_not_import_torch():
    """The CLI reads defaults while registering commands, before ``passive_openmp`` (torch must come later)."""
    code = (
        "import sys; import metaprune.config, metaprune.harvest.config, metaprune.cli.app as a; "
        "a._register_commands(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _config_options():
    """(command, parameter, OptionInfo, the parameter's default) for every option made by ``config_option``."""
    import inspect
    import typing

    import metaprune.cli.app as app_module

    if "harvest" not in {c.name for c in app_module.app.registered_commands}:
        app_module._register_commands()
    found = []
    for command in (*app_module.app.registered_commands, *app_module.bench_app.registered_commands):
        hints = typing.get_type_hints(command.callback, include_extras=True)
        for name, param in inspect.signature(command.callback).parameters.items():
            for info in typing.get_args(hints[name])[1:]:
                if hasattr(info, "config_field"):
                    found.append((command.name, name, info, param.default))
    return found


def test_cli_defaults_are_the_config_defaults():
    options = _config_options()
    assert {(c, n) for c, n, _, _ in options} >= {
        ("harvest", "levels"),
        ("harvest", "rounds"),
        ("harvest", "epochs"),
        ("harvest", "seeds_per_task"),
        ("prune", "rounds"),
        ("prune", "levels"),
        ("evaluate", "epochs"),
        ("evaluate", "rounds"),
        ("fit", "model"),
        ("fit", "target"),
        ("fit", "states"),
        ("fit", "threads"),
        ("fit", "use"),
    }
    for command, name, info, default in options:
        cls, field_name, note_default = info.config_field
        if note_default:  # "not given" on the command line; the help says the config's default
            assert default is None and f"(default {default_of(cls, field_name)})" in info.help, (command, name)
        else:
            assert default == default_of(cls, field_name), (command, name)
            assert info.help == help_of(cls, field_name) or field_name == "train.epochs", (command, name)


def test_harvest_help_shows_the_config_defaults(monkeypatch, capsys):
    from tests.conftest import run_main

    _config_options()  # registers the commands
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_main(monkeypatch, capsys, "harvest", "--help")
    assert code == 0
    config = HarvestConfig()
    for flag, value in (("--levels", config.levels), ("--rounds", config.rounds), ("--epochs", config.train.epochs)):
        line = next(line for line in out.splitlines() if f"{flag} " in line)
        assert f"[default: {value}]" in line, line
    assert f"{config.levels} levels from density 1" in " ".join(out.split())
