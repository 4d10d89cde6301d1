"""Parameter roles: what each tensor of the model is, declared by the module that creates it.

``declare(module, name=role)`` next to a parameter's creation records one of

* ``embed``: the token embedding, the BigramHash and value-embedding tables (Adam, embedding LR);
* ``head``: the untied output head (Adam, head LR);
* ``matrix``: 2-D weights of the blocks and the BigramHash/value-embedding projections (Muon;
  quantised at export);
* ``control``: gains, mixes, gates, lane scalars and skip weights (Adam, scalar LR; kept fp32 at
  export), and the asymmetric logit caps (created with ``requires_grad=False``: no optimizer group).

``param_roles(model)`` reads them back by parameter name; the optimizer groups and the export policy
both use it, and a parameter declared nowhere is an error, never a guess from its name. The record
lives on the owning module, not the Parameter: deepcopy and some device moves make new Parameter
objects without their attributes, while a module's attributes survive copies, ``.to`` and
``load_state_dict``.
"""

from __future__ import annotations

from torch import nn

ROLES = ("embed", "head", "matrix", "control")


def declare(module: nn.Module, **roles: str) -> None:
    """Record the roles of ``module``'s own parameters by attribute name:
    ``declare(self, q_gain="control")``."""
    if not set(roles.values()) <= set(ROLES):
        raise ValueError(f"roles {roles}: each must be one of {ROLES}")
    vars(module).setdefault("param_roles", {}).update(roles)


def param_roles(model: nn.Module) -> dict[str, str]:
    """Every parameter's declared role by its name in ``model`` (``named_parameters`` order)."""
    roles = {}
    for name, _ in model.named_parameters():
        owner, _, attr = name.rpartition(".")
        role = getattr(model.get_submodule(owner), "param_roles", {}).get(attr)
        if role is None:
            raise ValueError(f"parameter {name} has no declared role (model.params.declare)")
        roles[name] = role
    return roles


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
