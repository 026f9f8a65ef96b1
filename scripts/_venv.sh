# Sourced by scripts/test and scripts/demo: create or reuse .venv and install the project.
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "ledger needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch "$stamp"
fi
# The bytecode of the package, as `pip install` writes it for an installed ledger: the editable
# install runs from the sources, and where PYTHONDONTWRITEBYTECODE is set nothing would cache
# it, so every `ledger` process would compile each module it imports again. Only the modules
# changed since the last time are compiled.
.venv/bin/python -m compileall -q ledger migrations >/dev/null
