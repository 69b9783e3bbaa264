// ethers.js v6 against a running nexus-evm: chain id, block number, deploy the MarketMaker
// fixture with a signed transaction from the dev key, call views, deposit and quote through
// CoreWriter, read receipts and logs (eth_getLogs by address and topic), check the code.
// Prints one PASS/FAIL line per check and a summary; exits 1 on any failure.
//
//   NODE_PATH=/tmp/ethers/node_modules node examples/evm/ethers_check.mjs [http://127.0.0.1:8545]
//
// See examples/evm/README.md.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// ESM ignores NODE_PATH; resolve ethers through CommonJS so a scratch install works.
const require = createRequire(join(process.cwd(), "noop.js"));
const ethers = require("ethers");

const RPC = process.argv[2] || process.env.NEXUS_RPC || "http://127.0.0.1:8545";
const CHAIN_ID = 20056n;
// The well-known public test key (docs/evm.md): never use it for anything of value.
const DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const DEV = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const CORE_WRITER = "0x3333333333333333333333333333333333333333";
const MARKET = 0;
const NATIVE = 1;
const WEI_PER_UNIT = 10n ** 12n;

const here = dirname(fileURLToPath(import.meta.url));
const fixture = JSON.parse(
  readFileSync(join(here, "../../evm-bridge/contracts/MarketMaker.json"), "utf8"),
);

const results = [];
function check(name, ok, detail = "") {
  results.push({ name, ok: Boolean(ok) });
  console.log(`${ok ? "PASS" : "FAIL"} ${name}${detail ? `: ${detail}` : ""}`);
  return Boolean(ok);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `read` until `done(value)` holds (a transaction starts a block at once; an idle chain makes one every --block-ms).
async function until(read, done, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  let value;
  while (Date.now() < end) {
    value = await read();
    if (done(value)) return value;
    await sleep(150);
  }
  return value;
}

async function main() {
  // ethers shares identical requests made within 250 ms (cacheTimeout); with 100 ms blocks
  // that hands back a stale "pending" nonce right after a receipt, so turn it off.
  const provider = new ethers.JsonRpcProvider(RPC, undefined, {
    staticNetwork: true,
    cacheTimeout: -1,
    pollingInterval: 100,
  });
  const wallet = new ethers.Wallet(DEV_KEY, provider);
  check("dev key is the documented dev account", wallet.address === DEV, wallet.address);

  const network = await provider.getNetwork();
  check("eth_chainId is 20056", network.chainId === CHAIN_ID, `${network.chainId}`);
  const start = await provider.getBlockNumber();
  check("eth_blockNumber answers", Number.isInteger(start) && start >= 0, `${start}`);
  const latest = await provider.getBlock("latest");
  check(
    "latest block has hash and baseFeePerGas",
    latest && latest.hash && latest.baseFeePerGas !== null,
    `#${latest?.number} baseFee ${latest?.baseFeePerGas}`,
  );
  const balance = await provider.getBalance(DEV);
  check("dev account is funded", balance > 0n, `${ethers.formatEther(balance)} ETH`);
  const fees = await provider.getFeeData();
  check("fee data (EIP-1559)", fees.maxFeePerGas > 0n, `maxFee ${fees.maxFeePerGas}`);

  // Deploy with ContractFactory: a signed EIP-1559 transaction from the dev key.
  const factory = new ethers.ContractFactory(fixture.abi, fixture.bytecode, wallet);
  const contract = await factory.deploy(MARKET);
  const deployTx = contract.deploymentTransaction();
  const deployReceipt = await deployTx.wait(1, 30000);
  const mm = await contract.getAddress();
  check(
    "deploy receipt status 1 with contractAddress",
    deployReceipt.status === 1 && deployReceipt.contractAddress === mm,
    `${mm} in block ${deployReceipt.blockNumber}, gas ${deployReceipt.gasUsed}`,
  );
  const code = await provider.getCode(mm);
  check("eth_getCode is non-empty", code.length > 2, `${(code.length - 2) / 2} bytes`);
  check(
    "runtime code equals the fixture's",
    code.toLowerCase() === fixture.deployedBytecode.toLowerCase(),
  );

  // Event listeners installed before the quote: contract.on over HTTP (ethers polls an
  // eth_newFilter) and over WebSocket (eth_subscribe("logs")).
  const ws = new ethers.WebSocketProvider(RPC.replace(/^http/, "ws"), undefined, {
    staticNetwork: true,
    cacheTimeout: -1,
  });
  const heardOverHttp = heard(contract, "Quoted");
  const heardOverWs = heard(contract.connect(ws), "Quoted");

  // Views.
  check("view owner() is the dev account", (await contract.owner()) === DEV);
  check("view market() is 0", (await contract.market()) === BigInt(MARKET));
  const height = await contract.coreBlock();
  check("view coreBlock() reads the precompile", height >= 1n, `${height}`);

  // deposit(): value through CoreWriter.depositToCore; the action log is CoreWriter's.
  const coreAction = ethers.id("CoreAction(address,uint256,bytes)");
  const depositUnits = 1000n;
  const depositTx = await contract.deposit({ value: depositUnits * WEI_PER_UNIT });
  const depositReceipt = await depositTx.wait(1, 30000);
  const depositLog = depositReceipt.logs.find(
    (l) => l.address.toLowerCase() === CORE_WRITER && l.topics[0] === coreAction,
  );
  check(
    "deposit() receipt status 1 with a CoreWriter CoreAction log",
    depositReceipt.status === 1 && depositLog !== undefined,
    `block ${depositReceipt.blockNumber}, ${depositReceipt.logs.length} log(s)`,
  );
  check(
    "CoreAction topic1 is the contract",
    depositLog && ethers.getAddress(ethers.dataSlice(depositLog.topics[1], 12)) === mm,
  );
  check(
    "receipt effectiveGasPrice >= base fee",
    depositReceipt.gasPrice >= (latest.baseFeePerGas ?? 0n),
    `${depositReceipt.gasPrice}`,
  );

  // Core runs the deposit in the next block; the read precompile sees it a block later.
  const [total] = await until(
    () => contract.coreBalance(NATIVE),
    ([t]) => t === depositUnits,
  );
  check("coreBalance(1) shows the deposit", total === depositUnits, `${total}`);

  // The book is shared: lots already resting at 90 (earlier runs against this server).
  const [bid0, lots0] = await contract.bestBidOffer();
  const lotsBefore = bid0 === 90n ? lots0 : 0n;

  // quote(): two CoreWriter placeOrder actions and a Quoted event.
  const quoteTx = await contract.quote(90, 110, 3);
  const quoteReceipt = await quoteTx.wait(1, 30000);
  const parsed = quoteReceipt.logs
    .filter((l) => l.address === mm)
    .map((l) => contract.interface.parseLog(l))
    .filter((l) => l && l.name === "Quoted");
  check(
    "quote() receipt status 1 with 2 CoreAction + 1 Quoted log",
    quoteReceipt.status === 1 &&
      quoteReceipt.logs.filter((l) => l.topics[0] === coreAction).length === 2 &&
      parsed.length === 1,
    `${quoteReceipt.logs.length} log(s)`,
  );
  check(
    "Quoted args decode",
    parsed[0] && parsed[0].args.bid === 90n && parsed[0].args.ask === 110n,
    parsed[0] ? `bidOid ${parsed[0].args.bidOid} askOid ${parsed[0].args.askOid}` : "",
  );

  // eth_getLogs by address and topic (raw provider call and contract.queryFilter).
  const quotedTopic = contract.interface.getEvent("Quoted").topicHash;
  const logs = await provider.getLogs({
    address: mm,
    topics: [quotedTopic],
    fromBlock: 0,
    toBlock: "latest",
  });
  check(
    "eth_getLogs(address, Quoted topic) finds the quote",
    logs.length === 1 && logs[0].transactionHash === quoteTx.hash,
    `${logs.length} log(s)`,
  );
  const byTopic1 = await provider.getLogs({
    address: CORE_WRITER,
    topics: [coreAction, ethers.zeroPadValue(mm, 32)],
    fromBlock: deployReceipt.blockNumber,
    toBlock: "latest",
  });
  check(
    "eth_getLogs(CoreWriter, CoreAction, sender) finds deposit + 2 orders",
    byTopic1.length === 3,
    `${byTopic1.length} log(s)`,
  );
  const events = await contract.queryFilter(contract.filters.Quoted(), 0, "latest");
  check("contract.queryFilter(Quoted)", events.length === 1 && events[0].args.size === 3n);
  for (const [how, promise] of [["HTTP filter", heardOverHttp], ["WebSocket", heardOverWs]]) {
    const event = await withTimeout(promise, 20000);
    const size = event?.args?.size;
    check(`contract.on(Quoted) over ${how}`, size === 3n, event ? `size ${size}` : "nothing in 20 s");
  }
  await contract.removeAllListeners();
  await contract.connect(ws).removeAllListeners();

  // The bid reaches Core's book (the ask is refused: the contract holds no base asset).
  const bbo = await until(
    () => contract.bestBidOffer(),
    ([bid, lots]) => bid === 90n && lots === lotsBefore + 3n,
  );
  check(
    "bestBidOffer() shows the 3-lot bid on Core",
    bbo[0] === 90n && bbo[1] === lotsBefore + 3n,
    `${bbo} (${lotsBefore} lots at 90 before)`,
  );
  const callbacks = await until(
    () => contract.callbacks(),
    (n) => n >= 2n,
  );
  check("Core callbacks reached the contract", callbacks >= 2n, `${callbacks}`);

  // Transactions and blocks read back.
  const tx = await provider.getTransaction(quoteTx.hash);
  check("eth_getTransactionByHash", tx && tx.from === DEV && tx.to === mm, `type ${tx?.type}`);
  const block = await provider.getBlock(quoteReceipt.blockNumber, true);
  check(
    "eth_getBlockByNumber(full) holds the quote",
    block.prefetchedTransactions.some((t) => t.hash === quoteTx.hash),
  );

  // A reverting call reports its reason.
  let reason = "";
  try {
    await contract.quoteThenRevert.staticCall(90, 110, 1);
  } catch (e) {
    reason = e.reason || e.shortMessage || String(e);
  }
  check("revert reason of quoteThenRevert", reason.includes("changed my mind"), reason);

  await waitTimes(wallet, ws);
  ws.destroy();
}

// Resolves with the first `event` heard (its ContractEventPayload; listener installed now).
function heard(contract, event) {
  return new Promise((resolve) => {
    contract.once(event, (...args) => resolve(args.at(-1)));
  });
}

// `promise`, or undefined after `ms`.
function withTimeout(promise, ms) {
  return Promise.race([promise, sleep(ms).then(() => undefined)]);
}

// How long tx.wait() takes (send to receipt), against the chain's block time: through
// ethers' default HTTP provider (polls every 4 s), HTTP polling every 100 ms, and WebSocket
// (newHeads). Printed as INFO lines (figures, not checks); every wait must return.
async function waitTimes(wallet, ws) {
  const providers = [
    ["HTTP, ethers' default 4 s polling", new ethers.JsonRpcProvider(RPC, undefined, { staticNetwork: true, cacheTimeout: -1 })],
    ["HTTP, 100 ms polling", wallet.provider],
    ["WebSocket", ws],
  ];
  const first = await wallet.provider.getBlockNumber();
  for (const [how, provider] of providers) {
    const sender = wallet.connect(provider);
    const times = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const tx = await sender.sendTransaction({ to: DEV, value: 1n });
      const receipt = await tx.wait(1, 30000);
      if (receipt?.status === 1) times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    check(`tx.wait() over ${how}: 5 of 5 returned`, times.length === 5);
    console.log(`INFO tx.wait() over ${how}: p50 ${times[2]?.toFixed(0)} ms, max ${times[4]?.toFixed(0)} ms`);
  }
  const last = await wallet.provider.getBlock("latest");
  const past = await wallet.provider.getBlock(first);
  const blocks = last.number - past.number;
  const ms = (last.timestamp - past.timestamp) * 1000;
  console.log(`INFO block time over the waits: ${blocks} blocks in ${ms} ms (${blocks ? (ms / blocks).toFixed(0) : "-"} ms each; header timestamps are whole seconds)`);
}

try {
  await main();
} catch (e) {
  check("no exception", false, e.stack || String(e));
}
const failed = results.filter((r) => !r.ok).length;
console.log(
  `\nethers ${ethers.version} against ${RPC}: ${results.length - failed} passed, ${failed} failed`,
);
console.log(failed === 0 ? "PASS" : "FAIL");
process.exit(failed === 0 ? 0 : 1);
