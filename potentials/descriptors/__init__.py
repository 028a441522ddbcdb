"""Descriptors: one module each, named for it, with its statistics, tables and kernels beside it.

:mod:`~nnpot.potentials.descriptors.base` holds the protocol (:class:`Descriptor`), the config
base class and the registry; :mod:`~nnpot.potentials.descriptors.se_e2_a` is DeePMD-kit's
smooth-edition descriptor (its quintic tables in ``se_e2_a_tables``, fused kernels in
``se_e2_a_kernels``); :mod:`~nnpot.potentials.descriptors.e3nn` the E(3)-equivariant one.
Generic code never imports a descriptor module: it builds descriptors by name.
"""

from nnpot.potentials.descriptors.base import (Descriptor, DescriptorConfig, available_descriptors, build_descriptor,
                                               descriptor_config_class, descriptor_names, register_descriptor)

__all__ = ["Descriptor", "DescriptorConfig", "available_descriptors", "build_descriptor", "descriptor_config_class",
           "descriptor_names", "register_descriptor"]
