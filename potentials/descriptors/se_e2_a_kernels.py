"""The environment matrix of se_e2_a and the pieces its exact and tabulated forms share, and
the fused kernels of the tabulated descriptor: environment, normalisation, tabulated
embedding and contraction in one pass over the neighbor list.

For center ``i`` of type ``c`` and slot ``j`` (neighbor type ``t_j``, vector ``r_ij``):

    ``row_ij = (sw(r)/r [1, x/r, y/r, z/r] - davg[c, t_j]) / dstd[c, t_j]``  (zero env if empty)
    ``T_i[a, m] = sum_j row_ij[a] * g_{t_j, m}(row_ij[0])``  ``[n, 4, M]``

with ``g_t`` the quintic table of the embedding net of type ``t`` (see
:mod:`nnpot.potentials.descriptors.se_e2_a_tables`). On CUDA with Triton installed, one kernel computes ``T`` and
one computes ``dL/dr_ij`` from ``dL/dT`` (recomputing the rows, storing nothing per
neighbor); elsewhere :func:`contract_reference` evaluates the same polynomials with torch
operations that autograd differentiates.

Table layout: ``coeffs[b, p, m]`` is the coefficient of ``u**p`` of channel ``m`` in bin ``b``,
with ``u = (x - lo) / h - b`` and ``b = clamp(floor((x - lo) / h), 0, nbins - 1)``; the tables
of all neighbor types are stacked, type ``t`` starting at bin ``offset[t]``. Outside a table the
end polynomials extrapolate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = ["contract_reference", "fused_descriptor_sum", "triton_available", "smooth_switch", "environment",
           "by_center_type", "type_rows", "descriptor_from_sum"]

try:  # Triton ships with CUDA builds of torch; CPU-only installs use the reference path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

_BLOCK_J = 16
_PROGRAMS = 2048  # below this many centers the forward kernel splits each center's slots


def triton_available() -> bool:
    """Whether the fused kernels can run (Triton importable)."""
    return triton is not None


def contract_reference(rows: torch.Tensor, coeffs: torch.Tensor, lo: float, inv_h: float) -> torch.Tensor:
    """``T[n, a, m] = sum_j rows[n, j, a] * g_m(rows[n, j, 0])`` for one neighbor type's rows
    ``[n, k, 4]`` and table ``coeffs`` ``[nbins, 6, M]``, with plain torch operations."""
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
    def _rows(rij_ptr, mask_ptr, base, jmask, c, tj, stat_ptr, n_types, rs, inv_width):
        """Environment rows of the slots ``base`` and what their derivatives need."""
        x = tl.load(rij_ptr + base * 3, mask=jmask, other=1.0)
        y = tl.load(rij_ptr + base * 3 + 1, mask=jmask, other=1.0)
        z = tl.load(rij_ptr + base * 3 + 2, mask=jmask, other=1.0)
        real = (tl.load(mask_ptr + base, mask=jmask, other=0) != 0) & jmask
        x = tl.where(real, x, 1.0)
        y = tl.where(real, y, 1.0)
        z = tl.where(real, z, 1.0)
        r = tl.sqrt(x * x + y * y + z * z)
        u = tl.minimum(tl.maximum((r - rs) * inv_width, 0.0), 1.0)
        sw = u * u * u * (u * (-6.0 * u + 15.0) - 10.0) + 1.0
        dsw = tl.where((u > 0.0) & (u < 1.0), u * u * (u * (-30.0 * u + 60.0) - 30.0) * inv_width, 0.0)
        sw = tl.where(real, sw, 0.0)
        dsw = tl.where(real, dsw, 0.0)
        inv_r = 1.0 / r
        e0 = sw * inv_r
        s = (c * n_types + tj) * 4  # statistics [Tc, Tn, 4] then, at +stat_stride, dstd
        return x, y, z, r, inv_r, sw, dsw, e0, s

    @triton.jit
    def _poly(coef_ptr, gidx, u, m, mmask, M: tl.constexpr, WITH_DERIV: tl.constexpr):
        """Value (and d/du) of the bin polynomials at ``u`` ``[J]`` for channels ``m``."""
        base = coef_ptr + gidx[:, None] * (6 * M) + m[None, :]
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
    def _locate(row0, tj, lo_ptr, off_ptr, nbins_ptr, inv_h):
        lo = tl.load(lo_ptr + tj)
        xx = (row0 - lo) * inv_h
        idx = tl.minimum(tl.maximum(xx, 0.0).to(tl.int32), tl.load(nbins_ptr + tj) - 1)
        return tl.load(off_ptr + tj) + idx, xx - idx.to(xx.dtype)

    @triton.jit(do_not_specialize=["K", "n_types", "stat_stride", "per_program", "side_stride"])
    def _fwd(rij_ptr, mask_ptr, ctype_ptr, coltype_ptr, stat_ptr, coef_ptr, lo_ptr, off_ptr, nbins_ptr,
             par_ptr, out_ptr, K, n_types, stat_stride, inv_h, per_program, side_stride,
             M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr, SPLIT: tl.constexpr):
        i = tl.program_id(0).to(tl.int64)
        first = tl.program_id(1) * per_program
        c = tl.load(ctype_ptr + i)
        rs = tl.load(par_ptr)
        inv_width = tl.load(par_ptr + 1)
        m = tl.arange(0, BLOCK_M)
        mmask = (m < M)[None, :]
        acc0 = tl.zeros([BLOCK_M], dtype=out_ptr.dtype.element_ty)
        acc1 = tl.zeros([BLOCK_M], dtype=out_ptr.dtype.element_ty)
        acc2 = tl.zeros([BLOCK_M], dtype=out_ptr.dtype.element_ty)
        acc3 = tl.zeros([BLOCK_M], dtype=out_ptr.dtype.element_ty)
        for j0 in range(first, tl.minimum(first + per_program, K), BLOCK_J):
            j = j0 + tl.arange(0, BLOCK_J)
            jmask = j < K
            tj = tl.load(coltype_ptr + j, mask=jmask, other=0)
            x, y, z, r, inv_r, sw, dsw, e0, s = _rows(rij_ptr, mask_ptr, i * K + j, jmask, c, tj, stat_ptr,
                                                      n_types, rs, inv_width)
            row0 = (e0 - tl.load(stat_ptr + s)) * tl.load(stat_ptr + stat_stride + s)
            row1 = (e0 * x * inv_r - tl.load(stat_ptr + s + 1)) * tl.load(stat_ptr + stat_stride + s + 1)
            row2 = (e0 * y * inv_r - tl.load(stat_ptr + s + 2)) * tl.load(stat_ptr + stat_stride + s + 2)
            row3 = (e0 * z * inv_r - tl.load(stat_ptr + s + 3)) * tl.load(stat_ptr + stat_stride + s + 3)
            gidx, u = _locate(row0, c * side_stride + tj, lo_ptr, off_ptr, nbins_ptr, inv_h)
            g, _ = _poly(coef_ptr, gidx, u, m, mmask, M, False)
            g = tl.where(jmask[:, None], g, 0.0)
            acc0 += tl.sum(g * row0[:, None], axis=0)
            acc1 += tl.sum(g * row1[:, None], axis=0)
            acc2 += tl.sum(g * row2[:, None], axis=0)
            acc3 += tl.sum(g * row3[:, None], axis=0)
        out = out_ptr + i * 4 * M + m
        keep = m < M
        if SPLIT:  # several programs share this center's slots
            tl.atomic_add(out, acc0, mask=keep)
            tl.atomic_add(out + M, acc1, mask=keep)
            tl.atomic_add(out + 2 * M, acc2, mask=keep)
            tl.atomic_add(out + 3 * M, acc3, mask=keep)
        else:
            tl.store(out, acc0, mask=keep)
            tl.store(out + M, acc1, mask=keep)
            tl.store(out + 2 * M, acc2, mask=keep)
            tl.store(out + 3 * M, acc3, mask=keep)

    @triton.jit(do_not_specialize=["K", "n_types", "stat_stride", "side_stride"])
    def _bwd(rij_ptr, mask_ptr, ctype_ptr, coltype_ptr, stat_ptr, coef_ptr, lo_ptr, off_ptr, nbins_ptr,
             par_ptr, gout_ptr, grad_ptr, K, n_types, stat_stride, inv_h, side_stride,
             M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr):
        i = tl.program_id(0).to(tl.int64)
        c = tl.load(ctype_ptr + i)
        rs = tl.load(par_ptr)
        inv_width = tl.load(par_ptr + 1)
        m = tl.arange(0, BLOCK_M)
        keep = m < M
        mmask = keep[None, :]
        gout = gout_ptr + i * 4 * M + m
        go0 = tl.load(gout, mask=keep, other=0.0)[None, :]
        go1 = tl.load(gout + M, mask=keep, other=0.0)[None, :]
        go2 = tl.load(gout + 2 * M, mask=keep, other=0.0)[None, :]
        go3 = tl.load(gout + 3 * M, mask=keep, other=0.0)[None, :]
        for j0 in range(tl.program_id(1) * BLOCK_J, (tl.program_id(1) + 1) * BLOCK_J, BLOCK_J):  # one block
            j = j0 + tl.arange(0, BLOCK_J)
            jmask = j < K
            tj = tl.load(coltype_ptr + j, mask=jmask, other=0)
            x, y, z, r, inv_r, sw, dsw, e0, s = _rows(rij_ptr, mask_ptr, i * K + j, jmask, c, tj, stat_ptr,
                                                      n_types, rs, inv_width)
            sd0 = tl.load(stat_ptr + stat_stride + s)
            sd1 = tl.load(stat_ptr + stat_stride + s + 1)
            sd2 = tl.load(stat_ptr + stat_stride + s + 2)
            sd3 = tl.load(stat_ptr + stat_stride + s + 3)
            row0 = (e0 - tl.load(stat_ptr + s)) * sd0
            row1 = (e0 * x * inv_r - tl.load(stat_ptr + s + 1)) * sd1
            row2 = (e0 * y * inv_r - tl.load(stat_ptr + s + 2)) * sd2
            row3 = (e0 * z * inv_r - tl.load(stat_ptr + s + 3)) * sd3
            gidx, u = _locate(row0, c * side_stride + tj, lo_ptr, off_ptr, nbins_ptr, inv_h)
            g, dg = _poly(coef_ptr, gidx, u, m, mmask, M, True)
            w = row0[:, None] * go0 + row1[:, None] * go1 + row2[:, None] * go2 + row3[:, None] * go3
            # dL/d(env) through the normalisation
            ge0 = (tl.sum(g * go0, axis=1) + tl.sum(dg * w, axis=1) * inv_h) * sd0
            ge1 = tl.sum(g * go1, axis=1) * sd1
            ge2 = tl.sum(g * go2, axis=1) * sd2
            ge3 = tl.sum(g * go3, axis=1) * sd3
            # env0 = sw/r, env_a = (sw/r^2) x_a: d/dx_a = x_a/r (ge0 f' + g' sum_b ge_b x_b) + (sw/r^2) ge_a
            inv_r2 = inv_r * inv_r
            df = (dsw * r - sw) * inv_r2
            dgr = (dsw * r - 2.0 * sw) * inv_r2 * inv_r
            radial = (ge0 * df + dgr * (ge1 * x + ge2 * y + ge3 * z)) * inv_r
            tang = sw * inv_r2
            grad = grad_ptr + (i * K + j) * 3
            tl.store(grad, radial * x + tang * ge1, mask=jmask)
            tl.store(grad + 1, radial * y + tang * ge2, mask=jmask)
            tl.store(grad + 2, radial * z + tang * ge3, mask=jmask)


class _Fused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rij, mask, center_types, col_types, stats, coeffs, lo, offsets, nbins, params, inv_h, M,
                side_stride):
        rij = rij.contiguous()
        n, K, _ = rij.shape
        blocks = triton.cdiv(K, _BLOCK_J)
        split = max(1, min(blocks, _PROGRAMS // max(n, 1)))  # small systems: share the slots out
        per_program = triton.cdiv(blocks, split) * _BLOCK_J
        split = triton.cdiv(K, per_program)
        out = rij.new_zeros(n, 4, M) if split > 1 else rij.new_empty(n, 4, M)
        args = (mask, center_types, col_types, stats, coeffs, lo, offsets, nbins, params)
        ctx.save_for_backward(rij, *args)
        ctx.meta = (K, stats.shape[1], stats[0].numel(), inv_h, M, side_stride)
        if n:
            _fwd[(n, split)](rij, *args, out, K, stats.shape[1], stats[0].numel(), inv_h, per_program, side_stride,
                             M=M, BLOCK_M=triton.next_power_of_2(M), BLOCK_J=_BLOCK_J, SPLIT=split > 1)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        rij, *args = ctx.saved_tensors
        K, n_types, stat_stride, inv_h, M, side_stride = ctx.meta
        grad = torch.empty_like(rij)
        if rij.shape[0]:
            _bwd[(rij.shape[0], triton.cdiv(K, _BLOCK_J))](rij, *args, gout.contiguous(), grad, K, n_types, stat_stride, inv_h,
                                  side_stride,
                                  M=M, BLOCK_M=triton.next_power_of_2(M), BLOCK_J=_BLOCK_J)
        return (grad,) + (None,) * 12


def fused_descriptor_sum(rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
                         col_types: torch.Tensor, stats: torch.Tensor, coeffs: torch.Tensor, lo: torch.Tensor,
                         offsets: torch.Tensor, nbins: torch.Tensor, params: torch.Tensor, inv_h: float,
                         side_stride: int = 0) -> torch.Tensor:
    """``T`` ``[n, 4, M]`` (see the module docstring) by the Triton kernels; differentiable once
    with respect to ``rij`` (forces and virials, not force training).

    Args:
        rij: ``[n, K, 3]`` neighbor vectors; mask: ``[n, K]`` real slots (as uint8).
        center_types: ``[n]`` model types; col_types: ``[K]`` int32 neighbor type of each slot.
        stats: ``[2, Tc, Tn, 4]`` davg and 1 / dstd; coeffs: ``[sum nbins, 6, M]`` stacked tables.
        lo, offsets, nbins: per table origin, first bin and bin count; table
            ``center_type * side_stride + neighbor_type`` (side_stride 0: one table per
            neighbor type, ``n_types``: one per type pair).
        params: ``[rcut_smth, 1 / (rcut - rcut_smth)]`` in the dtype of ``rij``.
    """
    if triton is None:
        raise RuntimeError("the fused tabulated kernels need Triton (pip install triton)")
    return _Fused.apply(rij, mask, center_types, col_types, stats, coeffs, lo, offsets, nbins, params, inv_h,
                        coeffs.shape[2], int(side_stride))


# --- the environment matrix and shared pieces of the exact and tabulated forms -------------


def smooth_switch(r: torch.Tensor, rcut_smth: float, rcut: float) -> torch.Tensor:
    """DeePMD's switching function ``sw(r)`` (see the module docstring)."""
    u = ((r - rcut_smth) / (rcut - rcut_smth)).clamp(0.0, 1.0)
    return u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


def environment(rij: torch.Tensor, mask: torch.Tensor, rcut_smth: float, rcut: float) -> torch.Tensor:
    """Raw environment rows ``sw(r)/r [1, x/r, y/r, z/r]``, zero for empty slots.

    Args:
        rij: ``[n, nnei, 3]`` neighbor vectors, Angstrom.
        mask: ``[n, nnei]`` True for real neighbors.
    Returns:
        ``[n, nnei, 4]``.
    """
    safe = torch.where(mask[..., None], rij, torch.ones_like(rij))  # no 0/0 in empty slots
    r = safe.norm(dim=-1, keepdim=True)
    sw = smooth_switch(r, rcut_smth, rcut) * mask[..., None]
    inv_r = 1.0 / r
    return torch.cat([sw * inv_r, sw * safe * inv_r * inv_r], dim=-1)


def by_center_type(center_types: torch.Tensor, n_types: int, fn: Callable[[int, torch.Tensor | None], torch.Tensor],
                   sync_free: bool | None = None) -> torch.Tensor:
    """Rows ``[n, ...]`` made per center type: ``fn(c, idx)`` gives the rows of the centers
    ``idx`` of type ``c``. With ``sync_free`` (default: on CUDA, where finding ``idx`` would wait
    on the device, which CUDA graphs forbid) ``idx`` is None, ``fn`` gives every row and each
    type's rows are kept."""
    if sync_free is None:
        sync_free = center_types.is_cuda
    if sync_free or center_types.numel() == 0:
        out = None
        for c in range(n_types):
            rows = fn(c, None)
            keep = (center_types == c).view(-1, *[1] * (rows.dim() - 1))
            out = rows if out is None else torch.where(keep, rows, out)
        return out
    out = None
    for c in range(n_types):
        idx = torch.nonzero(center_types == c).squeeze(1)
        if idx.numel():
            rows = fn(c, idx)
            out = rows.new_zeros(center_types.shape[0], *rows.shape[1:]) if out is None else out
            out = out.index_copy(0, idx, rows)
    return out


def type_rows(desc: nn.Module, rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
              capacity: tuple[int, ...]) -> Iterator[tuple[int, torch.Tensor]]:
    """``(t, rows)`` per neighbor type: the normalised environment rows ``[n, capacity[t], 4]``
    of ``desc`` (an se_e2_a descriptor with ``davg``/``dstd``, ``rcut_smth``, ``rcut``)."""
    env = environment(rij, mask, desc.rcut_smth, desc.rcut)  # [n, nnei, 4]
    davg, dstd = desc.davg[center_types], desc.dstd[center_types]  # [n, T, 4]
    start = 0
    for t, cap in enumerate(capacity):
        yield t, (env[:, start:start + cap] - davg[:, t, None]) / dstd[:, t, None]
        start += cap


def descriptor_from_sum(desc: nn.Module, T: torch.Tensor) -> torch.Tensor:
    """``D = T^T T[:, :M2]`` flattened ``[n, M1 * M2]`` from the summed ``T`` ``[n, 4, M1]``
    (before division by the slot count ``desc.nnei``)."""
    T = T / desc.nnei
    D = torch.einsum("ncm,nca->nma", T, T[:, :, : desc.axis_neuron])  # [n, M1, M2]
    return D.reshape(T.shape[0], -1)
