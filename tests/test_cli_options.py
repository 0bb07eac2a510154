"""Numeric options: a bad value is one line naming what was typed and what is accepted (exit 2), before any work."""

import pytest
from metaprune.cli.common import Number, OptionError, density, non_negative_int, positive_float, positive_int

from metaprune.errors import MetapruneError
from metaprune.executor import InProcessExecutor, get_executor
from tests.conftest import run_main


@pytest.fixture
def registered():
    import metaprune.cli.app as app_module

    if "prune" not in {c.name for c in app_module.app.registered_commands}:
        app_module._register_commands()


def test_number_parser_against_its_definition():
    workers = positive_int("--workers")
    assert workers("3") == 3 and workers(" 12 ") == 12 and workers(1) == 1
    for bad in ("0", "-1", "2.5", "abc", "", True):
        with pytest.raises(OptionError, match=r"^bad --workers '.*'; accepted: a positive integer$"):
            workers(bad)
    seed = non_negative_int("--seed")
    assert seed("0") == 0
    with pytest.raises(OptionError, match=r"^bad --seed 'abc'; accepted: an integer >= 0$"):
        seed("abc")
    d = density()
    assert d("1") == 1.0 and d("0.005") == 0.005 and d(0.5) == 0.5 and d("1e-3") == 0.001
    for bad in ("0", "1.0001", "-0.1", "lots", "nan", "inf"):
        with pytest.raises(
            OptionError, match=r"accepted: a number with 0 < sparsity <= 1 \(the fraction of weights kept"
        ):
            d(bad)
    lr = positive_float("--lr")
    assert lr("0.1") == 0.1
    with pytest.raises(OptionError, match=r"^bad --lr '0'; accepted: a positive number$"):
        lr("0")
    assert Number("--x", float, low=2).accepted() == "a number >= 2"
    # Not a ValueError: Typer would wrap one into its own boxed message without the value typed.
    assert not issubclass(OptionError, ValueError)


@pytest.mark.parametrize(
    "args,message",
    [
        (["prune", "--sparsity", "lots"], "bad --sparsity 'lots'; accepted: a number with 0 < sparsity <= 1"),
        (["prune", "--seed", "abc"], "bad --seed 'abc'; accepted: an integer >= 0"),
        (["prune", "--per-class", "-1"], "bad --per-class '-1'; accepted: an integer >= 0 (0: no pruning batch)"),
        (["prune", "--levels", "0"], "bad --levels '0'; accepted: a positive integer"),
        (["harvest", "--seeds", "0", "--workers", "0"], "bad --workers '0'; accepted: a positive integer (1 runs"),
        (["harvest", "--workers", "-2"], "bad --workers '-2'; accepted: a positive integer"),
        (["harvest", "--sparsity", "0"], "bad --sparsity '0'"),
        (["harvest", "--data-seed", "x"], "bad --data-seed 'x'; accepted: an integer >= 0"),
        (["evaluate", "--workers", "0"], "bad --workers '0'; accepted: a positive integer"),
        (["evaluate", "-s", "0.1", "-s", "lots"], "bad --sparsity 'lots'"),
        (["evaluate", "--rounds", "0"], "bad --rounds '0'; accepted: a positive integer"),
        (["train", "--epochs", "2.5"], "bad --epochs '2.5'; accepted: a positive integer"),
        (["train", "--lr", "fast"], "bad --lr 'fast'; accepted: a positive number"),
        (["fit", "--cv", "x"], "bad --cv 'x'; accepted: an integer >= 0 (0: none, K >= 2: K folds)"),
        (["fit", "--threads", "0"], "bad --threads '0'; accepted: a positive integer"),
        (["inspect", "store.zarr", "--max-seeds", "1.5"], "bad --max-seeds '1.5'; accepted: a positive integer"),
        (["bench", "prune", "--repeats", "0"], "bad --repeats '0'; accepted: a positive integer"),
    ],
)
def test_bad_numeric_options_are_one_line(registered, monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)  # a command that ran anyway would leave files here
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert out == "" and not any(tmp_path.iterdir())


def test_harvest_with_zero_workers_does_nothing(registered, monkeypatch, capsys, tmp_path):
    store = tmp_path / "X"
    code, _, err = run_main(monkeypatch, capsys, "harvest", "--seeds", "0", "--workers", "0", "--out", str(store))
    assert code == 2 and "--workers '0'" in err
    assert not store.exists()


def test_library_refuses_zero_or_negative_workers():
    assert isinstance(get_executor(None), InProcessExecutor) and isinstance(get_executor(1), InProcessExecutor)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(MetapruneError, match=r"bad --workers .*; accepted: a positive integer"):
            get_executor(bad)
    with pytest.raises(MetapruneError, match="bad --workers 0"):
        get_executor(0, scheduler="tcp://127.0.0.1:1")


def test_every_numeric_option_has_a_parser(registered):
    """A new int/float option without ``parser=`` would bring back Typer's message without the value."""
    import inspect
    import typing

    import metaprune.cli.app as app_module

    commands = [*app_module.app.registered_commands, *app_module.bench_app.registered_commands]
    checked = 0
    for command in commands:
        hints = typing.get_type_hints(command.callback, include_extras=True)
        for name in inspect.signature(command.callback).parameters:
            hint = hints[name]
            base, *extras = typing.get_args(hint)
            kinds = {base, *typing.get_args(base), *(a for t in typing.get_args(base) for a in typing.get_args(t))}
            if kinds & {int, float}:
                checked += 1
                info = next(e for e in extras if hasattr(e, "parser"))
                assert isinstance(info.parser, Number), f"{command.name} {name}"
    assert checked >= 30
