"""``metaprune prune`` and ``metaprune bench prune``: the library function, the table, the file, the errors."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from metaprune.cli import app as app_module
from typer.testing import CliRunner

from metaprune.bench.prune import BENCH_TARGETS
from metaprune.errors import MetapruneError
from metaprune.networks import build_network, prunable_layout
from metaprune.prune import load_ticket, prune_network, save_ticket
from metaprune.pruning.masks import keep_count
from metaprune.pruning.method import GRAMMAR_HELP
from tests.conftest import run_main

NET = ["--network", "mlp:20-10", "--dataset", "digits"]
N_WEIGHTS = 64 * 20 + 20 * 10 + 10 * 10  # mlp:20-10 on 8x8 digits: 1,580 prunable weights


def _registered() -> None:
    names = {c.name for c in app_module.app.registered_commands}
    if "prune" not in names:
        app_module._register_commands()


_registered()
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app_module.app, list(args))


# ------------------------------------------------------------------------------------------ library


def test_prune_network_result_and_provenance():
    result = prune_network("mlp:20-10", "digits", "snip", 0.1, seed=3)
    report = result.ticket.report
    assert report.total == N_WEIGHTS
    assert report.kept == keep_count(0.1, N_WEIGHTS) == int(result.ticket.mask.sum())
    d = result.to_dict()
    assert d["config"]["method"] == "snip@uss" and d["config"]["seed"] == 3 and d["config"]["density"] == 0.1
    assert d["config"]["train"] is None  # upfront schedules do not train
    assert d["versions"]["torch"] == torch.__version__.split("+")[0]
    assert d["versions"]["metaprune"]
    assert d["seconds"] >= d["prune_seconds"] > 0
    assert [layer["name"] for layer in d["report"]["layers"]] == list(prunable_layout(result.ticket.net).names)
    json.dumps(d)


def test_prune_network_iterative_records_training():
    from metaprune.training import TrainConfig

    result = prune_network("mlp:8", "digits", "imp", 0.2, levels=2, train=TrainConfig(epochs=1))
    assert result.config()["train"]["epochs"] == 1
    assert result.config()["levels"] == 2 and result.config()["rounds"] is None
    assert result.ticket.outcome.densities == [0.2**0.5, 0.2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(density=0.0), "accepted: 0 < density <= 1"),
        (dict(density=1.5), "accepted: 0 < density <= 1"),
        (dict(density=float("nan")), "accepted: 0 < density <= 1"),
        (dict(density=1e-5), "keeps no weight"),
        (dict(seed=-1), "bad seed"),
        (dict(method="mag>>snip"), "character 5"),
        (dict(network="vgg99"), "unknown network"),
        (dict(dataset="imagenet"), "unknown dataset"),
        (dict(scope="row"), "scope"),
        (dict(rounds=0), "rounds"),
        (dict(per_class=0, method="mag>snip"), "needs a pruning batch"),
    ],
)
def test_prune_network_refuses_bad_input(kwargs, match):
    args = dict(network="mlp:20-10", dataset="digits", method="snip", density=0.1) | kwargs
    with pytest.raises(MetapruneError, match=match):
        prune_network(**args)


# ------------------------------------------------------------------------------------------ command


def test_prune_prints_the_layer_table():
    result = invoke("prune", *NET, "--method", "snip", "--sparsity", "0.1", "--seed", "0")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("layer", "shape", "kept", "kept %", "effective", "dead in", "dead out", "collapsed", "total"):
        assert text in out
    for name, shape in (("layers.0.weight", "20x64"), ("layers.1.weight", "10x20"), ("layers.2.weight", "10x10")):
        assert name in out and shape in out
    k = keep_count(0.1, N_WEIGHTS)
    assert f"density 0.1 ({k} of 1,580 kept)" in out
    assert "effective density" in out and "collapsed layers: none" in out and " s pruning" in out


def test_prune_json_and_layer_scope():
    result = invoke("prune", *NET, "--method", "mag", "--sparsity", "0.5", "--scope", "layer", "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["config"]["scope"] == "layer" and d["out"] is None
    for layer in d["report"]["layers"]:
        assert layer["kept"] == round(0.5 * layer["total"])


def test_prune_out_writes_a_loadable_ticket(tmp_path):
    path = tmp_path / "sub" / "mask.safetensors"
    result = invoke(
        "prune", *NET, "--method", "mag>synflow~snip", "--sparsity", "0.05", "--rounds", "5", "--out", str(path)
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.stdout.replace("\n", "")
    assert os.listdir(path.parent) == ["mask.safetensors"]  # no temp file left behind
    ticket = load_ticket(path)
    k = keep_count(0.05, N_WEIGHTS)
    assert ticket.mask.dtype == torch.bool and ticket.mask.numel() == N_WEIGHTS
    assert int(ticket.mask.sum()) == k
    net = build_network("mlp:20-10", (1, 8, 8), 10, 0)
    layout = prunable_layout(net)
    assert list(ticket.layer_masks) == list(layout.names)
    for layer, part in zip(layout.layers, layout.split(ticket.mask), strict=True):
        assert torch.equal(ticket.layer_masks[layer.name], part)
    assert set(ticket.init) == set(net.state_dict())
    net.load_state_dict(ticket.init)  # the weights the ticket trains from load into the network
    # SaW from snip: prunable weights in [-1, 1], sign of θ0
    theta0 = build_network("mlp:20-10", (1, 8, 8), 10, 0).state_dict()
    for name in layout.names:
        w = ticket.init[name]
        assert float(w.abs().max()) == 1.0
        assert torch.equal(torch.sign(w)[w != 0], torch.sign(theta0[name])[w != 0])
    meta = ticket.metadata
    assert meta["method"] == "magnitude>synflow@ums~snip"
    assert float(meta["density"]) == 0.05 and meta["seed"] == "0"
    assert meta["network"] == "mlp:20-10" and meta["dataset"] == "digits"
    assert json.loads(meta["config"])["rounds"] == 5
    assert json.loads(meta["versions"])["torch"]
    assert int(meta["kept"]) == k


def test_save_is_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    result = prune_network("mlp:20-10", "digits", "mag", 0.1)
    path = tmp_path / "t.safetensors"

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 16)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(MetapruneError, match="No space left"):
        save_ticket(result, path)
    assert os.listdir(tmp_path) == []  # neither the target nor a temp file
    monkeypatch.undo()
    save_ticket(result, path)
    save_ticket(result, path)  # overwriting is a rename too
    assert int(load_ticket(path).mask.sum()) == keep_count(0.1, N_WEIGHTS)
    assert os.listdir(tmp_path) == ["t.safetensors"]


def test_help_explains_grammar_and_density():
    result = invoke("prune", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "REMAIN" in text and "density" in text
    grammar = "[A>]B[@schedule][+wE][#budget][~init][!ablation]"
    for piece in (grammar, "mag>synflow~snip", "imp", "synflow@ums", "magnitude@iss"):
        assert piece in text, piece
    assert " ".join(GRAMMAR_HELP.split()) in text


@pytest.mark.parametrize(
    "args, match",
    [
        (["--sparsity", "0"], "0 < sparsity <= 1"),
        (["--sparsity", "1.5"], "0 < sparsity <= 1"),
        (["--sparsity", "-0.2"], "0 < sparsity <= 1"),
        (["--sparsity", "nan"], "0 < sparsity <= 1"),
        (["--sparsity", "0.0001"], "keeps no weight"),
        (["--sparsity", "0.02", "--scope", "layer", "--network", "mlp:20-2"], "layer layers.2.weight"),
        (["--method", "xyz"], "unknown scorer 'xyz'"),
        (["--method", "snip@xyz"], "unknown schedule 'xyz'"),
        (["--method", "snip~xyz"], "unknown init 'xyz'"),
        (["--method", "snip!xyz"], "unknown ablation 'xyz'"),
        (["--method", "mag>>snip"], "character 5 ('>')"),
        (["--method", "mag>snip", "--per-class", "0"], "needs a pruning batch"),
        (["--seed", "-1"], "bad --seed '-1'; accepted: an integer >= 0"),
        (["--network", "vgg99"], "unknown network"),
        (["--dataset", "imagenet"], "unknown dataset"),
        (["--scope", "row"], "scope"),
        (["--levels", "0", "--method", "imp"], "levels"),
        (["--preset", "fast"], "unknown training preset"),
        (["--device", "tpu"], "device"),
        (["--out", "mask.pt"], ".safetensors"),
    ],
)
def test_bad_input_is_one_line_exit_2(monkeypatch, capsys, tmp_path, args, match):
    monkeypatch.chdir(tmp_path)
    base = dict(zip(NET[::2], NET[1::2], strict=True)) | {"--sparsity": "0.1"}
    base |= dict(zip(args[::2], args[1::2], strict=True))
    code, out, err = run_main(monkeypatch, capsys, "prune", *[x for kv in base.items() for x in kv])
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and match in lines[0], err
    assert "Traceback" not in err + out
    assert os.listdir(tmp_path) == []


def test_bad_input_from_the_installed_command(tmp_path):
    """The console script itself: exit 2, one line on stderr, no traceback."""
    exe = os.path.join(os.path.dirname(sys.executable), "metaprune")
    proc = subprocess.run(
        [exe, "prune", *NET, "--method", "mag>>snip", "--sparsity", "0.1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ | {"COLUMNS": "300"},
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "character 5 ('>')" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_usage_errors_are_not_tracebacks(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "prune", *NET, "--sparsity", "abc")
    assert code == 2 and "Traceback" not in err


# ------------------------------------------------------------------------------------------ bench


FAKE_BENCH = {
    "snip": 0.01,
    "grasp": 0.5,
    "synflow": 0.004,
    "synflow_100_rounds": 0.4,
    "topk_266200": 0.002,
    "warmup_3_epochs_dynamics": 0.8,
    "learned_ums_20_rounds": 6.0,
}


@pytest.fixture
def fake_bench(monkeypatch):
    import metaprune.bench.prune

    monkeypatch.setattr(metaprune.bench.prune, "bench_prune", lambda repeats=5, learned=None: dict(FAKE_BENCH))


def test_bench_prune_table(fake_bench):
    result = invoke("bench", "prune")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for label in ("snip", "grasp", "synflow, one round", "100 rounds", "top-k"):
        assert label in out
    for target in ("0.075", "0.225", "0.540", "0.010"):
        assert target in out
    # header + 4 passes; grasp 0.5 > 0.225 and the learned 6 s > 5 s fail
    assert out.count("pass") == 4 + 1 and out.count("FAIL") == 2


def test_bench_prune_json(fake_bench):
    result = invoke("bench", "prune", "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    items = {i["item"]: i for i in d["items"]}
    assert set(items) == set(FAKE_BENCH)
    assert {k: items[k]["target_s"] for k in BENCH_TARGETS} == BENCH_TARGETS
    assert items["synflow"]["target_s"] is None and items["synflow"]["passed"] is None
    assert items["grasp"]["passed"] is False and items["snip"]["passed"] is True
    assert d["all_passed"] is False
    assert math.isclose(items["synflow_100_rounds"]["seconds"], 0.4)
