"""The shipped family model: committed under ``models/``, it loads on a fresh clone as ``learned:models/NAME``,
prunes a registry network and a user's own module it never saw, and its card names its stores by content
hash, never by a machine's folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import metaprune
from metaprune.datasets import load_dataset
from metaprune.fit.persist import ModelCard
from metaprune.harvest.family import FAMILIES
from metaprune.networks import build_network, prunable_layout
from metaprune.prune import prune_network
from metaprune.pruning.masks import keep_count

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "models/mlp-zoo-lightgbm"


@pytest.fixture
def in_checkout(monkeypatch):
    """Run from the checkout's root, as a user spells ``learned:models/NAME``."""
    monkeypatch.chdir(ROOT)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_the_card_records_every_zoo_store_by_hash_and_no_machine_path():
    card = ModelCard.read(ROOT / SHIPPED)
    zoo = FAMILIES.get("mlp-zoo")
    assert {(s.network, s.dataset, s.density) for s in card.stores} == {
        (m.network, m.dataset, m.density) for m in zoo.members
    }
    assert all(re.fullmatch("[0-9a-f]{8,}", s.hash) and s.path.startswith("datasets/") for s in card.stores)
    assert set(card.layer_kinds) == {"linear", "conv2d"}
    meta = json.loads((ROOT / SHIPPED / "meta.json").read_text())
    assert not [s for s in _strings(meta) if s.startswith(("/", "~")) or "\\" in s]


@pytest.mark.parametrize(("network", "dataset", "density"), [("mlp:100-50", "digits", 0.02), ("conv2", "digits", 0.01)])
def test_it_prunes_a_registry_network_at_the_exact_count(in_checkout, network, dataset, density):
    result = prune_network(network, dataset, "learned:" + SHIPPED, density, seed=0)
    data = load_dataset(dataset)
    total = prunable_layout(build_network(network, data.input_shape, data.num_classes, 0)).total
    assert int(result.ticket.mask.sum()) == keep_count(total, density)


def test_it_prunes_a_users_module_through_torch_prune(in_checkout):
    data = load_dataset("digits")
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 40), nn.ReLU(), nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 10))
    batch = (data.train_x[:256], data.train_y[:256])
    metaprune.prune_module(module, batch, "learned:" + SHIPPED, 0.05, seed=0)
    kept = sum(int(m.weight_mask.sum()) for m in module if isinstance(m, nn.Linear))
    assert kept == keep_count(64 * 40 + 40 * 24 + 24 * 10, 0.05)
    assert all(torch.equal(m.weight[m.weight_mask == 0], torch.zeros(int((m.weight_mask == 0).sum())))
               for m in module if isinstance(m, nn.Linear))  # fmt: skip
