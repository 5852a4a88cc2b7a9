"""bf16 training with fp32 master weights: the model computes in bf16, the optimizer updates fp32.

Autocast (what `mixed_precision: bf16` means in accelerate and TRL) keeps the weights in fp32
and casts at every matmul: each linear layer's weight and input are converted on the way in
and their gradients on the way back, and the residual stream, norms and activations between
matmuls stay fp32. Here the model itself is bf16, so no cast runs in the forward or backward
pass and the activations take half the memory, while the optimizer keeps fp32 copies of the
weights and its fp32 moments; after each step the model receives the rounded fp32 weights.
It is the scheme of DeepSpeed's and Megatron's bf16 modes. Updates smaller than a bf16 ulp
are not lost: they accumulate in the fp32 copy until they move the rounded weight.
"""

from __future__ import annotations

from typing import Any

import torch


class MasterWeights:
    """fp32 copies of a model's trainable weights, for the optimizer; the model becomes bf16.

    Per optimizer step: `gradients_to_master()` after the (all-reduced) backward pass, then clip
    and step on `parameters`, then `master_to_model()`. As a checkpointable object
    (`state_dict`/`load_state_dict`), the fp32 copies survive a resume exactly.
    """

    def __init__(self, model: Any):
        self.model_parameters = [p for p in model.parameters() if p.requires_grad]
        self.parameters = [torch.nn.Parameter(p.detach().float().clone()) for p in self.model_parameters]
        model.to(torch.bfloat16)

    @torch.no_grad()
    def gradients_to_master(self) -> None:
        """Move the model's bf16 gradients to the fp32 copies (the model's are released)."""
        for weight, master in zip(self.model_parameters, self.parameters):
            master.grad = None if weight.grad is None else weight.grad.float()
            weight.grad = None

    @torch.no_grad()
    def master_to_model(self) -> None:
        for weight, master in zip(self.model_parameters, self.parameters):
            weight.copy_(master)

    def full_precision_state_dict(self, model: Any) -> dict[str, Any]:
        """`model.state_dict()` with each trainable weight's fp32 copy in place of its bf16 one."""
        master_of = {id(weight): master for weight, master in zip(self.model_parameters, self.parameters)}
        return {name: master_of.get(id(value), value).detach()
                for name, value in model.state_dict(keep_vars=True).items()}

    def state_dict(self) -> dict[str, Any]:
        return {"master": [master.detach() for master in self.parameters]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["master"]
        if len(saved) != len(self.parameters):
            raise ValueError(f"checkpoint has {len(saved)} master weights, the model {len(self.parameters)}")
        with torch.no_grad():
            for master, value in zip(self.parameters, saved):
                master.copy_(value)
        self.master_to_model()
