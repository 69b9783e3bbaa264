// ethers.js v6 against a running nexus-evm: chain id, block number, deploy the MarketMaker
// fixture with a signed transaction from the dev key, call views, deposit and quote through
// CoreWriter, read receipts and logs (eth_getLogs by address and topic), check the code.
// Given the node's JSON port too, it checks the BASE asset's ERC-20 token (bought on Core,
// withdrawAssetToEvm, transfer with a `Transfer` listener, depositToCore).
// Prints one PASS/FAIL line per check and a summary; exits 1 on any failure.
//
//   NODE_PATH=target/eth-clients/node_modules node examples/evm/ethers_check.mjs [http://127.0.0.1:8545 [127.0.0.1:7070]]
//
// See examples/evm/README.md.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { createConnection } from "node:net";
import { createInterface } from "node:readline";
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
// The node's JSON development port (its `ready` line's "json"): the token checks use it.
const JSON_PORT = process.argv[3] || process.env.NEXUS_JSON;
// The devnet's BASE asset (id 0) and its ERC-20 token (docs/evm.md, "Core assets as ERC-20 tokens").
const BASE = 0;
const BASE_TOKEN = "0x2000000000000000000000000000000000000000";
const BALANCE_PRECOMPILE = "0x0000000000000000000000000000000000000801";
const TOKEN_ABI = [
  "function symbol() view returns (string)",
  "function decimals() view returns (uint8)",
  "function asset() view returns (uint32)",
  "function totalSupply() view returns (uint256)",
  "function balanceOf(address) view returns (uint256)",
  "function transfer(address to, uint256 value) returns (bool)",
  "function depositToCore(uint64 units)",
  "event Transfer(address indexed from, address indexed to, uint256 value)",
];
const WRITER_ABI = [
  "function depositToCore() payable",
  "function placeOrder(uint32 market, uint64 oid, bool isBuy, uint64 price, uint64 qty, uint8 tif, bool reduceOnly)",
  "function withdrawAssetToEvm(uint32 asset, uint64 units)",
];

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

  if (JSON_PORT) {
    await tokens(wallet, ws);
  } else {
    console.log("INFO token checks skipped: no JSON port given (second argument)");
  }
  await waitTimes(wallet, ws);
  ws.destroy();
}

// Sends lines (JSON text) to the JSON port; resolves with each line's last answer (finalized or
// a refusal), with its text as `raw` (account ids pass 2^53: read them from the text).
function jsonLines(lines) {
  const [host, port] = [JSON_PORT.slice(0, JSON_PORT.lastIndexOf(":")), JSON_PORT.slice(JSON_PORT.lastIndexOf(":") + 1)];
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host, port: Number(port) });
    const answers = [];
    const last = new Set(["finalized", "refused", "rejected", "error", "evicted", "dev_accounts"]);
    createInterface({ input: socket }).on("line", (text) => {
      const answer = JSON.parse(text);
      if (!last.has(answer.ev)) return;
      answers.push({ ...answer, raw: text });
      if (answers.length === lines.length) {
        socket.end();
        resolve(answers);
      } else socket.write(`${lines[answers.length]}\n`);
    });
    socket.on("error", reject);
    socket.write(`${lines[0]}\n`);
  });
}

// BASE's ERC-20: bought on Core from a development account, Core -> EVM (a mint), a transfer
// heard by a WebSocket listener, EVM -> Core.
async function tokens(wallet, ws) {
  const token = new ethers.Contract(BASE_TOKEN, TOKEN_ABI, wallet);
  const writer = new ethers.Contract(CORE_WRITER, WRITER_ABI, wallet);
  const meta = [await token.symbol(), await token.decimals(), await token.asset()];
  check("BASE token: symbol, decimals, asset", `${meta}` === `BASE,0,${BASE}`, `${meta}`);
  const [listed] = await jsonLines(['{"op":"dev_accounts"}']);
  const seller = /"accounts":\[(\d+)/.exec(listed.raw)[1];
  const oid = Date.now();
  const ask = `{"op":"order","account":${seller},"market":"BASE-QUOTE","oid":${oid},"side":"sell","price":"100","qty":"4","tif":"gtc"}`;
  const [rested] = await jsonLines([ask]);
  check("a development account rests an ask of 4 BASE at 100 (JSON port)", rested.ev === "finalized", rested.raw);
  let receipt = await (await writer.depositToCore({ value: 1000n * WEI_PER_UNIT })).wait();
  check("depositToCore of 1,000 QUOTE units: status 1", receipt.status === 1);
  receipt = await (await writer.placeOrder(MARKET, oid, true, 100, 4, 1, false)).wait();
  check("placeOrder IOC buy 4 at 100 from the EOA: status 1", receipt.status === 1);
  const coder = ethers.AbiCoder.defaultAbiCoder();
  const coreBase = async () => {
    const data = coder.encode(["address", "uint32"], [DEV, BASE]);
    return coder.decode(["int64", "int64"], await wallet.provider.call({ to: BALANCE_PRECOMPILE, data }))[0];
  };
  const held = await until(coreBase, (b) => b >= 4n);
  check("the EOA's Core account holds the 4 BASE (BALANCE precompile)", held >= 4n, `${held}`);
  const before = await token.balanceOf(DEV);
  const supply = await token.totalSupply();
  receipt = await (await writer.withdrawAssetToEvm(BASE, 4)).wait();
  check("withdrawAssetToEvm(BASE, 4): status 1", receipt.status === 1);
  const minted = await until(() => token.balanceOf(DEV), (b) => b === before + 4n);
  check("the mint reaches balanceOf (4 more)", minted === before + 4n, `${before} -> ${minted}`);
  check("totalSupply grew by 4", (await token.totalSupply()) === supply + 4n);
  const mints = await token.queryFilter(token.filters.Transfer(ethers.ZeroAddress, DEV), receipt.blockNumber);
  check("eth_getLogs: the mint's Transfer(0, dev, 4)", mints.some((e) => e.args.value === 4n), `${mints.length}`);
  const other = ethers.Wallet.createRandom().address;
  const listened = withTimeout(heard(token.connect(ws), token.filters.Transfer(DEV, other)), 20000);
  receipt = await (await token.transfer(other, 3)).wait();
  const moved = receipt.logs.map((l) => token.interface.parseLog(l)).filter((e) => e?.name === "Transfer");
  check(
    "transfer(other, 3): status 1, one Transfer log, balances moved",
    receipt.status === 1 && moved.length === 1 && moved[0].args.value === 3n
      && (await token.balanceOf(other)) === 3n && (await token.balanceOf(DEV)) === before + 1n,
  );
  const event = await listened;
  check("the WebSocket listener heard the Transfer", event?.args?.value === 3n);
  await token.connect(ws).removeAllListeners();
  receipt = await (await token.depositToCore(1)).wait();
  const burned = receipt.logs.map((l) => token.interface.parseLog(l)).filter((e) => e?.name === "Transfer");
  check(
    "depositToCore(1): status 1, burn Transfer(dev, 0, 1), supply down by 1",
    receipt.status === 1 && burned.length === 1 && burned[0].args.to === ethers.ZeroAddress
      && (await token.balanceOf(DEV)) === before && (await token.totalSupply()) === supply + 3n,
  );
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
