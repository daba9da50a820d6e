#!/usr/bin/env bash
# Resolve every direct and transitive dependency to exact versions with hashes, for
# every platform the package supports (x86-64 and aarch64 Linux, Python 3.11+):
#   requirements/dev.txt  the package with its dev extra: bootstrap, CI, `make test`
#   requirements/run.txt  the package with its train extra: the container image (serves
#                         and trains)
#   requirements/serve.txt the package alone: serving without TensorFlow (the image's
#                         serve target, `whalecast run` with inference.backend: onnx)
# Usage: scripts/lock.sh [UV]   (UV defaults to `uv` on PATH; `make lock` passes the venv's)
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${1:-uv}
compile() {
  "$UV" pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
    --no-header --quiet "$@"
}
header="# Locked with scripts/lock.sh from pyproject.toml; refresh with \`make lock\`."
{ echo "$header"; compile --extra dev; } > requirements/dev.txt
{ echo "$header"; compile --extra train; } > requirements/run.txt
{ echo "$header"; compile; } > requirements/serve.txt
count() { grep -c '^[a-zA-Z]' "requirements/$1.txt"; }
echo "locked: $(count dev) packages (dev), $(count run) (run), $(count serve) (serve)"
