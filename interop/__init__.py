"""nnpot.interop: other codes' model files, read into and written from nnpot's own model.

:mod:`nnpot.interop.deepmd_model` maps DeePMD-kit's se_e2_a energy models (its
backend-independent ``.dp``/``.yaml``, container in :mod:`nnpot.interop.deepmd_file`) onto
:class:`~nnpot.potentials.EnergyModel` and back; nothing of DeePMD-kit's layout reaches the
descriptors. :mod:`nnpot.interop.formats` registers them with :func:`nnpot.potentials.load_model`'s table
of model formats (the ``nnpot.model_formats`` entry point), so it finds them by suffix.
"""
