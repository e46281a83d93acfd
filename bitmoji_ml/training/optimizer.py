"""The optimizer: AdamW, or SGD with momentum, whose updates are torch's own update functions
(`torch.optim.adamw.adamw` and `torch.optim.sgd.sgd`, what `torch.optim.AdamW` and `SGD` call)
on parameter groups and a state laid out as torch lays them out, so the `last.pt` of either
loads into the other.

Why not `torch.optim.AdamW` itself: every method of `torch.optim.Optimizer` (the constructor,
`step`, `zero_grad`, `state_dict`) imports `torch._dynamo`, the compiler's front end, on its
first call. That costs 1.2-1.3 s of a core before the first training step, a quarter of the
time from `bitmoji train` to its first epoch line, for a compiler the loop never uses. The
update functions do not import it, and they are the arithmetic: this class only keeps the state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch.optim.adamw import adamw
from torch.optim.sgd import sgd

# Each group's settings besides "lr", "weight_decay" and "params", as torch.optim.AdamW / SGD
# store them (the momentum goes in as AdamW's beta1 and SGD's momentum).
ADAMW_SETTINGS = {
    "eps": 1e-8,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
    "decoupled_weight_decay": True,
}
SGD_SETTINGS = {
    "dampening": 0,
    "nesterov": False,
    "maximize": False,
    "foreach": None,
    "differentiable": False,
    "fused": None,
}
SECOND_MOMENT_DECAY = 0.999  # AdamW's beta2
# Devices with torch's fused AdamW kernel: one pass over each tensor per step instead of about
# ten (the optimizer took half the time per epoch on two CPU cores).
FUSED_DEVICES = ("cpu", "cuda")


class Optimizer:
    """AdamW or SGD over `groups` (dicts of "params" and per-group settings such as
    "weight_decay"). It offers what training uses of `torch.optim.Optimizer`: `param_groups`
    (a step reads each group's "lr"), `zero_grad`, `step`, `state_dict`, `load_state_dict`."""

    def __init__(
        self, groups: Iterable[dict[str, Any]], kind: Literal["adamw", "sgd"], *, lr: float, momentum: float
    ) -> None:
        groups = [{**group, "params": list(group["params"])} for group in groups]
        if kind == "adamw":
            params = [param for group in groups for param in group["params"]]
            fused = all(
                param.device.type in FUSED_DEVICES and param.dtype == torch.float32 for param in params
            )
            settings = {**ADAMW_SETTINGS, "betas": (momentum, SECOND_MOMENT_DECAY), "fused": fused or None}
        else:
            settings = {**SGD_SETTINGS, "momentum": momentum}
        self.kind = kind
        self.param_groups = [{"lr": lr, **settings, **group} for group in groups]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        """Drop the gradients (the next backward pass writes them afresh)."""
        for group in self.param_groups:
            for param in group["params"]:
                param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient, at each group's current "lr"."""
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if params:
                (self.adamw_step if self.kind == "adamw" else self.sgd_step)(group, params)

    def adamw_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        on_device = step_on_device(group)
        states = [self.state.setdefault(param, adamw_state(param, on_device)) for param in params]
        beta1, beta2 = group["betas"]
        adamw(
            params,
            [param.grad for param in params],
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [],  # the running maximum of exp_avg_sq, which only AMSGrad keeps
            [state["step"] for state in states],
            foreach=group["foreach"],
            capturable=group["capturable"],
            fused=group["fused"],
            amsgrad=group["amsgrad"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )

    def sgd_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        buffers = [self.state.get(param, {}).get("momentum_buffer") for param in params]
        sgd(
            params,
            [param.grad for param in params],
            buffers,  # sgd() fills the missing ones with the first gradient
            foreach=group["foreach"],
            fused=group["fused"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
        if group["momentum"]:
            for param, buffer in zip(params, buffers, strict=True):
                self.state[param] = {"momentum_buffer": buffer}

    def state_dict(self) -> dict[str, Any]:
        """torch's layout: parameters numbered in group order, state by number."""
        number: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            numbers = [number.setdefault(id(param), len(number)) for param in group["params"]]
            groups.append(
                {**{key: value for key, value in group.items() if key != "params"}, "params": numbers}
            )
        state = {number[id(param)]: dict(values) for param, values in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from `saved` (this class's or torch's, from any device) on the parameters'
        device; the groups must hold as many parameters as these, in the same order."""
        saved_groups = saved["param_groups"]
        if [len(group["params"]) for group in saved_groups] != [
            len(group["params"]) for group in self.param_groups
        ]:
            raise ValueError("the saved optimizer state is for other parameter groups than this model's")
        self.state = {}
        for group, saved_group in zip(self.param_groups, saved_groups, strict=True):
            group.update({key: value for key, value in saved_group.items() if key != "params"})
            on_device = step_on_device(group)
            for number, param in zip(saved_group["params"], group["params"], strict=True):
                if number in saved["state"]:
                    values = saved["state"][number].items()
                    self.state[param] = {
                        name: placed(value, param, name, on_device) for name, value in values
                    }


def step_on_device(group: dict[str, Any]) -> bool:
    """Whether the group's step counts live on the parameters' device (the fused and capturable
    kernels read them there), else on the CPU, as torch.optim places them."""
    return bool(group.get("fused") or group.get("capturable"))


def adamw_state(param: torch.Tensor, step_on_device: bool) -> dict[str, torch.Tensor]:
    """A parameter's AdamW state before its first step, as torch.optim.AdamW makes it (the
    step count on the parameter's device for the fused kernel, else on the CPU)."""
    return {
        "step": torch.zeros((), dtype=torch.float32, device=param.device if step_on_device else "cpu"),
        "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
        "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
    }


def placed(value: torch.Tensor, param: torch.Tensor, name: str, step_on_device: bool) -> torch.Tensor:
    """A saved state tensor on the parameter's device and in its dtype; the step count stays
    where it is unless the kernel wants it on the device (as torch.optim places them)."""
    if name == "step":
        return value.to(dtype=torch.float32, device=param.device) if step_on_device else value
    return value.to(dtype=param.dtype, device=param.device)
