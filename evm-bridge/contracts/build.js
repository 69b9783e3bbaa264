// Regenerates MarketMaker.json (ABI + bytecode) from MarketMaker.sol, and compiles the
// Solidity package in nexus/ (writing nexus/mocks/Mocks.json), with solc-js, so the Rust
// tests need no node. Usage, from a scratch folder with `npm install solc@0.8.28`:
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

// The Solidity package (nexus/): interfaces, the CoreReader library, the Core asset token
// and the mocks, compiled together (any error fails); the mocks' ABI and runtime code go to
// nexus/mocks/Mocks.json for the Rust test that runs a contract on them in an EVM without
// Nexus precompiles, and the token's ABI, runtime code and storage layout to
// nexus/CoreToken.json, which the chain installs at genesis (evm/src/token.rs).
const packageFiles = ["nexus/ICoreWriter.sol", "nexus/CoreReader.sol", "nexus/CoreToken.sol", "nexus/mocks/MockCoreWriter.sol", "nexus/mocks/MockPrecompile.sol"];
const packageInput = {
  ...input,
  settings: {
    ...input.settings,
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "storageLayout"] } },
  },
  sources: Object.fromEntries(packageFiles.map((f) => [f, { content: fs.readFileSync(path.join(dir, f), "utf8") }])),
};
const packageOutput = JSON.parse(solc.compile(JSON.stringify(packageInput)));
const packageErrors = (packageOutput.errors || []).filter((e) => e.severity === "error");
if (packageErrors.length) {
  console.error(packageErrors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const mocks = { compiler: "solc-js " + solc.version(), evmVersion: "cancun" };
for (const [file, name] of [["nexus/mocks/MockCoreWriter.sol", "MockCoreWriter"], ["nexus/mocks/MockPrecompile.sol", "MockPrecompile"]]) {
  const c = packageOutput.contracts[file][name];
  mocks[name] = { abi: c.abi, deployedBytecode: "0x" + c.evm.deployedBytecode.object };
}
fs.writeFileSync(path.join(dir, "nexus/mocks/Mocks.json"), JSON.stringify(mocks, null, 2) + "\n");
const token = packageOutput.contracts["nexus/CoreToken.sol"].CoreToken;
const layout = token.storageLayout.storage.map((s) => ({ label: s.label, slot: s.slot, offset: s.offset }));
const tokenFixture = {
  compiler: "solc-js " + solc.version(),
  evmVersion: "cancun",
  abi: token.abi,
  deployedBytecode: "0x" + token.evm.deployedBytecode.object,
  storageLayout: layout,
};
fs.writeFileSync(path.join(dir, "nexus/CoreToken.json"), JSON.stringify(tokenFixture, null, 2) + "\n");
console.log("compiled", packageFiles.length, "package files; wrote nexus/mocks/Mocks.json");
