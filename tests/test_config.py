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
    """The identity (hashed into default store names) is what it was before the config base."""
    assert HarvestConfig().short_hash() == "ffa6b1d4"


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
