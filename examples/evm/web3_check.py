"""web3.py (7.x) against a running nexus-evm.

Reads chain id and block number, deploys the MarketMaker fixture with a signed transaction from
the dev key, calls views, deposits and quotes through CoreWriter, reads receipts and logs
(eth_getLogs by address and topic), checks the code. Given the node's JSON port too, it checks
the BASE asset's ERC-20 token: a faucet deposit on Core, withdrawAssetToEvm, transfer and
depositToCore. Prints one PASS/FAIL line per check and a summary; exits 1 on any failure.

    target/eth-clients/venv/bin/python examples/evm/web3_check.py [http://127.0.0.1:8545 [127.0.0.1:7070]]

See examples/evm/README.md.
"""

import json
import socket
import sys
import time
import traceback
from pathlib import Path

import web3
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD
from web3.middleware import SignAndSendRawMiddlewareBuilder

from eth_verify import EMPTY_TRIE_ROOT, block_hash, ordered_trie_root, receipt_encoding, verify_account_proof
from eth_account.messages import encode_defunct, encode_typed_data

RPC = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8545"
# The node's JSON development port (its `ready` line's "json"): the token checks need its faucet.
JSON_PORT = sys.argv[2] if len(sys.argv) > 2 else None
CHAIN_ID = 20056
# The well-known public test key (docs/evm.md): never use it for anything of value.
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
DEV = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
CORE_WRITER = "0x3333333333333333333333333333333333333333"
MARKET = 0
NATIVE = 1
WEI_PER_UNIT = 10**12
# The devnet's BASE asset (id 0) and its ERC-20 token (docs/evm.md, "Core assets as ERC-20 tokens").
BASE = 0
BASE_TOKEN = "0x2000000000000000000000000000000000000000"
TOKEN_ABI = [
    {"type": "function", "name": n, "stateMutability": "view", "inputs": [], "outputs": [{"type": t}]}
    for n, t in [("symbol", "string"), ("decimals", "uint8"), ("asset", "uint32"), ("totalSupply", "uint256")]
] + [
    {"type": "function", "name": "balanceOf", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}], "outputs": [{"type": "uint256"}]},
    {"type": "function", "name": "transfer", "stateMutability": "nonpayable",
     "inputs": [{"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}],
     "outputs": [{"type": "bool"}]},
    {"type": "function", "name": "depositToCore", "stateMutability": "nonpayable",
     "inputs": [{"name": "units", "type": "uint64"}], "outputs": []},
    {"type": "event", "name": "Transfer", "anonymous": False, "inputs": [
        {"name": "from", "type": "address", "indexed": True},
        {"name": "to", "type": "address", "indexed": True},
        {"name": "value", "type": "uint256", "indexed": False}]},
]
WRITER_ABI = [
    {"type": "function", "name": "withdrawAssetToEvm", "stateMutability": "nonpayable",
     "inputs": [{"name": "asset", "type": "uint32"}, {"name": "units", "type": "uint64"}], "outputs": []},
    {"type": "function", "name": "depositToCore", "stateMutability": "payable", "inputs": [], "outputs": []},
    {"type": "function", "name": "placeOrder", "stateMutability": "nonpayable", "outputs": [], "inputs": [
        {"name": n, "type": t} for n, t in [("market", "uint32"), ("oid", "uint64"), ("isBuy", "bool"),
            ("price", "uint64"), ("qty", "uint64"), ("tif", "uint8"), ("reduceOnly", "bool")]]},
]
BALANCE_PRECOMPILE = "0x0000000000000000000000000000000000000801"

FIXTURE = json.loads(
    (Path(__file__).resolve().parent / "../../evm-bridge/contracts/MarketMaker.json").read_text()
)

results = []
# The raw bytes of the transactions this script sent, by hash (for the transactions root).
RAW = {}


def check(name, ok, detail=""):
    ok = bool(ok)
    results.append((name, ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + str(detail) if detail != '' else ''}")
    return ok


def until(read, done, timeout=20.0):
    """Polls `read` until `done(value)` (a transaction starts a block at once; an idle chain makes one every --block-ms)."""
    end = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < end:
        time.sleep(0.15)
        value = read()
    return value


def send(w3, acct, tx):
    """Signs `tx` with the dev key, sends it raw, waits for the receipt."""
    tx.setdefault("nonce", w3.eth.get_transaction_count(acct.address, "pending"))
    tx.setdefault("chainId", CHAIN_ID)
    signed = acct.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    RAW[bytes(tx_hash)] = bytes(signed.raw_transaction)
    return tx_hash, w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.1)


def json_lines(json_port, lines):
    """Sends lines to the JSON port; returns each line's last answer (finalized or a refusal)."""
    host, port = json_port.rsplit(":", 1)
    answers = {}
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        reader = sock.makefile()
        for number, line in enumerate(lines, start=1):
            sock.sendall((json.dumps(line) + "\n").encode())
            for text in reader:
                answer = json.loads(text)
                if answer.get("ev") == "dev_accounts" or answer.get("line") == number and answer.get(
                    "ev"
                ) in ("finalized", "refused", "rejected", "error", "evicted"):
                    answers[number] = answer
                    break
    return answers


def tokens(w3, acct):
    """BASE's ERC-20: Core -> EVM (withdrawAssetToEvm, a mint), transfer, EVM -> Core."""
    token = w3.eth.contract(address=BASE_TOKEN, abi=TOKEN_ABI)
    writer = w3.eth.contract(address=CORE_WRITER, abi=WRITER_ABI)
    check(
        "BASE token: symbol, decimals, asset",
        (token.functions.symbol().call(), token.functions.decimals().call(), token.functions.asset().call())
        == ("BASE", 0, BASE),
    )
    # The dev EOA buys 4 BASE on Core from a development account of the JSON port: that
    # account rests an ask at 100, the EOA deposits QUOTE through CoreWriter and lifts it (IOC).
    seller = json_lines(JSON_PORT, [{"op": "dev_accounts"}])[1]["accounts"][0]
    oid = int(time.time() * 1000)
    ask = {"op": "order", "account": seller, "market": "BASE-QUOTE", "oid": oid, "side": "sell",
           "price": "100", "qty": "4", "tif": "gtc"}
    answer = json_lines(JSON_PORT, [ask])[1]
    check("a development account rests an ask of 4 BASE at 100 (JSON port)", answer.get("ev") == "finalized", answer)
    _, receipt = send(w3, acct, writer.functions.depositToCore().build_transaction(
        {"from": DEV, "value": 1000 * WEI_PER_UNIT, "nonce": w3.eth.get_transaction_count(DEV, "pending")}))
    check("depositToCore of 1,000 QUOTE units: status 1", receipt["status"] == 1)
    buy = writer.functions.placeOrder(MARKET, oid, True, 100, 4, 1, False)
    _, receipt = send(w3, acct, buy.build_transaction(
        {"from": DEV, "nonce": w3.eth.get_transaction_count(DEV, "pending")}))
    check("placeOrder IOC buy 4 at 100 from the EOA: status 1", receipt["status"] == 1)
    def core_base():
        data = w3.codec.encode(["address", "uint32"], [DEV, BASE])
        return w3.codec.decode(["int64", "int64"], w3.eth.call({"to": BALANCE_PRECOMPILE, "data": data}))[0]

    held = until(core_base, lambda b: b >= 4)
    check("the EOA's Core account holds the 4 BASE (BALANCE precompile)", held >= 4, held)
    before = token.functions.balanceOf(DEV).call()
    supply = token.functions.totalSupply().call()
    _, receipt = send(w3, acct, writer.functions.withdrawAssetToEvm(BASE, 4).build_transaction(
        {"from": DEV, "nonce": w3.eth.get_transaction_count(DEV, "pending")}))
    check("withdrawAssetToEvm(BASE, 4) receipt status 1", receipt["status"] == 1)
    minted = until(lambda: token.functions.balanceOf(DEV).call(), lambda b: b == before + 4)
    check("the mint reaches balanceOf (4 more)", minted == before + 4, f"{before} -> {minted}")
    check("totalSupply grew by 4", token.functions.totalSupply().call() == supply + 4)
    mints = token.events.Transfer().get_logs(
        from_block=receipt["blockNumber"], argument_filters={"to": DEV})
    check(
        "eth_getLogs: the mint's Transfer(0, dev, 4)",
        any(e["args"]["from"] == "0x" + "00" * 20 and e["args"]["value"] == 4 for e in mints),
        len(mints),
    )
    other = Account.create().address
    _, receipt = send(w3, acct, token.functions.transfer(other, 3).build_transaction(
        {"from": DEV, "nonce": w3.eth.get_transaction_count(DEV, "pending")}))
    moved = token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    check(
        "transfer(other, 3): status 1, one Transfer log, balances moved",
        receipt["status"] == 1 and len(moved) == 1 and moved[0]["args"]["value"] == 3
        and token.functions.balanceOf(other).call() == 3
        and token.functions.balanceOf(DEV).call() == before + 1,
    )
    _, receipt = send(w3, acct, token.functions.depositToCore(1).build_transaction(
        {"from": DEV, "nonce": w3.eth.get_transaction_count(DEV, "pending")}))
    burned = token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    check(
        "depositToCore(1): status 1, burn Transfer(dev, 0, 1), supply down by 1",
        receipt["status"] == 1 and len(burned) == 1 and burned[0]["args"]["to"] == "0x" + "00" * 20
        and token.functions.balanceOf(DEV).call() == before
        and token.functions.totalSupply().call() == supply + 3,
    )


def rpc(w3, method, params):
    """A raw JSON-RPC call: its result, or its error object."""
    answer = w3.provider.make_request(method, params)
    return answer.get("result", answer.get("error"))


def headers(w3, tx_hashes):
    """Issue 14 item 1: header fields of the blocks holding `tx_hashes` recomputed here
    (eth_verify.py), an empty block's, and a proof of the dev account checked against a
    block's stateRoot."""
    for tx_hash in tx_hashes:
        block = w3.eth.get_block(w3.eth.get_transaction_receipt(tx_hash)["blockNumber"])
        check("block hash == keccak(rlp(header))", block_hash(block) == bytes(block["hash"]), block["number"])
        raws = [RAW.get(bytes(h)) for h in block["transactions"]]
        if all(raws):
            check("transactionsRoot == ordered trie of the block's transactions",
                  ordered_trie_root(raws) == bytes(block["transactionsRoot"]), f"{len(raws)} tx")
        receipts = w3.eth.get_block_receipts(block["number"])
        check("receiptsRoot == ordered trie of eth_getBlockReceipts",
              ordered_trie_root([receipt_encoding(r) for r in receipts]) == bytes(block["receiptsRoot"]),
              f"{len(receipts)} receipt(s), {sum(len(r['logs']) for r in receipts)} log(s)")
        check("withdrawalsRoot is the empty trie's root", bytes(block["withdrawalsRoot"]) == EMPTY_TRIE_ROOT)
    empty = next((b for b in (w3.eth.get_block(n) for n in range(block["number"] - 1, 0, -1)) if not b["transactions"]), None)
    check(
        "an empty block: both roots empty, hash == keccak(rlp(header))",
        empty is not None and bytes(empty["transactionsRoot"]) == EMPTY_TRIE_ROOT
        and bytes(empty["receiptsRoot"]) == EMPTY_TRIE_ROOT and block_hash(empty) == bytes(empty["hash"]),
        empty and empty["number"],
    )
    deployed = w3.eth.get_block(w3.eth.get_transaction_receipt(tx_hashes[0])["blockNumber"])
    proof = w3.eth.get_proof(DEV, [], deployed["number"])
    account = verify_account_proof(deployed["stateRoot"], DEV, proof["accountProof"])
    check(
        "eth_getProof(dev) at the deploy's (past) block verifies against its stateRoot",
        account is not None and int.from_bytes(account[1], "big") == w3.eth.get_balance(DEV, deployed["number"]),
        f"block {deployed['number']}, head {w3.eth.block_number}",
    )


def methods(w3, quote_hash, mm, contract):
    """Issue 14 item 3: the methods common tools call."""
    tx = w3.eth.get_transaction(quote_hash)
    number, index = tx["blockNumber"], tx["transactionIndex"]
    block = w3.eth.get_block(number)
    check("eth_getBlockReceipts holds the quote's receipt",
          any(r["transactionHash"] == quote_hash for r in w3.eth.get_block_receipts(number)))
    check("eth_getTransactionByBlockNumberAndIndex / ByBlockHashAndIndex",
          w3.eth.get_transaction_by_block(number, index)["hash"] == quote_hash
          and w3.eth.get_transaction_by_block(block["hash"], index)["hash"] == quote_hash)
    count = len(block["transactions"])
    check("eth_getBlockTransactionCountByNumber / ByHash",
          w3.eth.get_block_transaction_count(number) == count == w3.eth.get_block_transaction_count(block["hash"]))
    check("eth_getUncleCountByBlockNumber / ByBlockHash are 0",
          rpc(w3, "eth_getUncleCountByBlockNumber", [hex(number)]) == "0x0"
          and rpc(w3, "eth_getUncleCountByBlockHash", [block["hash"].to_0x_hex()]) == "0x0")
    call = {"from": DEV, "to": mm, "data": contract.encode_abi("quote", [80, 120, 1])}
    listed = w3.eth.create_access_list(call)
    check("eth_createAccessList of a quote lists the contract's storage",
          any(entry["address"] == mm and entry["storageKeys"] for entry in listed["accessList"]), listed["gasUsed"])
    check("eth_coinbase is an address", Web3.is_address(rpc(w3, "eth_coinbase", [])))
    check("net_listening, net_peerCount", w3.net.listening is True and w3.net.peer_count >= 0, w3.net.peer_count)
    check("web3_sha3", rpc(w3, "web3_sha3", ["0x68656c6c6f"]) == Web3.keccak(text="hello").to_0x_hex())
    status = rpc(w3, "txpool_status", [])
    content = rpc(w3, "txpool_content", [])
    check("txpool_status and txpool_content", "pending" in status and "queued" in status and "pending" in content)
    signed = w3.eth.sign(DEV, text="nexus")
    check("eth_sign: recovers to the dev account", Account.recover_message(encode_defunct(text="nexus"), signature=signed) == DEV)
    signed = rpc(w3, "personal_sign", ["0x" + b"nexus".hex(), DEV])
    check("personal_sign: recovers to the dev account", Account.recover_message(encode_defunct(text="nexus"), signature=signed) == DEV)
    typed = {
        "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}],
                  "Mail": [{"name": "to", "type": "address"}, {"name": "text", "type": "string"}]},
        "primaryType": "Mail", "domain": {"name": "nexus", "chainId": CHAIN_ID},
        "message": {"to": mm, "text": "hello"},
    }
    signed = rpc(w3, "eth_signTypedData_v4", [DEV, json.dumps(typed)])
    check("eth_signTypedData_v4: recovers to the dev account",
          Account.recover_message(encode_typed_data(full_message=typed), signature=signed) == DEV)
    sent = w3.eth.send_transaction({"from": DEV, "to": mm, "value": 1})
    check("eth_sendTransaction (the node signs for the dev account)",
          w3.eth.wait_for_transaction_receipt(sent, timeout=30, poll_latency=0.1)["status"] == 1)
    trace = rpc(w3, "debug_traceTransaction", [quote_hash.to_0x_hex(), {"tracer": "callTracer"}])
    check("debug_traceTransaction (callTracer): the quote's two CoreWriter calls",
          sum(1 for c in trace.get("calls", []) if c["to"].lower() == CORE_WRITER.lower()) == 2)
    traces = rpc(w3, "debug_traceBlockByNumber", [hex(number), {"tracer": "callTracer"}])
    by_hash = rpc(w3, "debug_traceBlockByHash", [block["hash"].to_0x_hex(), {"tracer": "callTracer"}])
    check("debug_traceBlockByNumber / ByHash: one trace per transaction, the quote's as traced alone",
          [t["txHash"] for t in traces] == [h.to_0x_hex() for h in block["transactions"]] and traces == by_hash
          and next(t["result"] for t in traces if t["txHash"] == quote_hash.to_0x_hex()) == trace)
    logs = rpc(w3, "debug_traceCall", [{"from": DEV, "to": mm, "data": call["data"]}, "latest", {}])
    check("debug_traceCall (struct logs)", logs.get("failed") is False and len(logs.get("structLogs", [])) > 0)


def past_state(w3, acct):
    """Issue 14 item 4: state at a past block, and a clear error beyond the kept window."""
    past = w3.eth.block_number
    before = w3.eth.get_balance(DEV, past)
    send(w3, acct, {"to": "0x000000000000000000000000000000000000dEaD", "value": 10**15, "gas": 21000,
                    "maxFeePerGas": 2 * w3.eth.gas_price, "maxPriorityFeePerGas": 1})
    check("eth_getBalance at a past block is the balance then",
          w3.eth.get_balance(DEV, past) == before != w3.eth.get_balance(DEV, "latest"))
    check("eth_getCode at a past block (CoreWriter's marker)", len(w3.eth.get_code(CORE_WRITER, past)) > 0)
    head = w3.eth.block_number
    if head > 130:  # the default window is the 128 blocks before the head
        answer = rpc(w3, "eth_getBalance", [DEV, "0x1"])
        check("block 1 is past the window: error -32000, 'not available'",
              isinstance(answer, dict) and answer.get("code") == -32000 and "not available" in answer.get("message", ""),
              answer.get("message") if isinstance(answer, dict) else answer)
    else:
        print(f"INFO past-window check skipped: head {head} is within 130 blocks of block 1")


def main():
    w3 = Web3(Web3.HTTPProvider(RPC, request_kwargs={"timeout": 10}))
    acct = Account.from_key(DEV_KEY)
    check("dev key is the documented dev account", acct.address == DEV, acct.address)

    check("is_connected", w3.is_connected())
    check("web3_clientVersion", w3.client_version.startswith("nexus/"), w3.client_version)
    check("net_version", w3.net.version == str(CHAIN_ID), w3.net.version)
    check("eth_chainId is 20056", w3.eth.chain_id == CHAIN_ID, w3.eth.chain_id)
    start = w3.eth.block_number
    check("eth_blockNumber answers", isinstance(start, int) and start >= 0, start)
    check("eth_syncing is false", w3.eth.syncing is False, w3.eth.syncing)
    check("eth_accounts is the dev account", w3.eth.accounts == [DEV], w3.eth.accounts)
    latest = w3.eth.get_block("latest")
    check(
        "latest block formats (hash, baseFeePerGas, logsBloom)",
        latest["hash"] is not None and latest["baseFeePerGas"] > 0 and len(latest["logsBloom"]) == 256,
        f"#{latest['number']} baseFee {latest['baseFeePerGas']}",
    )
    check("eth_getBlockByHash", w3.eth.get_block(latest["hash"])["number"] == latest["number"])
    balance = w3.eth.get_balance(DEV)
    check("dev account is funded", balance > 0, f"{Web3.from_wei(balance, 'ether')} ETH")
    check("eth_gasPrice", w3.eth.gas_price >= latest["baseFeePerGas"], w3.eth.gas_price)
    check("eth_maxPriorityFeePerGas", w3.eth.max_priority_fee > 0, w3.eth.max_priority_fee)
    history = w3.eth.fee_history(4, "latest", [25, 75])
    check(
        "eth_feeHistory",
        len(history["baseFeePerGas"]) == len(history["gasUsedRatio"]) + 1
        and all(len(r) == 2 for r in history["reward"]),
        f"oldest {history['oldestBlock']}",
    )

    # Deploy: build (web3 estimates gas and fills EIP-1559 fees), sign, send raw.
    factory = w3.eth.contract(abi=FIXTURE["abi"], bytecode=FIXTURE["bytecode"])
    deploy = factory.constructor(MARKET).build_transaction(
        {"from": DEV, "nonce": w3.eth.get_transaction_count(DEV, "pending")}
    )
    check("build_transaction filled EIP-1559 fees", "maxFeePerGas" in deploy, deploy.get("maxFeePerGas"))
    deploy_hash, receipt = send(w3, acct, deploy)
    mm = receipt["contractAddress"]
    check(
        "deploy receipt status 1 with contractAddress",
        receipt["status"] == 1 and mm is not None and receipt["transactionHash"] == deploy_hash,
        f"{mm} in block {receipt['blockNumber']}, gas {receipt['gasUsed']}, type {receipt['type']}",
    )
    code = w3.eth.get_code(mm)
    check("eth_getCode is non-empty", len(code) > 0, f"{len(code)} bytes")
    check("runtime code equals the fixture's", code.to_0x_hex() == FIXTURE["deployedBytecode"].lower())
    slot0 = w3.eth.get_storage_at(mm, 0)
    check("eth_getStorageAt slot 0 holds the owner", slot0[-20:] == bytes.fromhex(DEV[2:]))

    contract = w3.eth.contract(address=mm, abi=FIXTURE["abi"])
    check("view owner() is the dev account", contract.functions.owner().call() == DEV)
    check("view market() is 0", contract.functions.market().call() == MARKET)
    height = contract.functions.coreBlock().call()
    check("view coreBlock() reads the precompile", height >= 1, height)

    # deposit(): value through CoreWriter.depositToCore; the action log is CoreWriter's.
    core_action = Web3.keccak(text="CoreAction(address,uint256,bytes)")
    units = 1000
    tx = contract.functions.deposit().build_transaction({"from": DEV, "value": units * WEI_PER_UNIT})
    _, receipt = send(w3, acct, tx)
    logs = [l for l in receipt["logs"] if l["address"] == Web3.to_checksum_address(CORE_WRITER)]
    check(
        "deposit() receipt status 1 with a CoreWriter CoreAction log",
        receipt["status"] == 1 and len(logs) == 1 and logs[0]["topics"][0] == core_action,
        f"block {receipt['blockNumber']}, {len(receipt['logs'])} log(s)",
    )
    check(
        "CoreAction topic1 is the contract",
        logs and Web3.to_checksum_address(logs[0]["topics"][1][12:]) == mm,
    )
    check(
        "receipt effectiveGasPrice >= base fee",
        receipt["effectiveGasPrice"] >= latest["baseFeePerGas"],
        receipt["effectiveGasPrice"],
    )
    total, _locked = until(
        lambda: contract.functions.coreBalance(NATIVE).call(), lambda v: v[0] == units
    )
    check("coreBalance(1) shows the deposit", total == units, total)

    # The book is shared: lots already resting at 90 (earlier runs against this server).
    bid0, lots0, _, _ = contract.functions.bestBidOffer().call()
    lots_before = lots0 if bid0 == 90 else 0

    # quote() with a legacy (gasPrice) transaction sent through web3's signing middleware.
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(acct), layer=0)
    quote_hash = contract.functions.quote(90, 110, 3).transact(
        {"from": DEV, "gasPrice": w3.eth.gas_price}
    )
    receipt = w3.eth.wait_for_transaction_receipt(quote_hash, timeout=30, poll_latency=0.1)
    quoted = contract.events.Quoted().process_receipt(receipt, errors=DISCARD)
    check(
        "quote() receipt status 1 with 2 CoreAction + 1 Quoted log",
        receipt["status"] == 1
        and sum(1 for l in receipt["logs"] if l["topics"][0] == core_action) == 2
        and len(quoted) == 1,
        f"{len(receipt['logs'])} log(s), type {receipt['type']}",
    )
    check(
        "Quoted args decode",
        quoted and quoted[0]["args"]["bid"] == 90 and quoted[0]["args"]["ask"] == 110,
        quoted and dict(quoted[0]["args"]),
    )

    # eth_getLogs by address and topic, raw and through the contract's event.
    quoted_topic = Web3.keccak(text="Quoted(uint64,uint64,uint64,uint64,uint64)")
    logs = w3.eth.get_logs(
        {"address": mm, "topics": [quoted_topic], "fromBlock": 0, "toBlock": "latest"}
    )
    check(
        "eth_getLogs(address, Quoted topic) finds the quote",
        len(logs) == 1 and logs[0]["transactionHash"] == quote_hash,
        f"{len(logs)} log(s)",
    )
    sender_topic = "0x" + "00" * 12 + mm[2:].lower()
    logs = w3.eth.get_logs(
        {
            "address": Web3.to_checksum_address(CORE_WRITER),
            "topics": [core_action, sender_topic],
            "fromBlock": receipt["blockNumber"] - 10 if receipt["blockNumber"] > 10 else 0,
            "toBlock": receipt["blockNumber"],
        }
    )
    check(
        "eth_getLogs(CoreWriter, CoreAction, sender) finds deposit + 2 orders",
        len(logs) == 3,
        f"{len(logs)} log(s)",
    )
    events = contract.events.Quoted().get_logs(from_block=0)
    check("contract.events.Quoted.get_logs", len(events) == 1 and events[0]["args"]["size"] == 3)

    # The bid reaches Core's book (the ask is refused: the contract holds no base asset).
    bbo = until(
        lambda: contract.functions.bestBidOffer().call(),
        lambda v: v[0] == 90 and v[1] == lots_before + 3,
    )
    check(
        "bestBidOffer() shows the 3-lot bid on Core",
        bbo[0] == 90 and bbo[1] == lots_before + 3,
        f"{bbo} ({lots_before} lots at 90 before)",
    )
    callbacks = until(lambda: contract.functions.callbacks().call(), lambda n: n >= 2)
    check("Core callbacks reached the contract", callbacks >= 2, callbacks)

    # Transactions and blocks read back through web3's formatters.
    tx = w3.eth.get_transaction(quote_hash)
    check("eth_getTransactionByHash", tx["from"] == DEV and tx["to"] == mm, f"type {tx['type']}")
    block = w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
    check(
        "eth_getBlockByNumber(full) holds the quote",
        any(t["hash"] == quote_hash for t in block["transactions"]),
    )

    # A reverting call reports its reason.
    try:
        contract.functions.quoteThenRevert(90, 110, 1).call({"from": DEV})
        reason = ""
    except ContractLogicError as e:
        reason = str(e)
    check("revert reason of quoteThenRevert", "changed my mind" in reason, reason)

    headers(w3, [deploy_hash, quote_hash])
    methods(w3, quote_hash, mm, contract)
    past_state(w3, acct)

    if JSON_PORT is None:
        print("INFO token checks skipped: no JSON port given (second argument)")
    else:
        tokens(w3, acct)


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - a failure of the check itself is a FAIL
        check("no exception", False, traceback.format_exc())
    failed = sum(1 for _, ok in results if not ok)
    print(f"\nweb3.py {web3.__version__} against {RPC}: {len(results) - failed} passed, {failed} failed")
    print("PASS" if failed == 0 else "FAIL")
    sys.exit(0 if failed == 0 else 1)
