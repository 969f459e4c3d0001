"""Weight patterns for the ``admm`` methods: N:M semi-structured sparsity and k-bit grids.

Pure tensor functions, no model knowledge. Weights are ``nn.Linear.weight`` shaped
``(out_features, in_features)``: rows are output channels, and N:M blocks run along the
*input* dimension (M consecutive columns of one row). ``project_*`` are the Euclidean-style
projections Π_S that the ADMM Z-step uses; ``check_*`` raise :class:`ParamError` with a message
saying what to change.
"""

from __future__ import annotations

import torch

from prunelens.analysis.errors import ParamError


def check_nm(n: int, m: int, in_features: int | None = None, what: str = "the weight") -> None:
    """N:M must satisfy 1 <= N <= M and M must divide the input dimension."""
    if int(m) < 1 or int(n) < 1:
        raise ParamError(f"N:M pattern needs N >= 1 and M >= 1, got {n}:{m}")
    if n > m:
        raise ParamError(f"N:M pattern keeps N of every M weights, so N must not exceed M (got {n}:{m})")
    if in_features is not None and in_features % m:
        raise ParamError(
            f"M={m} does not divide the input dimension {in_features} of {what} "
            f"(choose an M that divides {in_features}, e.g. 2, 4 or 8)"
        )


def check_bits(bits: int) -> None:
    if int(bits) != bits or bits < 2:
        raise ParamError(f"k-bit quantization needs at least 2 bits, got {bits}")


def _blocks(weight: torch.Tensor, m: int) -> torch.Tensor:
    if weight.dim() != 2:
        raise ParamError(f"N:M patterns apply to 2-D weights, got shape {tuple(weight.shape)}")
    out, inp = weight.shape
    return weight.reshape(out, inp // m, m)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """0/1 mask (same dtype as ``weight``) keeping the N largest |w| in every block of M
    consecutive weights along the input dimension. Ties go to the lower column index."""
    check_nm(n, m, weight.shape[-1] if weight.dim() == 2 else None)
    blocks = _blocks(weight.detach(), m).abs()
    order = torch.argsort(-blocks, dim=-1, stable=True)[..., :n]
    mask = torch.zeros_like(blocks)
    mask.scatter_(-1, order, 1.0)
    return mask.reshape(weight.shape).to(weight.dtype)


def project_nm(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Π_S for N:M sparsity: ``weight`` with all but the N largest |w| per block set to zero."""
    return weight.detach() * nm_mask(weight, n, m)


def kbit_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel step of the symmetric grid: max|w_row| / (2^(bits-1) - 1)."""
    check_bits(bits)
    levels = 2 ** (bits - 1) - 1
    if weight.shape[-1] == 0:  # a matrix with no inputs left (a layer that lost every head)
        return torch.ones(*weight.shape[:-1], 1, dtype=weight.dtype, device=weight.device)
    scale = weight.detach().abs().amax(dim=-1, keepdim=True) / levels
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def project_kbit(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Round every row to its symmetric per-channel k-bit grid {-L..L}·scale, L = 2^(bits-1)-1
    (2^bits - 1 distinct values at most; the row's largest |w| is kept exactly)."""
    scale = kbit_scale(weight, bits)
    levels = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(weight.detach() / scale), -levels, levels) * scale


def block_counts(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Number of non-zero weights in every block of M (shape ``(out, in // M)``)."""
    return (_blocks(weight.detach(), m) != 0).sum(-1)


def exactly_n_fraction(weight: torch.Tensor, n: int, m: int) -> float:
    """Fraction of blocks holding exactly N non-zero weights (1.0 for a projected dense weight)."""
    return float((block_counts(weight, m) == n).double().mean())


def distinct_per_row(weight: torch.Tensor) -> torch.Tensor:
    """Number of distinct values in every row."""
    ordered = weight.detach().sort(dim=-1).values
    return 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(-1)
