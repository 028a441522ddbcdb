"""DeePMD-kit se_e2_a energy models to and from nnpot's :class:`EnergyModel`.

The tree is DeePMD-kit 3's serialisation (``deepmd/dpmodel``; file container in
:mod:`nnpot.interop.deepmd_file`). What maps onto nnpot, one to one:

* ``model`` (``@class`` Model, ``type`` standard): ``type_map``; ``@variables.out_bias``
  ``[1, n_types, 1]``, added to the atomic energy;
* ``model.descriptor`` (``type`` se_e2_a): ``rcut``, ``rcut_smth``, ``sel``, ``neuron``,
  ``axis_neuron``, ``resnet_dt``, ``type_one_side``, ``activation_function``; ``davg``/``dstd``
  ``[n_types, sum(sel), 4]``, constant within each neighbor type's block, nnpot's
  ``[n_types, n_types, 4]``; ``embeddings``: a NetworkCollection of ``n_types`` (one side) or
  ``n_types**2`` EmbeddingNetworks, net ``(t_i, t_j)`` at ``t_j * n_types + t_i`` (nnpot's
  ``t_i * n_types + t_j``);
* ``model.fitting`` (``type`` ener): ``neuron``, ``resnet_dt``, ``activation_function``;
  ``nets``, one FittingNetwork per type (or one shared, ``mixed_types``); ``bias_atom_e``
  ``[n_types, 1]``.

Each layer holds ``w`` ``[in, out]`` (nnpot's ``weight`` transposed), ``b`` and, on residual
layers with ``resnet_dt``, ``idt``: ``y = act(x w + b) * idt + x`` (or ``+ [x, x]``), which is
:class:`nnpot.nn.MLP`. nnpot's energy bias is ``bias_atom_e + out_bias``; export writes it
as ``bias_atom_e`` with a zero ``out_bias``, so a round trip keeps every bit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnpot import __version__
from nnpot.errors import ConfigError, ModelFileError
from nnpot.interop.deepmd_file import read_deepmd_file, write_deepmd_file
from nnpot.nn import MLP, is_activation
from nnpot.potentials.config import ModelConfig
from nnpot.potentials.descriptors.se_e2_a import SeE2AConfig
from nnpot.potentials.model import EnergyModel

__all__ = ["SUPPORTED", "UnsupportedModelError", "model_from_deepmd", "deepmd_from_model", "load_deepmd_model",
           "save_deepmd_model"]

SUPPORTED = ("nnpot reads and writes DeePMD-kit se_e2_a energy models ('standard' model, 'ener' fitting, "
             "either type_one_side, any sel, type map, widths and activation), without exclude_types, frame "
             "or atomic parameters, case embeddings, atom_ener, spin, env_protection or the exponential switch")

#: newest @version of each @class the reader knows (older versions have the same fields)
KNOWN_VERSIONS = {"Model": 2, "Descriptor": 2, "Fitting": 4, "NetworkCollection": 1, "EmbeddingNetwork": 2,
                  "FittingNetwork": 1, "Layer": 2}

_ACTIVATION_ALIASES = {"none": "linear", "gelu_tf": "gelu"}


class UnsupportedModelError(ModelFileError):
    """A DeePMD-kit model uses a feature nnpot cannot represent."""


def _unsupported(what: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{what}: not supported. {SUPPORTED}.")


def _check_node(node: Any, cls: str, where: str) -> dict:
    if not isinstance(node, dict):
        raise ModelFileError(f"{where}: expected a {cls} section, found {type(node).__name__}")
    if node.get("@class", cls) != cls:
        raise _unsupported(f"{where} is a {node.get('@class')!r}, not a {cls}")
    version = node.get("@version", 1)
    if not isinstance(version, int) or version > KNOWN_VERSIONS[cls]:
        raise ModelFileError(f"{where}: {cls} @version {version} is newer than this nnpot reads "
                             f"({KNOWN_VERSIONS[cls]}); update nnpot, or convert with the DeePMD-kit that wrote it")
    return node


def _activation(name: Any, where: str) -> str:
    name = str(name)
    name = _ACTIVATION_ALIASES.get(name.lower(), name)
    if name.startswith("custom_silu"):
        name = "silut" + name[len("custom_silu"):]
    if not is_activation(name):
        raise _unsupported(f"{where}: activation {name!r}")
    return name


def _empty(value: Any) -> bool:
    return value is None or (hasattr(value, "__len__") and len(value) == 0) or value is False or value == 0


def _check_absent(node: dict, keys: dict[str, str], where: str) -> None:
    """Refuse features (key -> what it is) that are set in ``node``."""
    for key, what in keys.items():
        value = node.get(key)
        if isinstance(value, list) and all(v is None for v in value):
            continue
        if not _empty(value):
            raise _unsupported(f"{where}: {what} ({key} = {value!r})")


# ---------------------------------------------------------------------------------------------
# DeePMD-kit -> nnpot


def model_from_deepmd(tree: dict[str, Any], source: str = "model") -> EnergyModel:
    """The :class:`EnergyModel` of a DeePMD-kit tree (a file's top level, or its ``model``)."""
    raw = tree.get("model", tree)
    # what nnpot cannot represent is said before any version: a dpa2 file is unsupported, not "newer"
    if isinstance(raw, dict) and raw.get("type", "standard") != "standard":
        raise _unsupported(f"{source}: a {raw.get('type')!r} model (models other than plain energy models)")
    if isinstance(raw, dict) and isinstance(raw.get("descriptor"), dict) and raw["descriptor"].get("type") != "se_e2_a":
        raise _unsupported(f"{source}: descriptor type {raw['descriptor'].get('type')!r}")
    m = _check_node(raw, "Model", f"{source}: model")
    _check_absent(m, {"atom_exclude_types": "excluded atom types", "pair_exclude_types": "excluded type pairs",
                      "spin": "spin"}, f"{source}: model")
    desc = _check_node(m.get("descriptor"), "Descriptor", f"{source}: descriptor")
    fit = _check_node(m.get("fitting"), "Fitting", f"{source}: fitting")
    if desc.get("type") != "se_e2_a":
        raise _unsupported(f"{source}: descriptor type {desc.get('type')!r}")
    if fit.get("type", "ener") != "ener" or fit.get("var_name", "energy") != "energy" or fit.get("dim_out", 1) != 1:
        raise _unsupported(f"{source}: a {fit.get('type')!r} fitting (models other than energy models)")
    _check_absent(desc, {"exclude_types": "excluded type pairs", "env_protection": "env_protection",
                         "spin": "spin"}, f"{source}: descriptor")
    if (desc.get("env_mat") or {}).get("use_exp_switch") or (desc.get("env_mat") or {}).get("protection"):
        raise _unsupported(f"{source}: descriptor env_mat with the exponential switch or protection")
    _check_absent(fit, {"numb_fparam": "frame parameters", "numb_aparam": "atomic parameters",
                        "dim_case_embd": "case embeddings", "exclude_types": "excluded atom types",
                        "atom_ener": "atom_ener", "spin": "spin"}, f"{source}: fitting")

    config = _config_from_deepmd(m, desc, fit, source)
    try:
        model = EnergyModel(config.validate())
    except ConfigError as exc:
        raise _unsupported(f"{source}: {exc}") from None
    with torch.no_grad():
        _load_descriptor(model, desc, source)
        _load_fitting(model, fit, source)
        bias = _array(fit["@variables"], "bias_atom_e", (len(config.type_map), 1), source)[:, 0]
        out_bias = (m.get("@variables") or {}).get("out_bias")
        if out_bias is not None:
            out_bias = np.asarray(out_bias)
            if out_bias.shape != (1, len(config.type_map), 1):
                raise ModelFileError(f"{source}: out_bias has shape {out_bias.shape}, expected "
                                     f"(1, {len(config.type_map)}, 1)")
            bias = bias + out_bias[0, :, 0]
        model.energy_bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
    model.meta = {"format": "deepmd-kit", "deepmd_version": tree.get("version"), "source": source}
    return model.eval()


def _precision(node: dict, where: str) -> str:
    p = str(node.get("precision", "float64")).lower()
    p = {"default": "float64", "double": "float64", "float": "float32", "single": "float32"}.get(p, p)
    if p not in ("float64", "float32"):
        raise _unsupported(f"{where}: precision {p!r}")
    return p


def _config_from_deepmd(m: dict, desc: dict, fit: dict, source: str) -> ModelConfig:
    type_map = list(m.get("type_map") or desc.get("type_map") or [])
    dtypes = {_precision(desc, f"{source}: descriptor"), _precision(fit, f"{source}: fitting")}
    if len(dtypes) != 1:
        raise _unsupported(f"{source}: a descriptor and fitting of different precisions")
    try:
        descriptor = SeE2AConfig(
            rcut=float(desc["rcut"]), rcut_smth=float(desc["rcut_smth"]), sel=[int(s) for s in desc["sel"]],
            neuron=[int(n) for n in desc["neuron"]], axis_neuron=int(desc["axis_neuron"]),
            activation=_activation(desc.get("activation_function", "tanh"), f"{source}: descriptor"),
            resnet_dt=bool(desc.get("resnet_dt", False)), type_one_side=bool(desc.get("type_one_side", True)))
        config = ModelConfig(type_map=type_map, descriptor=descriptor, dtype=dtypes.pop())
        config.fitting.neuron = [int(n) for n in fit["neuron"]]
        config.fitting.resnet_dt = bool(fit.get("resnet_dt", True))
        config.fitting.activation = _activation(fit.get("activation_function", "tanh"), f"{source}: fitting")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: the se_e2_a/ener sections are incomplete ({type(exc).__name__}: {exc})") from None
    return config


def _array(variables: dict, key: str, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    value = variables.get(key) if isinstance(variables, dict) else None
    if value is None:
        raise ModelFileError(f"{where}: variable {key!r} is missing")
    value = np.asarray(value)
    if shape is not None and value.shape != shape:
        raise ModelFileError(f"{where}: variable {key!r} has shape {value.shape}, expected {shape}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ModelFileError(f"{where}: variable {key!r} holds NaN or inf (a damaged model?)")
    return value


def _networks(collection: Any, ndim: int | None, n_types: int, where: str) -> list[dict]:
    coll = _check_node(collection, "NetworkCollection", where)
    nets = coll.get("networks") or []
    if ndim is not None and coll.get("ndim") != ndim:
        raise _unsupported(f"{where}: networks indexed by {coll.get('ndim')} types, expected {ndim}")
    if len(nets) != n_types ** int(coll.get("ndim", 1)):
        raise ModelFileError(f"{where}: {len(nets)} networks for {n_types} types and ndim {coll.get('ndim')}")
    return nets


def _load_net(mlp: MLP, node: dict, cls: str, where: str) -> None:
    """Copy a DeePMD-kit network's layers into ``mlp``, checking that their structure matches."""
    node = _check_node(node, cls, where)
    layers = node.get("layers") or []
    if len(layers) != len(mlp.layers):
        raise ModelFileError(f"{where}: {len(layers)} layers, expected {len(mlp.layers)}")
    for k, (layer, linear) in enumerate(zip(layers, mlp.layers)):
        at = f"{where} layer {k}"
        layer = _check_node(layer, "Layer", at)
        var = layer.get("@variables") or {}
        shape = (linear.in_features, linear.out_features)
        linear.weight.copy_(torch.from_numpy(_array(var, "w", shape, at).T.copy()))
        if var.get("b") is None:
            raise _unsupported(f"{at}: a layer without bias")
        linear.bias.copy_(torch.from_numpy(_array(var, "b", (shape[1],), at)))
        last_linear = k == len(mlp.layers) - 1 and mlp.final_linear
        want_act = "linear" if last_linear else mlp.act_name
        if _activation(layer.get("activation_function", "none"), at) != want_act:
            raise _unsupported(f"{at}: activation {layer.get('activation_function')!r} where {want_act!r} is expected")
        if mlp.residual[k] and not layer.get("resnet", False):
            raise _unsupported(f"{at}: a layer without the residual connection of its width")
        dt = mlp.dts[k]
        idt = var.get("idt")
        if (idt is None) != (dt.numel() == 0):
            raise ModelFileError(f"{where}: resnet_dt does not match layer {k}'s timestep")
        if idt is not None:
            dt.copy_(torch.from_numpy(_array(var, "idt", (shape[1],), at)))


def _load_descriptor(model: EnergyModel, desc: dict, source: str) -> None:
    d = model.descriptor
    n, sel = d.n_types, d.sel
    nets = _networks(desc.get("embeddings"), 1 if d.type_one_side else 2, n, f"{source}: descriptor embeddings")
    for e, mlp in enumerate(d.embeddings):
        k = _deepmd_embedding_index(d, e)
        _load_net(mlp, nets[k], "EmbeddingNetwork", f"{source}: embedding net {k}")
    var = desc.get("@variables") or {}
    starts = np.cumsum([0, *sel])
    for key, buf in (("davg", d.davg), ("dstd", d.dstd)):
        full = _array(var, key, (n, int(starts[-1]), 4), f"{source}: descriptor")
        blocks = [full[:, starts[t]:starts[t + 1]] for t in range(n)]
        if any((b != b[:, :1]).any() for b in blocks):
            raise _unsupported(f"{source}: descriptor {key} that varies between slots of one neighbor type")
        buf.copy_(torch.from_numpy(np.stack([b[:, 0] for b in blocks], axis=1)))
    if not (d.dstd > 0).all():
        raise ModelFileError(f"{source}: descriptor dstd has entries <= 0 (a damaged model?)")


def _deepmd_embedding_index(d: Any, e: int) -> int:
    """DeePMD-kit's index of nnpot's embedding net ``e`` (``t_i * n + t_j`` there ``t_j * n + t_i``)."""
    if d.type_one_side:
        return e
    c, t = divmod(e, d.n_types)
    return t * d.n_types + c


def _load_fitting(model: EnergyModel, fit: dict, source: str) -> None:
    n = len(model.fittings)
    nets = _networks(fit.get("nets"), None, n, f"{source}: fitting nets")
    if len(nets) == 1 and n > 1:  # mixed_types: one net shared by every type
        nets = nets * n
    for t, (mlp, net) in enumerate(zip(model.fittings, nets)):
        if not net.get("bias_out", True):
            raise _unsupported(f"{source}: a fitting net without output bias")
        _load_net(mlp, net, "FittingNetwork", f"{source}: fitting net {t}")


# ---------------------------------------------------------------------------------------------
# nnpot -> DeePMD-kit


def _layer_tree(mlp: MLP, k: int, out_scale: float = 1.0) -> dict[str, Any]:
    """Layer ``k`` of ``mlp``; the last layer's weights and bias times ``out_scale`` (nnpot's
    ``fitting.scale``, which DeePMD-kit lacks: folded into the output layer, the same function)."""
    linear, dt = mlp.layers[k], mlp.dts[k]
    last_linear = k == len(mlp.layers) - 1 and mlp.final_linear
    scale = out_scale if k == len(mlp.layers) - 1 else 1.0
    return {
        "@class": "Layer", "@version": 2, "bias": True, "use_timestep": bool(dt.numel()),
        "activation_function": "none" if last_linear else mlp.act_name, "resnet": not last_linear,
        "precision": _dtype_name(linear.weight), "trainable": True,
        "@variables": {"w": np.ascontiguousarray(scale * linear.weight.detach().cpu().numpy().T),
                       "b": scale * linear.bias.detach().cpu().numpy(),
                       "idt": dt.detach().cpu().numpy() if dt.numel() else None},
    }


def _dtype_name(t: torch.Tensor) -> str:
    return {torch.float64: "float64", torch.float32: "float32"}[t.dtype]


def _net_tree(mlp: MLP, fitting: bool, out_scale: float = 1.0) -> dict[str, Any]:
    common = {"in_dim": mlp.widths[0], "activation_function": mlp.act_name,
              "resnet_dt": any(dt.numel() for dt in mlp.dts), "precision": _dtype_name(mlp.layers[0].weight),
              "layers": [_layer_tree(mlp, k, out_scale) for k in range(len(mlp.layers))]}
    if fitting:
        return {"@class": "FittingNetwork", "@version": 1, "out_dim": 1, "neuron": mlp.widths[1:-1], "bias_out": True,
                **common}
    return {"@class": "EmbeddingNetwork", "@version": 2, "neuron": mlp.widths[1:], "bias": True, **common}


def _collection(nets: list[dict], ndim: int, n_types: int, kind: str) -> dict[str, Any]:
    return {"@class": "NetworkCollection", "@version": 1, "ndim": ndim, "ntypes": n_types, "network_type": kind,
            "networks": nets}


def _deepmd_order(d: Any, nets: list) -> list:
    """nnpot's embedding nets in DeePMD-kit's order."""
    out = [None] * len(nets)
    for e, net in enumerate(nets):
        out[_deepmd_embedding_index(d, e)] = net
    return out


def deepmd_from_model(model: EnergyModel) -> dict[str, Any]:
    """The DeePMD-kit file tree (``model``, ``model_def_script`` and the header fields) of an
    se_e2_a :class:`EnergyModel`."""
    c = model.config
    dc = c.descriptor
    if dc.type != "se_e2_a" or model.is_tabulated:
        raise _unsupported(f"descriptor {dc.type!r}{' (tabulated)' if model.is_tabulated else ''}: only exact "
                           "se_e2_a models export")
    d, n, prec = model.descriptor, len(c.type_map), c.dtype
    slots = np.repeat(np.arange(n), d.sel)  # neighbor type of each slot
    desc = {
        "@class": "Descriptor", "type": "se_e2_a", "@version": 2, "rcut": dc.rcut, "rcut_smth": dc.rcut_smth,
        "sel": list(d.sel), "neuron": list(dc.neuron), "axis_neuron": dc.axis_neuron, "resnet_dt": dc.resnet_dt,
        "trainable": True, "type_one_side": d.type_one_side, "exclude_types": [], "env_protection": 0.0,
        "set_davg_zero": False, "activation_function": dc.activation, "precision": prec, "spin": None,
        "env_mat": {"rcut": dc.rcut, "rcut_smth": dc.rcut_smth, "protection": 0.0, "use_exp_switch": False},
        "embeddings": _collection(_deepmd_order(d, [_net_tree(e, False) for e in d.embeddings]),
                                  1 if d.type_one_side else 2, n, "embedding_network"),
        "@variables": {"davg": d.davg.detach().cpu().numpy()[:, slots].copy(),
                       "dstd": d.dstd.detach().cpu().numpy()[:, slots].copy()},
        "type_map": list(c.type_map),
    }
    fit = {
        "@class": "Fitting", "@version": 4, "var_name": "energy", "ntypes": n, "dim_descrpt": d.dim_out,
        "neuron": list(c.fitting.neuron), "resnet_dt": c.fitting.resnet_dt, "numb_fparam": 0, "numb_aparam": 0,
        "dim_case_embd": 0, "default_fparam": None, "rcond": None, "activation_function": c.fitting.activation,
        "precision": prec, "mixed_types": False, "exclude_types": [],
        "nets": _collection([_net_tree(f, True, model.output_scale) for f in model.fittings], 1, n,
                            "fitting_network"),
        "@variables": {"bias_atom_e": model.energy_bias.detach().cpu().numpy()[:, None].copy(), "case_embd": None,
                       "fparam_avg": None, "fparam_inv_std": None, "aparam_avg": None, "aparam_inv_std": None},
        "type_map": list(c.type_map), "tot_ener_zero": False, "trainable": [True] * (len(c.fitting.neuron) + 1),
        "layer_name": None, "use_aparam_as_mask": False, "spin": None, "type": "ener", "dim_out": 1,
        "atom_ener": None,
    }
    dt = np.float64 if prec == "float64" else np.float32
    tree = {
        "@class": "Model", "type": "standard", "@version": 2, "type_map": list(c.type_map),
        "atom_exclude_types": [], "pair_exclude_types": [], "rcond": None, "preset_out_bias": None,
        "@variables": {"out_bias": np.zeros((1, n, 1), dt), "out_std": np.ones((1, n, 1), dt)},
        "descriptor": desc, "fitting": fit,
    }
    script = {"type_map": list(c.type_map),
              "descriptor": {"type": "se_e2_a", "sel": list(d.sel), "rcut": dc.rcut, "rcut_smth": dc.rcut_smth,
                             "neuron": list(dc.neuron), "axis_neuron": dc.axis_neuron, "resnet_dt": dc.resnet_dt,
                             "type_one_side": d.type_one_side, "activation_function": dc.activation,
                             "precision": prec},
              "fitting_net": {"neuron": list(c.fitting.neuron), "resnet_dt": c.fitting.resnet_dt,
                              "activation_function": c.fitting.activation, "precision": prec}}
    return {"software": "nnpot", "version": __version__, "time": time.strftime("%Y-%m-%d %H:%M:%S%z"),
            "backend": "nnpot", "model": tree, "model_def_script": script}


def load_deepmd_model(path: str | os.PathLike[str]) -> EnergyModel:
    """The :class:`EnergyModel` of a DeePMD-kit ``.dp`` or ``.yaml`` file."""
    return model_from_deepmd(read_deepmd_file(path), source=str(path))


def save_deepmd_model(model: EnergyModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` as a DeePMD-kit ``.dp`` or ``.yaml`` file, atomically (nothing is written
    when the model cannot be represented)."""
    return write_deepmd_file(path, deepmd_from_model(model))
