"""LazyAdam and LazyAdagrad against PyTorch's Adam(W) and Adagrad, and the optimizer
`make_optimizer` builds by name."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from prodcat.errors import ConfigError
from prodcat.training.optim import LazyAdagrad, LazyAdam, make_optimizer

# (LazyAdam's weight_decay and decoupled, the PyTorch optimizer with the same update)
SAME_UPDATE = [
    pytest.param(0.0, False, torch.optim.Adam, id="adam"),
    pytest.param(0.1, False, torch.optim.Adam, id="adam-l2"),
    pytest.param(0.1, True, torch.optim.AdamW, id="adamw"),
]
# PyTorch's fused CPU kernels arrived in 2.4; the project allows torch>=2.2.
FUSED_ON_CPU = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4)


class TinyClassifier(nn.Module):
    """Embedding -> mean -> LayerNorm -> head: every kind of parameter the groups sort."""

    def __init__(self, sparse: bool):
        super().__init__()
        self.embed = nn.Embedding(10, 4, sparse=sparse)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids).mean(dim=1)))


def tiny_classifier(sparse: bool) -> TinyClassifier:
    torch.manual_seed(0)
    return TinyClassifier(sparse)


def groups_by_name(optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    return {g["name"]: g for g in optimizer.param_groups}


def param_names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


# LazyAdam, dense gradients


def two_layer_net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def train_dense(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 20) -> None:
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 6, generator=data, dtype=torch.float64)
        y = torch.randn(8, 3, generator=data, dtype=torch.float64)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("fused", [False, True], ids=["for-loop", "fused"])
@pytest.mark.parametrize(("weight_decay", "decoupled", "reference_class"), SAME_UPDATE)
def test_lazy_adam_dense_path_equals_torch_adam(weight_decay, decoupled, reference_class, fused):
    if fused and not FUSED_ON_CPU:
        pytest.skip("this torch has no fused Adam on CPU")
    torch.manual_seed(0)
    lazy_net = two_layer_net()
    reference_net = two_layer_net()
    reference_net.load_state_dict(lazy_net.state_dict())
    before = [p.detach().clone() for p in lazy_net.parameters()]
    lazy = LazyAdam(lazy_net.parameters(), lr=1e-2, weight_decay=weight_decay, decoupled=decoupled)
    reference = reference_class(
        reference_net.parameters(), lr=1e-2, weight_decay=weight_decay, fused=fused
    )

    train_dense(lazy_net, lazy)
    train_dense(reference_net, reference)

    for (name, got), want, start in zip(
        lazy_net.named_parameters(), reference_net.parameters(), before
    ):
        assert not torch.equal(got, start), name
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)


# LazyAdam, sparse gradients


def train_embedding(
    embedding: nn.Embedding, optimizer: torch.optim.Optimizer, batches: list[torch.Tensor]
) -> None:
    targets = torch.Generator().manual_seed(2)
    for ids in batches:
        target = torch.randn(len(ids), embedding.embedding_dim, generator=targets).double()
        optimizer.zero_grad()
        nn.functional.mse_loss(embedding(ids), target).backward()
        optimizer.step()


def sparse_and_dense_embeddings() -> tuple[nn.Embedding, nn.Embedding]:
    torch.manual_seed(0)
    sparse = nn.Embedding(20, 4, sparse=True).double()
    dense = nn.Embedding(20, 4, sparse=False).double()
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense


@pytest.mark.parametrize(("weight_decay", "decoupled", "reference_class"), SAME_UPDATE)
def test_lazy_adam_sparse_path_updates_only_rows_in_batches(
    weight_decay, decoupled, reference_class
):
    embedding, _ = sparse_and_dense_embeddings()
    before = embedding.weight.detach().clone()
    ids = torch.Generator().manual_seed(3)
    # Rows 0..11 only, repeated within a batch so coalescing duplicate rows is exercised too.
    batches = [torch.randint(0, 12, (9,), generator=ids) for _ in range(5)]
    seen = torch.zeros(20, dtype=torch.bool)
    seen[torch.cat(batches)] = True
    assert 0 < seen.sum() < 20
    optimizer = LazyAdam(
        embedding.parameters(), lr=1e-2, weight_decay=weight_decay, decoupled=decoupled
    )

    train_embedding(embedding, optimizer, batches)

    after = embedding.weight.detach()
    assert torch.equal(after[~seen], before[~seen])
    assert (after[seen] != before[seen]).all(dim=1).all()


@pytest.mark.parametrize(("weight_decay", "decoupled", "reference_class"), SAME_UPDATE)
def test_lazy_adam_sparse_path_equals_dense_adam_when_every_row_is_used(
    weight_decay, decoupled, reference_class
):
    sparse, dense = sparse_and_dense_embeddings()
    ids = torch.Generator().manual_seed(3)
    batches = [
        torch.cat([torch.randperm(20, generator=ids), torch.randint(0, 20, (5,), generator=ids)])
        for _ in range(10)
    ]
    lazy = LazyAdam(sparse.parameters(), lr=1e-2, weight_decay=weight_decay, decoupled=decoupled)
    reference = reference_class(dense.parameters(), lr=1e-2, weight_decay=weight_decay)

    train_embedding(sparse, lazy, batches)
    train_embedding(dense, reference, batches)

    assert sparse.weight.grad.is_sparse
    torch.testing.assert_close(sparse.weight, dense.weight, rtol=1e-12, atol=1e-12)


def test_lazy_adam_sparse_path_agrees_with_torch_sparse_adam():
    sparse, _ = sparse_and_dense_embeddings()
    reference, _ = sparse_and_dense_embeddings()
    ids = torch.Generator().manual_seed(4)
    batches = [torch.randint(0, 12, (9,), generator=ids) for _ in range(10)]
    # SparseAdam adds eps before the bias correction, not after: the runs differ in proportion
    # to eps (1e-6 apart at eps=1e-8), so a tiny eps lets the comparison be tight.
    lazy = LazyAdam(sparse.parameters(), lr=1e-2, eps=1e-12)
    sparse_adam = torch.optim.SparseAdam(list(reference.parameters()), lr=1e-2, eps=1e-12)

    train_embedding(sparse, lazy, batches)
    train_embedding(reference, sparse_adam, batches)

    torch.testing.assert_close(sparse.weight, reference.weight, rtol=0, atol=1e-9)


# LazyAdagrad


def unique_lookup_batches(generator: torch.Generator) -> list[torch.Tensor]:
    """Rows 0..11 each looked up once, in rising order: the sparse gradient of a deduplicated
    lookup (the linear family's), whose indices rise strictly and which is not coalesced."""
    return [torch.randint(0, 12, (9,), generator=generator).unique() for _ in range(10)]


@pytest.mark.parametrize("unique", [False, True], ids=["repeated-rows", "unique-rows"])
def test_lazy_adagrad_sparse_path_equals_torch_adagrad(unique):
    sparse, _ = sparse_and_dense_embeddings()
    reference, _ = sparse_and_dense_embeddings()
    ids = torch.Generator().manual_seed(4)
    if unique:
        batches = unique_lookup_batches(ids)
    else:  # repeated rows: the gradient must be coalesced first
        batches = [torch.randint(0, 12, (9,), generator=ids) for _ in range(10)]
    before = sparse.weight.detach().clone()

    train_embedding(sparse, LazyAdagrad(sparse.parameters(), lr=0.1), batches)
    train_embedding(reference, torch.optim.Adagrad(reference.parameters(), lr=0.1), batches)

    torch.testing.assert_close(sparse.weight, reference.weight, rtol=1e-12, atol=1e-12)
    seen = torch.zeros(20, dtype=torch.bool)
    seen[torch.cat(batches)] = True
    assert torch.equal(sparse.weight[~seen], before[~seen]) and not seen.all()


def test_lazy_adagrad_dense_path_and_weight_decay_equal_torch_adagrad():
    model, reference = two_layer_net(), two_layer_net()
    reference.load_state_dict(model.state_dict())

    train_dense(model, LazyAdagrad(model.parameters(), lr=0.05, weight_decay=0.1))
    train_dense(reference, torch.optim.Adagrad(reference.parameters(), lr=0.05, weight_decay=0.1))

    for mine, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_lazy_adagrad_decays_only_the_rows_in_a_batch():
    """L2 decay on a sparse gradient's rows (PyTorch's Adagrad refuses it): the rows used
    equal a dense Adagrad's when every row is used in every batch."""
    sparse, dense = sparse_and_dense_embeddings()
    batches = [torch.arange(20) for _ in range(5)]

    train_embedding(sparse, LazyAdagrad(sparse.parameters(), lr=0.1, weight_decay=0.1), batches)
    train_embedding(
        dense, torch.optim.Adagrad(dense.parameters(), lr=0.1, weight_decay=0.1), batches
    )

    torch.testing.assert_close(sparse.weight, dense.weight, rtol=1e-12, atol=1e-12)


# make_optimizer


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_make_optimizer_picks_lazy_adam_for_a_sparse_embedding(name):
    optimizer = make_optimizer(tiny_classifier(sparse=True), name=name, lr=1e-3)

    assert type(optimizer) is LazyAdam
    assert all(g["decoupled"] is (name == "adamw") for g in optimizer.param_groups)


@pytest.mark.parametrize(
    ("name", "torch_class"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_make_optimizer_picks_torch_optimizer_without_a_sparse_embedding(name, torch_class):
    optimizer = make_optimizer(tiny_classifier(sparse=False), name=name, lr=1e-3)

    assert type(optimizer) is torch_class
    assert bool(optimizer.defaults.get("fused")) is FUSED_ON_CPU


@pytest.mark.parametrize(
    ("sparse", "expected"), [(True, LazyAdagrad), (False, torch.optim.Adagrad)], ids=str
)
def test_make_optimizer_adagrad_is_lazy_for_a_sparse_embedding(sparse, expected):
    optimizer = make_optimizer(tiny_classifier(sparse), name="adagrad", lr=0.1)

    assert type(optimizer) is expected


def test_make_optimizer_ignores_a_frozen_sparse_embedding():
    model = tiny_classifier(sparse=True)
    model.embed.weight.requires_grad_(False)

    optimizer = make_optimizer(model, name="adamw", lr=1e-3)

    assert type(optimizer) is torch.optim.AdamW
    grouped = {n for g in optimizer.param_groups for n in param_names(model, g)}
    assert grouped == {"norm.weight", "norm.bias", "head.weight", "head.bias"}


def test_make_optimizer_spares_biases_and_norm_weights_from_weight_decay():
    model = tiny_classifier(sparse=True)

    optimizer = make_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.01)

    groups = groups_by_name(optimizer)
    assert {name: param_names(model, g) for name, g in groups.items()} == {
        "head.decay": {"head.weight"},
        "head.no_decay": {"head.bias"},
        "encoder.decay": {"embed.weight"},
        "encoder.no_decay": {"norm.weight", "norm.bias"},
    }
    assert {name: g["weight_decay"] for name, g in groups.items()} == {
        "head.decay": 0.01,
        "head.no_decay": 0.0,
        "encoder.decay": 0.01,
        "encoder.no_decay": 0.0,
    }
    assert all(g["lr"] == 1e-3 for g in optimizer.param_groups)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_make_optimizer_gives_the_encoder_its_own_rate(sparse):
    optimizer = make_optimizer(tiny_classifier(sparse), name="adam", lr=1e-3, encoder_lr=1e-4)

    rates = {name: g["lr"] for name, g in groups_by_name(optimizer).items()}
    assert rates == {
        "head.decay": 1e-3,
        "head.no_decay": 1e-3,
        "encoder.decay": 1e-4,
        "encoder.no_decay": 1e-4,
    }
    # What the training loop logs as the learning rate is the head's.
    assert optimizer.param_groups[0]["lr"] == 1e-3


def test_make_optimizer_without_a_head_uses_lr_everywhere(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))

    with caplog.at_level(logging.WARNING, logger="prodcat.training.optim"):
        optimizer = make_optimizer(model, name="adamw", lr=1e-3, encoder_lr=1e-4)

    assert {name: g["lr"] for name, g in groups_by_name(optimizer).items()} == {
        "encoder.decay": 1e-3,
        "encoder.no_decay": 1e-3,
    }
    assert "encoder_lr is ignored" in caplog.text


def test_make_optimizer_rejects_an_unknown_name():
    with pytest.raises(ConfigError, match="'sgd'.*adam, adamw"):
        make_optimizer(tiny_classifier(sparse=False), name="sgd", lr=1e-3)


def test_make_optimizer_rejects_a_model_with_nothing_to_train():
    model = tiny_classifier(sparse=False).requires_grad_(False)

    with pytest.raises(ConfigError, match="no trainable parameters"):
        make_optimizer(model, name="adam", lr=1e-3)


def test_make_optimizer_falls_back_when_fused_cannot_step():
    # Fused Adam accepts complex parameters when built but fails at the first step.
    weight = nn.Parameter(torch.ones(3, 2, dtype=torch.complex64))
    model = nn.Module()
    model.register_parameter("weight", weight)

    optimizer = make_optimizer(model, name="adam", lr=1e-2)
    weight.grad = torch.ones_like(weight)
    optimizer.step()

    assert not optimizer.defaults.get("fused")
    assert not torch.equal(weight.detach(), torch.ones(3, 2, dtype=torch.complex64))


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("name", ["adam", "adamw", "adagrad"])
def test_make_optimizer_steps_reduce_a_simple_loss(name, sparse):
    model = tiny_classifier(sparse)
    data = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 10, (16, 5), generator=data)
    labels = torch.randint(0, 3, (16,), generator=data)
    optimizer = make_optimizer(model, name=name, lr=1e-2, weight_decay=0.01, encoder_lr=5e-3)

    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(ids), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
