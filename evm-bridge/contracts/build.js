// Regenerates MarketMaker.json (ABI + bytecode) from MarketMaker.sol with solc-js, so the
// Rust tests need no node. Usage, from a scratch folder with `npm install solc@0.8.28`:
//   NODE_PATH=<scratch>/node_modules node evm-bridge/contracts/build.js
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const dir = __dirname;
const source = fs.readFileSync(path.join(dir, "MarketMaker.sol"), "utf8");
const input = {
  language: "Solidity",
  sources: { "MarketMaker.sol": { content: source } },
  settings: {
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const contract = output.contracts["MarketMaker.sol"].MarketMaker;
const fixture = {
  compiler: "solc-js " + solc.version(),
  evmVersion: "cancun",
  abi: contract.abi,
  bytecode: "0x" + contract.evm.bytecode.object,
  deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
};
fs.writeFileSync(path.join(dir, "MarketMaker.json"), JSON.stringify(fixture, null, 2) + "\n");
console.log("wrote MarketMaker.json with", contract.abi.length, "ABI entries");
