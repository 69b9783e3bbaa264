#!/bin/sh
# solc-js (the npm package `solc`) behind solc's command line, for forge on a machine that can
# reach the npm registry but not binaries.soliditylang.org: forge runs `solc --version` and
# `solc --standard-json ...` with every source's content in the JSON on standard input.
# SOLC_JS: the solc-js package folder (default /tmp/solcjs/node_modules/solc).
SOLC_JS="${SOLC_JS:-/tmp/solcjs/node_modules/solc}"
export SOLC_JS
if [ "$1" = "--version" ]; then
  echo "solc, the solidity compiler commandline interface"
  exec node -e 'console.log("Version: " + require(process.env.SOLC_JS).version())'
fi
exec node -e '
const solc = require(process.env.SOLC_JS);
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => process.stdout.write(solc.compile(input)));
'
