#!/usr/bin/env bash
# Installs the stock Ethereum clients that this folder's checks drive, at the versions pinned
# here (package-lock.json: ethers; requirements.txt: web3.py and its dependencies), into DIR
# (default: target/eth-clients at the repository root), and nothing outside it:
#   DIR/node_modules  ethers   (run the check with NODE_PATH=DIR/node_modules)
#   DIR/venv          web3.py  (run the check with DIR/venv/bin/python)
# Needs node, npm and python3 with venv, and the npm and PyPI registries. The devnet test
# `four_processes_finalize_survive_a_kill_and_the_killed_one_catches_up` runs both checks
# (it runs this script first if DIR/installed is missing; CI runs it first). Usage: examples/evm/install-clients.sh [DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/../../target/eth-clients}
mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
cp "$here/package.json" "$here/package-lock.json" "$dir/"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
touch "$dir/installed"
echo "ethers: NODE_PATH=$dir/node_modules"
echo "web3.py: $dir/venv/bin/python"
