"""Independent computations of what Ethereum defines, for web3_check.py: the ordered
Merkle-Patricia tries of a block's transactions and receipts, the block hash as
keccak(rlp(header)), and EIP-1186 account proofs checked node by node against a state root.
Written from the Yellow Paper (appendix D, the trie; section 4.3, the header) with the `rlp`
package only, so that it shares no code with the node.
"""

import rlp
from eth_utils import keccak, to_bytes

EMPTY_TRIE_ROOT = keccak(rlp.encode(b""))


def _nibbles(key):
    out = []
    for byte in key:
        out += [byte >> 4, byte & 0x0F]
    return out


def _hex_prefix(nibbles, leaf):
    flag = 2 if leaf else 0
    if len(nibbles) % 2:
        nibbles = [flag + 1] + nibbles
    else:
        nibbles = [flag, 0] + nibbles
    return bytes(nibbles[i] * 16 + nibbles[i + 1] for i in range(0, len(nibbles), 2))


def _reference(node):
    """A child as its parent holds it: inline if its encoding is under 32 bytes."""
    encoded = rlp.encode(node)
    return node if len(encoded) < 32 else keccak(encoded)


def _node(items, depth):
    if len(items) == 1:
        key, value = items[0]
        return [_hex_prefix(key[depth:], True), value]
    shared = 0
    while all(len(k) > depth + shared and k[depth + shared] == items[0][0][depth + shared] for k, _ in items):
        shared += 1
    if shared:
        child = _node(items, depth + shared)
        return [_hex_prefix(items[0][0][depth : depth + shared], False), _reference(child)]
    branch = [b""] * 17
    for nibble in range(16):
        group = [(k, v) for k, v in items if len(k) > depth and k[depth] == nibble]
        if group:
            branch[nibble] = _reference(_node(group, depth + 1))
    for key, value in items:
        if len(key) == depth:
            branch[16] = value
    return branch


def trie_root(pairs):
    """The root of a Merkle-Patricia trie of `pairs` (key bytes -> value bytes)."""
    if not pairs:
        return EMPTY_TRIE_ROOT
    items = sorted((_nibbles(k), v) for k, v in pairs.items())
    return keccak(rlp.encode(_node(items, 0)))


def ordered_trie_root(values):
    """A block's transactions or receipts root: key rlp(index), value the item's encoding."""
    return trie_root({rlp.encode(i): v for i, v in enumerate(values)})


def receipt_encoding(receipt):
    """EIP-2718 receipt bytes from its JSON-RPC form (web3's AttributeDict)."""
    logs = [
        [to_bytes(hexstr=log["address"]), [bytes(t) for t in log["topics"]], bytes(log["data"])]
        for log in receipt["logs"]
    ]
    body = rlp.encode([receipt["status"], receipt["cumulativeGasUsed"], bytes(receipt["logsBloom"]), logs])
    kind = receipt["type"]
    return body if kind == 0 else bytes([kind]) + body


# The header's fields in Ethereum's order; the ones after `baseFeePerGas` only when present.
_HEADER = [
    ("parentHash", bytes), ("sha3Uncles", bytes), ("miner", "address"), ("stateRoot", bytes),
    ("transactionsRoot", bytes), ("receiptsRoot", bytes), ("logsBloom", bytes), ("difficulty", int),
    ("number", int), ("gasLimit", int), ("gasUsed", int), ("timestamp", int), ("extraData", bytes),
    ("mixHash", bytes), ("nonce", bytes), ("baseFeePerGas", int), ("withdrawalsRoot", bytes),
    ("blobGasUsed", int), ("excessBlobGas", int), ("parentBeaconBlockRoot", bytes), ("requestsHash", bytes),
]


def block_hash(block):
    """keccak(rlp(header)) from a block's JSON-RPC form."""
    fields = []
    for name, kind in _HEADER:
        if name not in block:
            break
        value = block[name]
        if kind == "address":
            fields.append(to_bytes(hexstr=value))
        else:
            fields.append(bytes(value) if kind is bytes else int(value))
    return keccak(rlp.encode(fields))


def verify_account_proof(state_root, address, proof):
    """The account's RLP [nonce, balance, storageRoot, codeHash] proven by `proof` (nodes as
    bytes or 0x hex) under `state_root`, or None for a proof of absence. Raises ValueError if
    the proof is wrong."""
    path = _nibbles(keccak(to_bytes(hexstr=address)))
    expected = bytes(state_root)
    for encoded in (to_bytes(hexstr=n) if isinstance(n, str) else bytes(n) for n in proof):
        if keccak(encoded) != expected and encoded != expected:
            raise ValueError("a proof node does not hash to its reference")
        node = rlp.decode(encoded)
        if len(node) == 17:
            if not path:
                raise ValueError("the path ends at a branch")
            child, path = node[path[0]], path[1:]
            if child == b"":
                return None
            expected = child if isinstance(child, bytes) else rlp.encode(child)
            continue
        prefix = _nibbles(node[0])
        odd, leaf = prefix[0] & 1, prefix[0] & 2
        part = prefix[1:] if odd else prefix[2:]
        if path[: len(part)] != part:
            return None
        path = path[len(part) :]
        if leaf:
            return rlp.decode(node[1]) if not path else None
        expected = node[1] if isinstance(node[1], bytes) else rlp.encode(node[1])
    raise ValueError("the proof ends before the account")
