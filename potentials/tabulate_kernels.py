"""The fused "tabulate, embed and contract" step of a tabulated se_e2_a descriptor.

For one neighbor type, with environment rows ``R_ij`` ``[n, k, 4]`` and a quintic table of the
embedding net ``g`` (see :mod:`nnpot.potentials.tabulate`), this computes

    ``T_i[c, m] = sum_j R_ij[c] * g_m(R_ij[0])``  ``[n, 4, M]``

without materialising ``g`` for every neighbor. On CUDA, with Triton installed, one kernel per
direction does it (the backward pass gives ``dL/dR`` including the path through ``g``); on
other devices the same polynomial is evaluated with plain torch operations, which autograd
differentiates. Both paths give the same numbers to rounding.

Table layout: ``coeffs[b, p, m]`` is the coefficient of ``u**p`` of channel ``m`` in bin ``b``,
with ``u = (x - lo) / h - b`` and ``b = clamp(floor((x - lo) / h), 0, nbins - 1)``; outside the
table the end polynomials extrapolate.
"""

from __future__ import annotations

import torch

__all__ = ["contract", "contract_reference", "triton_available"]

try:  # Triton ships with CUDA builds of torch; CPU-only installs use the reference path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

_BLOCK_J = 16


def triton_available() -> bool:
    """Whether the fused kernels can run (Triton importable)."""
    return triton is not None


def contract_reference(rows: torch.Tensor, coeffs: torch.Tensor, lo: float, inv_h: float) -> torch.Tensor:
    """``T[n, c, m] = sum_j rows[n, j, c] * g_m(rows[n, j, 0])`` with plain torch operations."""
    nbins = coeffs.shape[0]
    x = (rows[..., 0] - lo) * inv_h
    idx = x.detach().floor().clamp(0, nbins - 1).long()
    u = (x - idx.to(x.dtype))[..., None]
    g = coeffs[idx, 5]
    for p in range(4, -1, -1):
        g = g * u + coeffs[idx, p]
    return torch.einsum("njc,njm->ncm", rows, g)


if triton is not None:

    @triton.jit
    def _poly(coef_ptr, idx, u, m, mmask, M: tl.constexpr, WITH_DERIV: tl.constexpr):
        """Value (and d/du) of the bin polynomials at ``u`` ``[J]`` for channels ``m``."""
        base = coef_ptr + idx[:, None] * (6 * M) + m[None, :]
        uu = u[:, None]
        c5 = tl.load(base + 5 * M, mask=mmask, other=0.0)
        c4 = tl.load(base + 4 * M, mask=mmask, other=0.0)
        c3 = tl.load(base + 3 * M, mask=mmask, other=0.0)
        c2 = tl.load(base + 2 * M, mask=mmask, other=0.0)
        c1 = tl.load(base + 1 * M, mask=mmask, other=0.0)
        c0 = tl.load(base, mask=mmask, other=0.0)
        g = ((((c5 * uu + c4) * uu + c3) * uu + c2) * uu + c1) * uu + c0
        if WITH_DERIV:
            dg = (((5.0 * c5 * uu + 4.0 * c4) * uu + 3.0 * c3) * uu + 2.0 * c2) * uu + c1
        else:
            dg = g
        return g, dg

    @triton.jit
    def _locate(r0, lo, inv_h, nbins):
        x = (r0 - lo) * inv_h
        idx = tl.minimum(tl.maximum(x, 0.0).to(tl.int32), nbins - 1)
        return idx, x - idx.to(x.dtype)

    @triton.jit(do_not_specialize=["k", "nbins"])  # one compiled kernel for every list length
    def _contract_fwd(rows_ptr, coef_ptr, out_ptr, k, nbins, lo, inv_h,
                      M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr):
        i = tl.program_id(0).to(tl.int64)
        m = tl.arange(0, BLOCK_M)
        mmask = (m < M)[None, :]
        acc0 = tl.zeros([BLOCK_M], dtype=rows_ptr.dtype.element_ty)
        acc1 = tl.zeros([BLOCK_M], dtype=rows_ptr.dtype.element_ty)
        acc2 = tl.zeros([BLOCK_M], dtype=rows_ptr.dtype.element_ty)
        acc3 = tl.zeros([BLOCK_M], dtype=rows_ptr.dtype.element_ty)
        for j0 in range(0, k, BLOCK_J):
            j = j0 + tl.arange(0, BLOCK_J)
            jmask = j < k
            row = rows_ptr + (i * k + j) * 4
            r0 = tl.load(row, mask=jmask, other=0.0)
            r1 = tl.load(row + 1, mask=jmask, other=0.0)
            r2 = tl.load(row + 2, mask=jmask, other=0.0)
            r3 = tl.load(row + 3, mask=jmask, other=0.0)
            idx, u = _locate(r0, lo, inv_h, nbins)
            g, _ = _poly(coef_ptr, idx, u, m, mmask, M, False)
            acc0 += tl.sum(g * r0[:, None], axis=0)
            acc1 += tl.sum(g * r1[:, None], axis=0)
            acc2 += tl.sum(g * r2[:, None], axis=0)
            acc3 += tl.sum(g * r3[:, None], axis=0)
        out = out_ptr + i * 4 * M + m
        keep = m < M
        tl.store(out, acc0, mask=keep)
        tl.store(out + M, acc1, mask=keep)
        tl.store(out + 2 * M, acc2, mask=keep)
        tl.store(out + 3 * M, acc3, mask=keep)

    @triton.jit(do_not_specialize=["k", "nbins"])
    def _contract_bwd(rows_ptr, coef_ptr, gout_ptr, grad_ptr, k, nbins, lo, inv_h,
                      M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr):
        i = tl.program_id(0).to(tl.int64)
        m = tl.arange(0, BLOCK_M)
        keep = m < M
        mmask = keep[None, :]
        gout = gout_ptr + i * 4 * M + m
        go0 = tl.load(gout, mask=keep, other=0.0)[None, :]
        go1 = tl.load(gout + M, mask=keep, other=0.0)[None, :]
        go2 = tl.load(gout + 2 * M, mask=keep, other=0.0)[None, :]
        go3 = tl.load(gout + 3 * M, mask=keep, other=0.0)[None, :]
        for j0 in range(0, k, BLOCK_J):
            j = j0 + tl.arange(0, BLOCK_J)
            jmask = j < k
            row = rows_ptr + (i * k + j) * 4
            r0 = tl.load(row, mask=jmask, other=0.0)
            r1 = tl.load(row + 1, mask=jmask, other=0.0)
            r2 = tl.load(row + 2, mask=jmask, other=0.0)
            r3 = tl.load(row + 3, mask=jmask, other=0.0)
            idx, u = _locate(r0, lo, inv_h, nbins)
            g, dg = _poly(coef_ptr, idx, u, m, mmask, M, True)
            w = r0[:, None] * go0 + r1[:, None] * go1 + r2[:, None] * go2 + r3[:, None] * go3
            grad = grad_ptr + (i * k + j) * 4
            tl.store(grad, tl.sum(g * go0, axis=1) + tl.sum(dg * w, axis=1) * inv_h, mask=jmask)
            tl.store(grad + 1, tl.sum(g * go1, axis=1), mask=jmask)
            tl.store(grad + 2, tl.sum(g * go2, axis=1), mask=jmask)
            tl.store(grad + 3, tl.sum(g * go3, axis=1), mask=jmask)


def _launch_fwd(rows: torch.Tensor, coeffs: torch.Tensor, lo: float, inv_h: float) -> torch.Tensor:
    n, k, _ = rows.shape
    M = coeffs.shape[2]
    out = rows.new_empty(n, 4, M)
    if n:
        _contract_fwd[(n,)](rows, coeffs, out, k, coeffs.shape[0], lo, inv_h,
                            M=M, BLOCK_M=triton.next_power_of_2(M), BLOCK_J=_BLOCK_J)
    return out


def _launch_bwd(rows: torch.Tensor, coeffs: torch.Tensor, gout: torch.Tensor, lo: float, inv_h: float) -> torch.Tensor:
    n, k, _ = rows.shape
    M = coeffs.shape[2]
    grad = torch.empty_like(rows)
    if n:
        _contract_bwd[(n,)](rows, coeffs, gout.contiguous(), grad, k, coeffs.shape[0], lo, inv_h,
                            M=M, BLOCK_M=triton.next_power_of_2(M), BLOCK_J=_BLOCK_J)
    return grad


class _FusedContract(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, coeffs, lo, inv_h):
        rows = rows.contiguous()
        ctx.save_for_backward(rows, coeffs)
        ctx.lo, ctx.inv_h = lo, inv_h
        return _launch_fwd(rows, coeffs, lo, inv_h)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        rows, coeffs = ctx.saved_tensors
        return _launch_bwd(rows, coeffs, gout, ctx.lo, ctx.inv_h), None, None, None


def contract(rows: torch.Tensor, coeffs: torch.Tensor, lo: float, inv_h: float,
             fused: bool | None = None) -> torch.Tensor:
    """``T[n, c, m] = sum_j rows[n, j, c] * g_m(rows[n, j, 0])`` ``[n, 4, M]``.

    Args:
        rows: ``[n, k, 4]`` normalised environment rows of one neighbor type.
        coeffs: ``[nbins, 6, M]`` the table of ``g`` (same dtype and device as ``rows``).
        lo, inv_h: the table's origin and inverse bin width.
        fused: use the Triton kernels; default: when ``rows`` is on CUDA and Triton is
            installed. The fused path is differentiable once (forces, not force training).
    """
    if fused is None:
        fused = rows.is_cuda and triton is not None
    if fused:
        if triton is None:
            raise RuntimeError("the fused tabulated kernels need Triton (pip install triton)")
        return _FusedContract.apply(rows, coeffs, lo, inv_h)
    return contract_reference(rows, coeffs, lo, inv_h)
