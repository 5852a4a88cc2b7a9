"""bf16 weights with fp32 master copies (`synpref.rm.precision.MasterWeights`)."""

from __future__ import annotations

import io

import pytest
import torch

from synpref.rm.precision import MasterWeights


def sgd_steps(weight: torch.nn.Linear, parameters, steps: int, master: MasterWeights | None = None) -> None:
    optimizer = torch.optim.SGD(parameters, lr=1e-3)
    for _ in range(steps):
        weight(torch.ones(1, 1, dtype=weight.weight.dtype)).sum().backward()  # d/dw = 1
        if master:
            master.gradients_to_master()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if master:
            master.master_to_model()


def test_updates_below_a_bf16_step_add_up_in_the_master_copy():
    """w = 1, five SGD steps of -0.001: bf16 alone cannot move (0.999 rounds back to 1.0); with a
    master copy the fp32 weight is 0.995 and the model holds its bf16 rounding, 0.99609375."""
    plain = torch.nn.Linear(1, 1, bias=False).to(torch.bfloat16)
    torch.nn.init.ones_(plain.weight)
    sgd_steps(plain, plain.parameters(), 5)
    assert plain.weight.item() == 1.0

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    master = MasterWeights(model)
    assert model.weight.dtype == torch.bfloat16 and master.parameters[0].dtype == torch.float32
    sgd_steps(model, master.parameters, 5, master)
    assert master.parameters[0].item() == pytest.approx(0.995, abs=1e-6)
    assert model.weight.item() == 0.99609375
    assert model.weight.grad is None


def test_the_full_precision_state_dict_and_a_checkpoint_round_trip():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3))
    model[1].weight.requires_grad_(False)  # frozen: stays in the model, no master copy
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.001, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    master = MasterWeights(model)
    assert len(master.parameters) == 3  # linear weight and bias, norm bias
    state = master.full_precision_state_dict(model)
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert state["0.weight"].dtype == torch.float32 and state["0.weight"][0, 0].item() == pytest.approx(1.001, abs=1e-7)
    assert model[0].weight[0, 0].item() == 1.0  # bf16 cannot hold 1.001
    assert state["1.weight"].dtype == torch.bfloat16  # frozen: the model's own

    buffer = io.BytesIO()  # as accelerate writes a registered object into a checkpoint
    torch.save(master.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    with torch.no_grad():
        master.parameters[0].fill_(0.0)
    master.load_state_dict(saved)
    assert master.parameters[0][0, 0].item() == pytest.approx(1.001, abs=1e-7)
    with pytest.raises(ValueError, match="checkpoint has 2 master weights, the model 3"):
        master.load_state_dict({"master": saved["master"][:2]})
