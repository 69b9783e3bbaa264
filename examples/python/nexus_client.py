#!/usr/bin/env python3
"""A minimal Nexus binary-protocol client, written from docs/protocol.md alone.

Standard library only (Python 3.11). It logs in on the order-entry port with an Ed25519 key
made from a 32-byte seed, places one order, prints every reply decoded by name, and prints the
market's snapshot (and the feed messages that follow) from the market-data port.

    python3 nexus_client.py --seed <64 hex chars> [--deposit] [--side buy --price 100000 --qty 10]

--deposit funds the derived account first through the node's JSON Lines port (docs/node.md);
that port is for development only.

On a chain (every validator of `nexus devnet`; LoginAccepted flag bit 31, then ChainInfo) the
order goes as a signed transaction (docs/transactions.md) in a Transaction message (kind 14),
optionally a bulk of orders and a cancel-all under one signature:

    python3 nexus_client.py --devnet DIR --validator 0 --dev-key 1 --market 0 --side sell \
        --price 1000 --qty 5 [--bulk 10] [--cancel-all]
"""

import argparse
import hashlib
import json
import socket
import struct
import sys
import time

# ---------------------------------------------------------------------------------------------
# Ed25519 signing, RFC 8032 section 6 (reference code, sign only). Not constant-time: a demo.

_P = 2**255 - 19
_Q = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _recover_x(y: int, sign: int) -> int:
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if x & 1 != sign:
        x = _P - x
    return x


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY, 0)
_G = (_GX, _GY, 1, _GX * _GY % _P)


def _add(a, b):
    A = (a[1] - a[0]) * (b[1] - b[0]) % _P
    B = (a[1] + a[0]) * (b[1] + b[0]) % _P
    C = 2 * a[3] * b[3] * _D % _P
    D = 2 * a[2] * b[2] % _P
    E, F, G, H = B - A, D - C, D + C, B + A
    return (E * F % _P, G * H % _P, F * G % _P, E * H % _P)


def _mul(s: int, point):
    result = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            result = _add(result, point)
        point = _add(point, point)
        s >>= 1
    return result


def _compress(point) -> bytes:
    zinv = pow(point[2], _P - 2, _P)
    x = point[0] * zinv % _P
    y = point[1] * zinv % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _expand(seed: bytes):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def _hash_mod_q(data: bytes) -> int:
    return int.from_bytes(hashlib.sha512(data).digest(), "little") % _Q


def ed25519_public_key(seed: bytes) -> bytes:
    a, _ = _expand(seed)
    return _compress(_mul(a, _G))


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    a, prefix = _expand(seed)
    public = _compress(_mul(a, _G))
    r = _hash_mod_q(prefix + message)
    big_r = _compress(_mul(r, _G))
    k = _hash_mod_q(big_r + public + message)
    s = (r + k * a) % _Q
    return big_r + s.to_bytes(32, "little")


# ---------------------------------------------------------------------------------------------
# BLAKE3 (default hash mode, 32-byte output), any input length: 1024-byte chunks of 64-byte
# blocks, chunk chaining values merged pairwise in a binary tree (left subtree: the largest
# power of two of chunks below the total). Inputs here are at most 2188 bytes (a transaction).

_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_PERM = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_CHUNK_START, _CHUNK_END, _PARENT, _ROOT = 1, 2, 4, 8
_CHUNK_LEN = 1024
_M32 = 0xFFFFFFFF


def _g(v, a, b, c, d, x, y):
    v[a] = (v[a] + v[b] + x) & _M32
    v[d] = v[d] ^ v[a]
    v[d] = ((v[d] >> 16) | (v[d] << 16)) & _M32
    v[c] = (v[c] + v[d]) & _M32
    v[b] = v[b] ^ v[c]
    v[b] = ((v[b] >> 12) | (v[b] << 20)) & _M32
    v[a] = (v[a] + v[b] + y) & _M32
    v[d] = v[d] ^ v[a]
    v[d] = ((v[d] >> 8) | (v[d] << 24)) & _M32
    v[c] = (v[c] + v[d]) & _M32
    v[b] = v[b] ^ v[c]
    v[b] = ((v[b] >> 7) | (v[b] << 25)) & _M32


def _compress_b3(cv, block: bytes, block_len: int, counter: int, flags: int):
    """The compression function; returns the first 8 output words (a chaining value)."""
    m = list(struct.unpack("<16I", block))
    v = list(cv) + list(_IV[:4]) + [counter & _M32, (counter >> 32) & _M32, block_len, flags]
    for round_ in range(7):
        _g(v, 0, 4, 8, 12, m[0], m[1])
        _g(v, 1, 5, 9, 13, m[2], m[3])
        _g(v, 2, 6, 10, 14, m[4], m[5])
        _g(v, 3, 7, 11, 15, m[6], m[7])
        _g(v, 0, 5, 10, 15, m[8], m[9])
        _g(v, 1, 6, 11, 12, m[10], m[11])
        _g(v, 2, 7, 8, 13, m[12], m[13])
        _g(v, 3, 4, 9, 14, m[14], m[15])
        if round_ < 6:
            m = [m[i] for i in _PERM]
    return [v[i] ^ v[i + 8] for i in range(8)]


def _chunk_cv(chunk: bytes, counter: int, root: bool):
    """Chaining value of one chunk (up to 1024 bytes), chunk counter = its index."""
    blocks = [chunk[i:i + 64] for i in range(0, len(chunk), 64)] or [b""]
    cv = list(_IV)
    for index, block in enumerate(blocks):
        flags = _CHUNK_START if index == 0 else 0
        if index == len(blocks) - 1:
            flags |= _CHUNK_END | (_ROOT if root else 0)
        cv = _compress_b3(cv, block.ljust(64, b"\0"), len(block), counter, flags)
    return cv


def _subtree_cv(data: bytes, first_chunk: int, root: bool):
    """Chaining value of the subtree over `data` (whole chunks, the last possibly partial)."""
    chunks = max(1, -(-len(data) // _CHUNK_LEN))
    if chunks == 1:
        return _chunk_cv(data, first_chunk, root)
    left_chunks = 1 << ((chunks - 1).bit_length() - 1)  # largest power of two < chunks
    split = left_chunks * _CHUNK_LEN
    left = _subtree_cv(data[:split], first_chunk, False)
    right = _subtree_cv(data[split:], first_chunk + left_chunks, False)
    block = struct.pack("<16I", *left, *right)
    return _compress_b3(list(_IV), block, 64, 0, _PARENT | (_ROOT if root else 0))


def blake3(data: bytes) -> bytes:
    """BLAKE3 (default mode, unkeyed, 32-byte output) of any input."""
    return struct.pack("<8I", *_subtree_cv(bytes(data), 0, True))


def account_id_of(public_key: bytes) -> int:
    digest = blake3(b"nexus-account-v1" + public_key)
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


# ---------------------------------------------------------------------------------------------
# Messages (docs/protocol.md, "Messages"). Header: length u16, kind u8, version u8,
# reserved u32, seq u64. Body layouts as struct formats with field names ("_" = reserved).

HEADER = "<HBBIQ"
VERSION = 1
MESSAGES = {
    1: ("Login", "32s64sQQII8s", "public_key signature session_id resume_from heartbeat_ms flags _"),
    2: ("Logout", "H6s", "reason _"),
    3: ("Heartbeat", "Q", "timestamp_ns"),
    10: ("NewOrder", "IBBBBQqq", "market side tif stp order_type oid price qty"),
    11: ("Cancel", "IIQ", "market _ oid"),
    12: ("CancelReplace", "IIQqq", "market _ oid price qty"),
    13: ("MassCancel", "II", "market _"),
    20: ("Subscribe", "II", "market _"),
    21: ("Replay", "IIQ", "market _ from_seq"),
    22: ("SnapshotRequest", "II", "market _"),
    100: ("Challenge", "32sQ", "nonce server_time_ns"),
    101: ("LoginAccepted", "QQQQII", "account session_id next_client_seq next_server_seq heartbeat_ms flags"),
    102: ("LoginRejected", "H6s", "reason _"),
    103: ("ServerLogout", "H6s", "reason _"),
    104: ("ServerHeartbeat", "Q", "timestamp_ns"),
    105: ("Reject", "QBBHI", "ref_seq ref_kind _ reason _"),
    106: ("ChainInfo", "32sQQ", "chain_id height block_time_ms"),
    110: ("OrderAccepted", "QQQII", "client_seq seq oid market _"),
    111: ("OrderRejected", "QQQIHH", "client_seq seq oid market reason _"),
    112: ("Fill", "QQQIBBHqqqqII", "client_seq seq oid market side liquidity _ price qty fee leaves match_index _"),
    113: ("Canceled", "QQQIB3sq", "client_seq seq oid market reason _ remaining"),
    114: ("Replaced", "QQQIIqq", "client_seq seq oid market _ price qty"),
    115: ("Sequenced", "QQQ", "client_seq seq height"),
    116: ("Finalized", "QQQ", "client_seq seq height"),
    117: ("PositionUpdate", "QQIIq16sqq", "client_seq seq market _ size open_notional realized_pnl funding_paid"),
    118: ("Liquidation", "QQIB3sqqqq", "client_seq seq market step _ lots notional fee bad_debt"),
    119: ("Deleveraged", "QQIIqq", "client_seq seq market _ lots notional"),
    120: ("TransactionStatus", "QBBHI32s", "client_seq status _ code _ hash"),
    121: ("CallResult", "QQIHBB32s", "client_seq seq coprocessor action status _ result"),
    200: ("SnapshotBegin", "IIQQII", "market _ market_seq feed_epoch bid_levels ask_levels"),
    201: ("SnapshotLevel", "IB3sqq", "market side _ price lots"),
    202: ("SnapshotEnd", "IIQ", "market _ market_seq"),
    203: ("LevelUpdate", "IB3sQQqq", "market side _ market_seq seq price lots"),
    204: ("Trade", "IB3sQQIIqq", "market taker_side _ market_seq seq match_index _ price qty"),
    205: ("MarkPrice", "IIQQqqq", "market _ market_seq seq oracle mark premium_ppb"),
    206: ("FundingRate", "IIQQq16s", "market _ market_seq seq rate_ppb index"),
}
# i128 fields: 16 bytes, little-endian two's complement (decoded to int).
I128_FIELDS = {"open_notional", "index"}
SIZES = {1: 144, 2: 24, 3: 24, 10: 48, 11: 32, 12: 48, 13: 24, 20: 24, 21: 32, 22: 24,
         100: 56, 101: 56, 102: 24, 103: 24, 104: 24, 105: 32, 106: 64, 110: 48, 111: 48, 112: 88,
         113: 56, 114: 64, 115: 40, 116: 40, 117: 80, 118: 72, 119: 56, 120: 64, 121: 72, 200: 48, 201: 40,
         202: 32, 203: 56, 204: 64, 205: 64, 206: 64}
KIND = {name: kind for kind, (name, _, _) in MESSAGES.items()}
# Transaction (kind 14, chains only) is the one kind of variable size: the header followed by a
# signed transaction of 140 + 32 n bytes (see transaction_message below). Only clients send it.
KIND_TRANSACTION = 14

REJECT_CODES = {1: "bad_length", 2: "unknown_kind", 3: "unsupported_version", 4: "not_logged_in",
                5: "already_logged_in", 6: "seq_gap", 7: "duplicate_seq", 8: "invalid_field",
                9: "overloaded", 10: "unknown_market", 11: "not_subscribed",
                12: "signature_required", 13: "transactions_unsupported", 14: "signer_mismatch"}
LOGIN_REJECTS = {1: "bad_key", 2: "bad_signature", 3: "resend_unavailable", 4: "invalid_resume",
                 5: "too_many_sessions"}
LOGOUT_REASONS = {0: "requested", 1: "malformed", 2: "heartbeat_timeout", 3: "login_timeout",
                  4: "taken_over", 5: "slow_consumer", 6: "shutdown", 7: "too_many_rejects"}
ENGINE_REJECTS = ["unknown_market", "unknown_asset", "unknown_account", "unknown_order",
                  "tick_size", "lot_size", "min_qty", "invalid_price", "invalid_qty",
                  "invalid_tif", "insufficient_balance", "post_only_would_cross", "fok_unfilled",
                  "duplicate_oid", "too_many_orders", "book_full", "already_exists",
                  "invalid_market", "overflow", "insufficient_margin", "reduce_only",
                  "open_interest_cap", "price_band", "no_oracle_price", "not_perp_market",
                  "invalid_leverage", "position_open"]
CANCEL_REASONS = {0: "user", 1: "unfilled", 2: "stp", 3: "liquidation", 4: "reduce_only", 5: "price_band"}
LIQUIDATION_STEPS = {0: "book", 1: "backstop", 2: "adl"}
ORDER_TYPE_MARKET, ORDER_TYPE_REDUCE_ONLY = 0x01, 0x80
SIDES = {0: "buy", 1: "sell"}
TIFS = {"gtc": 0, "ioc": 1, "fok": 2, "alo": 3}
ALL_MARKETS = 0xFFFFFFFF
FLAG_CANCEL_ON_DISCONNECT, FLAG_CHAIN = 0x1, 0x8000_0000  # Login / LoginAccepted flags
TX_STATUSES = {1: "admitted", 2: "refused", 3: "evicted"}
# The mempool's refusal codes (docs/transactions.md, "Submitting to a validator"; 15 is only
# sent on the validator's raw transaction port).
MEMPOOL_CODES = {1: "malformed", 2: "wrong_chain", 3: "bad_key", 4: "bad_signature",
                 5: "nonce_stale", 6: "nonce_future", 7: "nonce_used",
                 8: "nonce_below_remembered", 9: "nonce_pending", 10: "unknown_account",
                 11: "not_permitted", 12: "duplicate", 13: "pool_full", 14: "account_limit",
                 15: "frame_length", 16: "rate_limited", 17: "coprocessor_inactive",
                 18: "unknown_method", 19: "too_much_gas", 20: "account_rate_limited"}

def encode(name: str, seq: int = 0, **fields) -> bytes:
    kind = KIND[name]
    _, fmt, names = MESSAGES[kind]
    values = []
    for field, code in zip(names.split(), _codes(fmt)):
        if field == "_":
            values.append(b"" if code.endswith("s") else 0)
        elif field in I128_FIELDS:
            values.append(fields.pop(field, 0).to_bytes(16, "little", signed=True))
        else:
            values.append(fields.pop(field, b"" if code.endswith("s") else 0))
    if fields:
        raise TypeError(f"{name} has no field(s) {sorted(fields)}")
    return struct.pack(HEADER, SIZES[kind], kind, VERSION, 0, seq) + struct.pack("<" + fmt, *values)


def _codes(fmt: str):
    codes, number = [], ""
    for ch in fmt:
        if ch.isdigit():
            number += ch
        else:
            codes.append(number + ch)
            number = ""
    return codes


for _kind, (_name, _fmt, _fields) in MESSAGES.items():
    assert struct.calcsize("<" + HEADER[1:] + _fmt) == SIZES[_kind], _name
    assert len(_fields.split()) == len(_codes(_fmt)), _name


# ---------------------------------------------------------------------------------------------
# Signed transactions (docs/transactions.md): version u8 (1), reserved u8, count u16, chain_id
# [32], signer [32], nonce u64, count actions of 32 bytes, then the Ed25519 signature of
# TX_DOMAIN || all the bytes before it.

TX_VERSION = 1
TX_DOMAIN = b"nexus-tx-v1" + bytes(5)  # 16 bytes
MAX_ACTIONS = 64
ACTION_PLACE, ACTION_CANCEL, ACTION_CANCEL_ALL, ACTION_MODIFY = 1, 2, 3, 4
ACTION_NAMES = {1: "place", 2: "cancel", 3: "cancel_all", 4: "modify", 5: "withdraw",
                6: "transfer", 7: "leverage", 8: "isolated_margin", 9: "oracle_price",
                10: "deposit", 11: "call"}
ACTION_CALL = 11


def action(kind: int, flags: int = 0, a: int = 0, b: int = 0, c: int = 0, d: int = 0) -> bytes:
    """One 32-byte action record: kind u8, flags u8, reserved u16, a u32, b u64, c i64, d i64."""
    return struct.pack("<BBHIQqq", kind, flags, 0, a, b, c, d)


def place_action(market: int, oid: int, side: int, price: int, qty: int, tif: int = 0,
                 stp: int = 0, reduce_only: bool = False, market_order: bool = False) -> bytes:
    """Place flags: bit 0 side, bits 1-2 tif, bits 3-4 stp, bit 5 reduce-only, bit 6 market
    order (then the price must be 0)."""
    flags = side | tif << 1 | stp << 3 | int(reduce_only) << 5 | int(market_order) << 6
    return action(ACTION_PLACE, flags, market, oid, 0 if market_order else price, qty)


def cancel_action(market: int, oid: int) -> bytes:
    return action(ACTION_CANCEL, 0, market, oid)


def cancel_all_action(market: int) -> bytes:
    return action(ACTION_CANCEL_ALL, 0, market)


def call_action(coprocessor: int, method: int, args: bytes = bytes(24)) -> bytes:
    """A call of co-processor `coprocessor` (docs/execution.md, "Co-processors"): the method in
    the flags byte, the co-processor id in `a`, the 24 argument bytes as they lie."""
    if len(args) != 24:
        raise ValueError("a call carries exactly 24 bytes of arguments")
    return struct.pack("<BBHI", ACTION_CALL, method, 0, coprocessor) + args


def unsigned_transaction(chain_id: bytes, public_key: bytes, nonce: int, actions: list) -> bytes:
    if not 1 <= len(actions) <= MAX_ACTIONS:
        raise ValueError(f"a transaction carries 1 to {MAX_ACTIONS} actions, not {len(actions)}")
    if len(chain_id) != 32 or len(public_key) != 32 or any(len(a) != 32 for a in actions):
        raise ValueError("chain id, key and actions are 32 bytes each")
    return (struct.pack("<BBH", TX_VERSION, 0, len(actions)) + chain_id + public_key
            + struct.pack("<Q", nonce) + b"".join(actions))


def signed_transaction(seed: bytes, chain_id: bytes, nonce: int, actions: list) -> bytes:
    """The 140 + 32 n bytes of a transaction signed by the key of `seed`."""
    unsigned = unsigned_transaction(chain_id, ed25519_public_key(seed), nonce, actions)
    return unsigned + ed25519_sign(seed, TX_DOMAIN + unsigned)


def transaction_message(seq: int, transaction: bytes) -> bytes:
    """Transaction (kind 14): the 16-byte header (seq = client seq) and the transaction."""
    return struct.pack(HEADER, 16 + len(transaction), KIND_TRANSACTION, VERSION, 0, seq) + transaction


def describe_transaction(transaction: bytes) -> str:
    """One line per action of an encoded transaction (for printing what is sent)."""
    version, _, count = struct.unpack_from("<BBH", transaction)
    nonce = struct.unpack_from("<Q", transaction, 68)[0]
    lines = [f"transaction v{version}, {count} action(s), {len(transaction)} bytes, "
             f"chain {transaction[4:36].hex()}, nonce {nonce}"]
    for i in range(count):
        kind, flags, _, a, b, c, d = struct.unpack_from("<BBHIQqq", transaction, 76 + 32 * i)
        name = ACTION_NAMES.get(kind, kind)
        if kind == ACTION_PLACE:
            tif = {v: k for k, v in TIFS.items()}[(flags >> 1) & 3]
            lines.append(f"  action {i}: place market={a} oid={b} {SIDES[flags & 1]} {d} lots at "
                         f"{c} ticks ({tif}, stp {(flags >> 3) & 3}, flags {flags:#04x})")
        else:
            lines.append(f"  action {i}: {name} market={a} b={b} c={c} d={d} flags={flags:#04x}")
    return "\n".join(lines)


def decode(frame: bytes) -> dict:
    length, kind, version, _, seq = struct.unpack_from(HEADER, frame)
    if version != VERSION or kind not in MESSAGES or length != SIZES[kind] or len(frame) != length:
        raise ValueError(f"bad frame: kind {kind} version {version} length {length}")
    name, fmt, names = MESSAGES[kind]
    values = struct.unpack_from("<" + fmt, frame, 16)
    message = {"msg": name, "hseq": seq}
    for field, value in zip(names.split(), values):
        if field in I128_FIELDS:
            message[field] = int.from_bytes(value, "little", signed=True)
        elif field != "_":
            message[field] = value
    return message


def describe(m: dict) -> str:
    """One line per message, with codes turned into names."""
    m = dict(m)
    name = m.pop("msg")
    if name in ("Reject",):
        m["reason"] = REJECT_CODES.get(m["reason"], m["reason"])
        m["ref_kind"] = "Transaction" if m["ref_kind"] == KIND_TRANSACTION else \
            MESSAGES.get(m["ref_kind"], (m["ref_kind"],))[0]
    elif name == "LoginRejected":
        m["reason"] = LOGIN_REJECTS.get(m["reason"], m["reason"])
    elif name == "ServerLogout":
        m["reason"] = LOGOUT_REASONS.get(m["reason"], m["reason"])
    elif name == "OrderRejected":
        code = m["reason"]
        m["reason"] = ENGINE_REJECTS[code - 1] if 1 <= code <= len(ENGINE_REJECTS) else code
    elif name == "Canceled":
        m["reason"] = CANCEL_REASONS.get(m["reason"], m["reason"])
    elif name == "Fill":
        m["side"] = SIDES.get(m["side"], m["side"])
        m["liquidity"] = {1: "maker", 2: "taker"}.get(m["liquidity"], m["liquidity"])
    elif name in ("SnapshotLevel", "LevelUpdate"):
        m["side"] = {0: "bid", 1: "ask"}.get(m["side"], m["side"])
    elif name == "Trade":
        m["taker_side"] = SIDES.get(m["taker_side"], m["taker_side"])
    elif name == "Liquidation":
        m["step"] = LIQUIDATION_STEPS.get(m["step"], m["step"])
    elif name == "LoginAccepted":
        names = [n for bit, n in ((FLAG_CANCEL_ON_DISCONNECT, "cancel_on_disconnect"),
                                  (FLAG_CHAIN, "chain")) if m["flags"] & bit]
        m["flags"] = f"{m['flags']:#x}" + (f"({','.join(names)})" if names else "")
    elif name == "ChainInfo":
        m["block_time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(m["block_time_ms"] / 1000)) \
            + f".{m['block_time_ms'] % 1000:03d}Z"
    elif name == "TransactionStatus":
        m["status"] = TX_STATUSES.get(m["status"], m["status"])
        m["code"] = MEMPOOL_CODES.get(m["code"], m["code"])
    elif name == "CallResult" and m["status"] == 1:
        # Refused: the result field holds the refusal's code in ASCII.
        m["status"] = "refused"
        m["result"] = m["result"].rstrip(b"\0").decode("ascii", "replace")
    elif name == "CallResult":
        m["status"] = "answered"
    for key, value in m.items():
        if isinstance(value, bytes):
            m[key] = value.hex()
    return name + " " + " ".join(f"{k}={v}" for k, v in m.items())


class Connection:
    """A TCP connection that yields whole frames (docs/protocol.md, "Framing")."""

    def __init__(self, host: str, port: int, show_hex: bool = False):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.show_hex = show_hex
        self.last_sent = time.monotonic()

    def send(self, data: bytes):
        if self.show_hex:
            print("  >> " + data.hex(" "))
        self.sock.sendall(data)
        self.last_sent = time.monotonic()

    def recv(self, timeout: float):
        """The next message, or None if none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 2:
                length = struct.unpack_from("<H", self.buffer)[0]
                if not 16 <= length <= 256:
                    raise ValueError(f"bad frame length {length}")
                if len(self.buffer) >= length:
                    frame, self.buffer = self.buffer[:length], self.buffer[length:]
                    if self.show_hex:
                        print("  << " + frame.hex(" "))
                    return decode(frame)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk

    def close(self):
        self.sock.close()


def json_commands(host: str, port: int, commands: list):
    """Sends commands to the JSON Lines port (docs/node.md; development only, no
    authentication) and waits for each one's `finalized`. The binary protocol has no message
    that moves funds: deposits and perp collateral transfers go this way."""
    with socket.create_connection((host, port), timeout=10) as sock:
        lines = [json.dumps(command) for command in commands]
        sock.sendall(("\n".join(lines) + "\n").encode())
        reader = sock.makefile("r")
        finalized = 0
        while finalized < len(lines):
            reply = json.loads(reader.readline())
            print("  json:", json.dumps(reply))
            if reply.get("ev") == "finalized":
                finalized += 1
            elif reply.get("ev") in ("error", "rejected"):
                raise RuntimeError(f"JSON command refused: {reply}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="On a chain (a validator of `nexus devnet`: LoginAccepted flag bit 31) the orders "
               "go as one signed Transaction (kind 14; docs/transactions.md) instead of NewOrder: "
               "give --devnet DIR --validator I --dev-key N (or the validator's order_addr/"
               "data_addr ports from DIR/devnet.toml and a seed from DIR/dev-keys.txt, funded at "
               "genesis; --deposit needs a single node's JSON port). --bulk, --cancel-all, "
               "--nonce, --chain-id and --send-twice apply to chains only.")
    parser.add_argument("--seed", help="32-byte Ed25519 seed, 64 hex characters (or --dev-key)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--order-port", type=int, default=7071)
    parser.add_argument("--data-port", type=int, default=7072)
    parser.add_argument("--json-port", type=int, default=7070)
    parser.add_argument("--deposit", action="store_true",
                        help="first deposit 100000 USD and 10 BTC through the JSON port")
    parser.add_argument("--collateral", metavar="USD",
                        help="then move this much USD into perp collateral (a JSON `transfer`; "
                             "perp orders need it)")
    parser.add_argument("--market", type=int, default=0,
                        help="market id (default 0: BTC-USD of a default single node; a devnet's "
                             "only market is 1)")
    parser.add_argument("--side", choices=["buy", "sell"], default="buy")
    parser.add_argument("--price", type=int, default=100_000, help="limit price in ticks")
    parser.add_argument("--qty", type=int, default=10, help="size in lots")
    parser.add_argument("--tif", choices=list(TIFS), default="gtc")
    parser.add_argument("--oid", type=int, default=int(time.time()) & 0xFFFFFF)
    parser.add_argument("--reduce-only", action="store_true",
                        help="perp markets: the order may only shrink the position")
    parser.add_argument("--session-id", type=int, default=1)
    parser.add_argument("--cancel-on-disconnect", action="store_true",
                        help="login flag bit 0 (never in force on a chain)")
    chain = parser.add_argument_group("chains (signed transactions)")
    chain.add_argument("--devnet", metavar="DIR",
                       help="a `nexus devnet --dir DIR` folder: take the host and ports from "
                            "DIR/devnet.toml (order_addr, data_addr) instead of --host/--*-port")
    chain.add_argument("--validator", type=int, default=0, metavar="I",
                       help="with --devnet: log in on validator I's order-entry port (default 0)")
    chain.add_argument("--feed-validator", type=int, metavar="J",
                       help="with --devnet: read market data from validator J (default: --validator)")
    chain.add_argument("--dev-key", type=int, metavar="N",
                       help="with --devnet: use line N (from 1) of DIR/dev-keys.txt as --seed "
                            "(development keys, funded at genesis)")
    chain.add_argument("--bulk", type=int, default=1, metavar="N",
                       help="place N orders in the one transaction (at most 64 actions with "
                            "--cancel-all's): oids "
                            "--oid, --oid+1, ..., prices one tick apart away from the book "
                            "(a sell at --price, --price+1, ...; a buy at --price, --price-1, ...)")
    chain.add_argument("--cancel-all", action="store_true",
                       help="put a cancel-all action for --market first in the transaction (so it "
                            "cancels the account's earlier orders there, not this transaction's); "
                            "with --bulk 0 the transaction only cancels")
    chain.add_argument("--nonce", type=int,
                       help="transaction nonce (default: the current Unix time in ms); it must be "
                            "within (block time - 2 days, block time + 1 day] and unused")
    chain.add_argument("--chain-id", metavar="HEX",
                       help="sign for this 32-byte chain id instead of ChainInfo's (to see the "
                            "refusal wrong_chain)")
    chain.add_argument("--send-twice", action="store_true",
                       help="send the same signed bytes again right after, in a second Transaction "
                            "message (to see the refusal duplicate or nonce_used)")
    chain.add_argument("--unsigned", action="store_true",
                       help="send an unsigned NewOrder even on a chain (to see the Reject "
                            "signature_required)")
    parser.add_argument("--hex", action="store_true", help="also print every frame in hex")
    parser.add_argument("--linger", type=float, default=0, metavar="SECONDS",
                        help="after the order's last reply, keep printing what comes on both "
                             "connections for this long (a resting maker sees its fills)")
    args = parser.parse_args()

    if args.devnet:
        import tomllib
        with open(f"{args.devnet}/devnet.toml", "rb") as file:
            validators = tomllib.load(file)["validators"]
        feed_index = args.validator if args.feed_validator is None else args.feed_validator
        for index in (args.validator, feed_index):
            if not 0 <= index < len(validators):
                parser.error(f"the devnet has validators 0 to {len(validators) - 1}")
        args.host, port = validators[args.validator]["order_addr"].rsplit(":", 1)
        args.order_port = int(port)
        args.data_port = int(validators[feed_index]["data_addr"].rsplit(":", 1)[1])
        print(f"devnet {args.devnet}: order entry {args.host}:{args.order_port} (validator "
              f"{args.validator}), market data port {args.data_port} (validator {feed_index})")
        if args.dev_key is not None:
            with open(f"{args.devnet}/dev-keys.txt") as file:
                dev_keys = file.read().split()
            if not 1 <= args.dev_key <= len(dev_keys):
                parser.error(f"--dev-key: 1 to {len(dev_keys)}")
            args.seed = dev_keys[args.dev_key - 1]
    elif args.dev_key is not None:
        parser.error("--dev-key needs --devnet")
    if args.seed is None:
        parser.error("--seed (or --devnet with --dev-key) is required")
    seed = bytes.fromhex(args.seed)
    if len(seed) != 32:
        parser.error("--seed must be 32 bytes")
    if not 0 <= args.bulk or args.bulk + args.cancel_all == 0 or args.bulk + args.cancel_all > MAX_ACTIONS:
        parser.error(f"--bulk: 1 to {MAX_ACTIONS} actions in all (0 only with --cancel-all)")
    if args.chain_id is not None and len(bytes.fromhex(args.chain_id)) != 32:
        parser.error("--chain-id must be 32 bytes (64 hex characters)")
    public_key = ed25519_public_key(seed)
    account = account_id_of(public_key)
    print(f"public key {public_key.hex()}\naccount id {account} (BLAKE3-derived)")

    commands = []
    if args.deposit:
        commands += [{"op": "deposit", "account": account, "asset": asset, "amount": amount}
                     for asset, amount in (("USD", "100000"), ("BTC", "10"))]
    if args.collateral:
        commands.append({"op": "transfer", "account": account, "amount": args.collateral})
    if commands:
        print("funding through the JSON port:")
        json_commands(args.host, args.json_port, commands)

    # Market data: subscribe, print the snapshot.
    feed = Connection(args.host, args.data_port, args.hex)
    feed.send(encode("Subscribe", market=args.market))
    print(f"market data: subscribed to market {args.market}")
    while True:
        message = feed.recv(5)
        if message is None:
            raise RuntimeError("no snapshot")
        print("  " + describe(message))
        if message["msg"] == "Reject":
            return 1
        if message["msg"] == "SnapshotEnd":
            break
    # A perp market's snapshot is followed by its current mark (its opening mark at least)
    # and latest funding rate, if any.
    while (message := feed.recv(0.2)) is not None:
        if message["msg"] != "ServerHeartbeat":
            print("  " + describe(message))
        if message["msg"] not in ("MarkPrice", "FundingRate", "ServerHeartbeat"):
            break

    # Order entry: challenge, login.
    orders = Connection(args.host, args.order_port, args.hex)
    challenge = orders.recv(5)
    print("order entry:\n  " + describe(challenge))
    assert challenge["msg"] == "Challenge"
    heartbeat_ms, flags = 1000, 1 if args.cancel_on_disconnect else 0
    signed = (b"NEXUS-LOGIN-V1\0\0" + challenge["nonce"] + public_key
              + struct.pack("<QQII", args.session_id, 0, heartbeat_ms, flags))
    assert len(signed) == 104
    orders.send(encode("Login", public_key=public_key, signature=ed25519_sign(seed, signed),
                       session_id=args.session_id, resume_from=0, heartbeat_ms=heartbeat_ms,
                       flags=flags))
    reply = orders.recv(5)
    print("  " + describe(reply))
    if reply is None or reply["msg"] != "LoginAccepted":
        return 1
    if reply["account"] != account:
        print(f"  ACCOUNT MISMATCH: server says {reply['account']}, derived {account}")
        return 1
    print("  account id matches the derivation")
    interval = reply["heartbeat_ms"] / 1000

    chain_info = None
    if reply["flags"] & FLAG_CHAIN:
        # A chain: ChainInfo follows LoginAccepted (before any resent message).
        chain_info = orders.recv(5)
        print("  " + describe(chain_info or {"msg": "(no ChainInfo)"}))
        if chain_info is None or chain_info["msg"] != "ChainInfo":
            return 1

    client_seq = reply["next_client_seq"]
    side = 0 if args.side == "buy" else 1
    pending = set()  # client seqs still waiting for their last reply
    tx_hash = None
    if chain_info is None or args.unsigned:
        # One unsigned order, numbered with next_client_seq; read until its Finalized.
        orders.send(encode("NewOrder", seq=client_seq, market=args.market, side=side,
                           tif=TIFS[args.tif], stp=0,
                           order_type=ORDER_TYPE_REDUCE_ONLY if args.reduce_only else 0,
                           oid=args.oid, price=args.price, qty=args.qty))
        print(f"  sent NewOrder seq={client_seq} oid={args.oid} {args.side} {args.qty} lots "
              f"at {args.price} ticks ({args.tif})")
        pending.add(client_seq)
        if chain_info is None and (args.bulk != 1 or args.cancel_all or args.send_twice
                                   or args.nonce is not None or args.chain_id):
            print("  (a single node: --bulk, --cancel-all, --nonce, --chain-id and --send-twice "
                  "are for chains and were ignored)")
    else:
        # A chain: one signed transaction, cancel-all first if asked, then the orders.
        chain_id = bytes.fromhex(args.chain_id) if args.chain_id else chain_info["chain_id"]
        nonce = args.nonce if args.nonce is not None else time.time_ns() // 1_000_000
        age = nonce - chain_info["block_time_ms"]
        print(f"  nonce {nonce} (last block time {age:+} ms; valid window (-172800000, +86400000])")
        actions = [cancel_all_action(args.market)] if args.cancel_all else []
        step = 1 if side else -1  # a sell ladder goes up, a buy ladder down
        actions += [place_action(args.market, args.oid + i, side, args.price + step * i, args.qty,
                                 tif=TIFS[args.tif], reduce_only=args.reduce_only)
                    for i in range(args.bulk)]
        transaction = signed_transaction(seed, chain_id, nonce, actions)
        tx_hash = blake3(transaction)
        for copy in range(2 if args.send_twice else 1):
            orders.send(transaction_message(client_seq + copy, transaction))
            pending.add(client_seq + copy)
            print(f"  sent Transaction seq={client_seq + copy} hash {tx_hash.hex()}")
        print("    " + describe_transaction(transaction).replace("\n", "\n    "))

    # Replies until every message sent is answered for good: Finalized, a Reject, or (chains)
    # TransactionStatus refused or evicted.
    deadline = time.monotonic() + (10 if chain_info is None else 30)
    hash_mismatch = False
    while pending and time.monotonic() < deadline:
        if time.monotonic() - orders.last_sent >= interval:
            orders.send(encode("Heartbeat", timestamp_ns=time.time_ns()))
        message = orders.recv(min(interval, 0.5))
        if message is None or message["msg"] == "ServerHeartbeat":
            continue
        print("  " + describe(message))
        kind = message["msg"]
        if kind == "ServerLogout":
            return 1
        if kind == "Reject":
            pending.discard(message["ref_seq"])
        elif kind == "Finalized":
            pending.discard(message["client_seq"])
        elif kind == "TransactionStatus":
            if tx_hash is not None and message["hash"] != tx_hash:
                print(f"    HASH MISMATCH: server {message['hash'].hex()}, local {tx_hash.hex()}")
                hash_mismatch = True
            if message["status"] != 1:  # refused or evicted: nothing more will come for it
                pending.discard(message["client_seq"])
    done = not pending and not hash_mismatch

    # Optionally stay: later messages (a maker's fills, evictions) and the feed, as they come.
    if args.linger > 0:
        print(f"lingering {args.linger} s:")
        until = time.monotonic() + args.linger
        while time.monotonic() < until:
            if time.monotonic() - orders.last_sent >= interval:
                orders.send(encode("Heartbeat", timestamp_ns=time.time_ns()))
            for source, connection in (("order", orders), ("feed", feed)):
                message = connection.recv(0.05)
                if message is not None and message["msg"] != "ServerHeartbeat":
                    print(f"  {source}: " + describe(message))
                if message is not None and message["msg"] == "ServerLogout":
                    return 1

    # What the feed said meanwhile.
    print("market data after the order:")
    while (message := feed.recv(0.3)) is not None:
        if message["msg"] != "ServerHeartbeat":
            print("  " + describe(message))

    orders.send(encode("Logout"))
    while True:  # anything still on its way, then ServerLogout
        message = orders.recv(5)
        if message is None or message["msg"] != "ServerHeartbeat":
            print("  " + describe(message or {"msg": "(no reply)"}))
        if message is None or message["msg"] == "ServerLogout":
            break
    orders.close()
    feed.close()
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
