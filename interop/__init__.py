"""nnpot.interop: other codes' model files, read into and written from nnpot's own model.

:mod:`nnpot.interop.deepmd_model` maps DeePMD-kit's se_e2_a energy models (its
backend-independent ``.dp``/``.yaml``, container in :mod:`nnpot.interop.deepmd_file`) onto
:class:`~nnpot.potentials.EnergyModel` and back; nothing of DeePMD-kit's layout reaches the
descriptors. :func:`nnpot.potentials.load_model` finds these readers by file suffix.
"""
