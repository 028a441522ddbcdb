#!/usr/bin/env bash
# Prepares the GPU machine of the device tool (no internet there): installs the wheels carried in
# .whl/ (ase, DeePMD-kit 3.2 and its pure-Python needs; vesin separately in /tmp/vesin) and nnpot
# itself without dependencies, then applies the DeePMD-kit adjustments of shared/peers/README.md.
# Usage, at the start of a device command:  source benchmarks/device_setup.sh
# Tests there: python3 -m pytest --import-mode=append -m gpu tests/  (so the installed copy is imported)
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vesin .whl/vesin/*.whl
python3 -m pip install -q --no-deps --no-build-isolation --no-compile --no-cache-dir --target /tmp/nnpot . >/dev/null
# DeePMD-kit: no MPI library load, no compiled op library, a stub for mendeleev (element table unused here)
sed -i 's/^    load_mpi_library()$/    pass/' /tmp/site/deepmd/pt/cxx_op.py
rm -f /tmp/site/deepmd/lib/libdeepmd_op_pt.so
mkdir -p /tmp/stub && printf '%s\n' "from types import SimpleNamespace" "from ase.data import atomic_numbers" \
  "def element(symbol): return SimpleNamespace(symbol=symbol, atomic_number=atomic_numbers[symbol])" > /tmp/stub/mendeleev.py
export PYTHONPATH=/tmp/nnpot:/tmp/site:/tmp/stub
export PYTHONUNBUFFERED=1
set +e
