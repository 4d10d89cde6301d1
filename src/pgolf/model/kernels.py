"""The attention kernel, chosen once at start-up and logged (``train.attention``).

``scaled_dot_product_attention`` picks a backend per call and falls back without a word: with an
explicit mask (``model.doc_mask``), fp32 inputs or an odd head size it leaves the flash kernel for
one that may build the full T x T score matrix. Here the kernel is decided once, and a call the
decided kernel cannot run raises instead of falling back:

* ``fa3``: FlashAttention-3 (``flash_attn_interface.flash_attn_func``, Hopper GPUs), dense causal,
  as the contest's records ran it. The records' varlen form (per-document ``cu_seqlens``, which is
  what ``doc_mask`` means) is not in pgolf, so ``fa3`` refuses ``doc_mask``.
* ``flash``: SDPA's flash kernel alone (CUDA: no mask, half precision; a CPU has its own flash
  kernel, which takes a mask).
* ``efficient``: SDPA's memory-efficient kernel alone (CUDA only; takes ``doc_mask``'s mask, which
  it reads as a dense (B, 1, T, T) bool tensor: T^2 bytes per sequence of memory traffic).
* ``math``: SDPA's reference kernel (materialises the T x T scores), only when asked; compiled on a
  CPU at cpu-best's shape (T=256, 4 heads of 48) a step is 1.1x as fast as the flash kernel's
  (1-2.5% more steps in a 300 s run), so cpu-best asks for it.
* ``auto``: on CUDA, ``fa3`` when it is importable on a Hopper GPU and ``doc_mask`` is off, else
  ``flash`` without ``doc_mask`` (on sm80+) and ``efficient`` with it (or before Ampere); on a CPU,
  ``flash`` (T is small there).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from pgolf.errors import ConfigError

KERNELS = ("auto", "fa3", "flash", "efficient", "math")
SDPA_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def cuda_major(device: torch.device | None = None) -> int:
    """The GPU's compute capability major (9: Hopper, 8: Ampere); 0 without CUDA."""
    return torch.cuda.get_device_capability(device)[0] if torch.cuda.is_available() else 0


def fa3_function() -> Callable | None:
    """FlashAttention-3's ``flash_attn_func`` when it is installed and a Hopper GPU (sm90) is present."""
    if cuda_major() != 9:
        return None
    try:
        from flash_attn_interface import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def resolve_attention(requested: str, device: torch.device, doc_mask: bool) -> str:
    """The kernel ``requested`` (one of ``KERNELS``) resolves to on ``device``; ConfigError where it
    cannot run the model (so a run refuses at start-up, not after compiling)."""
    if requested not in KERNELS:
        raise ConfigError(f"train.attention={requested!r}; expected one of {', '.join(KERNELS)}")
    cuda = device.type == "cuda"
    ampere = not cuda or cuda_major(device) >= 8  # SDPA's flash kernel needs sm80+
    if requested == "auto":
        if not cuda:
            return "flash"
        if not doc_mask and fa3_function() is not None:
            return "fa3"
        return "efficient" if doc_mask or not ampere else "flash"
    if requested == "flash" and not ampere:
        raise ConfigError("train.attention=flash: SDPA's flash kernel needs an Ampere or newer GPU (sm80+)")
    if requested == "fa3" and (not cuda or fa3_function() is None):
        raise ConfigError("train.attention=fa3 needs flash_attn_interface (FlashAttention-3) on a Hopper GPU")
    if doc_mask and (requested == "fa3" or (cuda and requested == "flash")):
        raise ConfigError(
            f"train.attention={requested} takes no mask, and model.doc_mask needs one: use efficient "
            "(or math)"
        )
    if requested == "efficient" and not cuda:
        raise ConfigError("train.attention=efficient: SDPA has no memory-efficient kernel on a CPU")
    return requested


class Sdpa:
    """SDPA, pinned to one backend (None: SDPA's own choice, the default of a model no one pinned)."""

    def __init__(self, backend: SDPBackend | None = None) -> None:
        self.backend = backend

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """q (B, H, T, D), k and v (B, KV, T, D) -> (B, H, T, D); causal, or ``mask`` (B, 1, T, T)."""
        gqa = k.size(1) != q.size(1)
        if self.backend is None:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa
            )
        with sdpa_kernel([self.backend]):
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa
            )


class Fa3:
    """FlashAttention-3 on (B, T, H, D) half-precision tensors, grouped-query heads natively."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Under autocast the output is in its half dtype, as SDPA's is (q and k arrive in fp32 from
        the fp32 RMS norm; v in bf16); without autocast, in q's dtype."""
        autocast = torch.is_autocast_enabled(q.device.type)
        half = torch.get_autocast_dtype(q.device.type) if autocast else q.dtype
        half = half if half in (torch.float16, torch.bfloat16) else torch.bfloat16
        out = self.fn(*(t.transpose(1, 2).to(half) for t in (q, k, v)), causal=True)
        out = out[0] if isinstance(out, tuple) else out  # some FA3 builds also return the LSE
        return out.transpose(1, 2).to(half if autocast else q.dtype)


def kernel(name: str) -> Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]:
    """The callable for a resolved kernel name (``resolve_attention``)."""
    if name == "fa3":
        fn = fa3_function()
        if fn is None:
            raise ConfigError("train.attention=fa3: flash_attn_interface is not importable here")
        return Fa3(fn)
    return Sdpa(SDPA_BACKENDS[name])
