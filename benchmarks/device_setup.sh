# Sourced at the start of a command on the lent GPU machine (see BENCHMARKS.md): installs the
# carried wheels (faiss-cpu) and makes the working tree importable without installing it.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1
finetune() { python3 -m finetune.cli "$@"; }
mmseqrec() { python3 -m mmseqrec.cli "$@"; }
