"""The training optimizer (training/optimizer.py): AdamW (fused on a CPU) and SGD by torch's
update functions, step for step the same weights and the same state_dict as torch.optim.AdamW
and SGD with those settings, and a state saved by either continues in the other."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bitmoji_ml.training.optimizer import Optimizer


def network() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)
    )
    return model.to(memory_format=torch.channels_last)


def groups(model: nn.Module) -> list[dict]:
    """As training/state.py groups them: weight decay on weights only."""
    return [
        {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": 0.05},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]


def ours(model: nn.Module, kind: str, momentum: float = 0.9) -> Optimizer:
    return Optimizer(groups(model), kind, lr=0.01, momentum=momentum)


def torchs(model: nn.Module, kind: str, momentum: float = 0.9) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(groups(model), lr=0.01, momentum=momentum)
    return torch.optim.AdamW(groups(model), lr=0.01, betas=(momentum, 0.999), fused=True)  # fused on a CPU


def train(model: nn.Module, optimizer, steps: int, seed: int) -> None:
    """`steps` steps on random batches, the learning rate set per step as the loop does."""
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 0.01 * (step + 1)
        images = torch.randn(4, 3, 8, 8, generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), torch.tensor([0, 1, 1, 0])).backward()
        optimizer.step()


def same_weights(first: nn.Module, second: nn.Module) -> bool:
    return all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def same_state(first: dict, second: dict) -> bool:
    if first["param_groups"] != second["param_groups"] or first["state"].keys() != second["state"].keys():
        return False
    return all(
        values.keys() == second["state"][number].keys()
        and all(torch.equal(value, second["state"][number][name]) for name, value in values.items())
        for number, values in first["state"].items()
    )


@pytest.mark.parametrize(("kind", "momentum"), [("adamw", 0.9), ("adamw", 0.8), ("sgd", 0.9), ("sgd", 0.0)])
def test_steps_equal_torchs_optimizer(kind: str, momentum: float) -> None:
    mine, reference = network(), network()
    optimizer, torch_optimizer = ours(mine, kind, momentum), torchs(reference, kind, momentum)
    train(mine, optimizer, 4, seed=1)
    train(reference, torch_optimizer, 4, seed=1)
    assert not same_weights(mine, network())  # the steps changed the weights
    assert same_weights(mine, reference)
    assert same_state(optimizer.state_dict(), torch_optimizer.state_dict())


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_a_saved_state_continues_in_either_optimizer(kind: str) -> None:
    """last.pt written before this optimizer (by torch's) resumes with it, and the other way round."""
    mine, reference = network(), network()
    optimizer, torch_optimizer = ours(mine, kind), torchs(reference, kind)
    train(mine, optimizer, 3, seed=2)
    train(reference, torch_optimizer, 3, seed=2)
    mine_continued, reference_continued = copy.deepcopy(mine), copy.deepcopy(reference)
    from_torch, from_ours = ours(mine_continued, kind), torchs(reference_continued, kind)
    from_torch.load_state_dict(torch_optimizer.state_dict())
    from_ours.load_state_dict(optimizer.state_dict())
    train(mine_continued, from_torch, 2, seed=3)
    train(reference_continued, from_ours, 2, seed=3)
    assert not same_weights(mine_continued, mine)
    assert same_weights(mine_continued, reference_continued)


def test_a_state_for_other_parameter_groups_is_refused() -> None:
    optimizer = ours(network(), "adamw")
    saved = optimizer.state_dict()
    saved["param_groups"][0]["params"] = saved["param_groups"][0]["params"][:-1]
    with pytest.raises(ValueError, match="other parameter groups"):
        ours(network(), "adamw").load_state_dict(saved)


def test_a_state_of_the_unfused_optimizer_continues_unfused() -> None:
    """A last.pt saved before AdamW was fused (torch.optim.AdamW's defaults) resumes with the
    settings it was saved with, step for step as torch's optimizer would continue it."""
    saved_from = network()
    earlier = torch.optim.AdamW(groups(saved_from), lr=0.01)
    train(saved_from, earlier, 3, seed=4)
    mine, reference = copy.deepcopy(saved_from), copy.deepcopy(saved_from)
    optimizer, torch_optimizer = ours(mine, "adamw"), torch.optim.AdamW(groups(reference), lr=0.01)
    optimizer.load_state_dict(copy.deepcopy(earlier.state_dict()))  # as torch.load reads it: fresh tensors
    torch_optimizer.load_state_dict(copy.deepcopy(earlier.state_dict()))
    train(mine, optimizer, 2, seed=5)
    train(reference, torch_optimizer, 2, seed=5)
    assert optimizer.param_groups[0]["fused"] is None
    assert same_weights(mine, reference)
