#!/usr/bin/env python3
"""Offline checks of nexus_client.py against the documents' test vectors (no node needed).

    python3 examples/python/test_nexus_client.py
"""

import os
import struct
import sys

import nexus_client as nc

# BLAKE3 official test vectors (BLAKE3-team/BLAKE3, test_vectors/test_vectors.json): input
# byte i is i % 251; the first 32 bytes of each "hash" output.
BLAKE3_VECTORS = {
    0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
    1023: "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11",
    1024: "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
    1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    2048: "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a",
    2049: "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030",
    3072: "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2",
    3073: "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3",
    4096: "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969",
    4097: "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995",
    5121: "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff",
    7169: "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817",
}

# docs/transactions.md, "Worked example".
TX_EXAMPLE = (
    "010002004e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e"
    "4e4e4e4e79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910b"
    "ad04966400505c18a30100000100000000000000070000000000000050c30000"
    "0000000002000000000000000200000001000000030000000000000000000000"
    "000000000000000000000000b02fbb3bacfd9c6b39dd066cab72ead786e0dbd0"
    "f08feaf8b4b3fe7cf8a72b69d02e59ae07835f41cde71855a1db49e6e9154d34"
    "73b3898e3419abfc4494cc0f")
TX_EXAMPLE_HASH = "cd4f71b618d9c1baca7e74e091611764f60f76c3697d3ad3beba24a0399c38ee"


def protocol_doc_blocks(heading: str) -> list:
    """The hex blocks of docs/protocol.md's section `heading` (up to the next `## `): lines of
    `OO: ` then up to 16 bytes in 48 columns, then a comment."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../docs/protocol.md")
    with open(path) as file:
        section = file.read().split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")[1::2]
    return [b"".join(bytes.fromhex(line[4:52]) for line in block.strip().splitlines())
            for block in blocks]


def main() -> int:
    failures = 0

    def check(name, got, want):
        nonlocal failures
        ok = got == want
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": got {got}, want {want}"))

    for length, want in BLAKE3_VECTORS.items():
        data = bytes(i % 251 for i in range(length))
        check(f"BLAKE3 {length} bytes", nc.blake3(data).hex()[:len(want)], want)

    # protocol.md, "Worked example": key and account id test vector.
    seed = bytes(range(32))
    public_key = nc.ed25519_public_key(seed)
    check("protocol.md public key", public_key.hex(),
          "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
    check("protocol.md account id", nc.account_id_of(public_key), 6581511237511020069)

    # transactions.md, "Actions": kind 11 calls co-processor 1, method 2, bytes 8..32 as given.
    check("call action", nc.call_action(1, 2, bytes(range(24))).hex(),
          "0b020000" "01000000" + bytes(range(24)).hex())

    # transactions.md, "Worked example".
    seed = bytes(range(1, 33))
    public_key = nc.ed25519_public_key(seed)
    check("transactions.md public key", public_key.hex(),
          "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664")
    check("transactions.md account id", nc.account_id_of(public_key), 482625985700804723)
    actions = [nc.place_action(0, 7, 0, 50_000, 2), nc.cancel_action(1, 3)]
    transaction = nc.signed_transaction(seed, b"\x4e" * 32, 1_800_000_000_000, actions)
    check("transactions.md transaction bytes", transaction.hex(), TX_EXAMPLE)
    check("transactions.md transaction hash", nc.blake3(transaction).hex(), TX_EXAMPLE_HASH)

    # protocol.md, "Worked example on a chain": the same key, chain id and nonce, that
    # example's first action alone; the server's replies decode to what the doc says.
    login_accepted, chain_info, frame, status = protocol_doc_blocks("## Worked example on a chain")
    place = nc.place_action(0, 7, 0, 50_000, 2)
    transaction = nc.signed_transaction(seed, b"\x4e" * 32, 1_800_000_000_000, [place])
    check("protocol.md chain example Transaction", nc.transaction_message(1, transaction).hex(),
          frame.hex())
    accepted = nc.decode(login_accepted)
    check("protocol.md chain example LoginAccepted",
          (accepted["account"], accepted["flags"]), (482625985700804723, nc.FLAG_CHAIN))
    info = nc.decode(chain_info)
    check("protocol.md chain example ChainInfo",
          (info["chain_id"], info["height"], info["block_time_ms"]),
          (b"\x4e" * 32, 6, 1_799_999_999_000))
    status = nc.decode(status)
    check("protocol.md chain example TransactionStatus",
          (status["client_seq"], status["status"], status["code"], status["hash"]),
          (1, 1, 0, nc.blake3(transaction)))

    # Sizes: 140 + 32 n, framed with the 16-byte header; a full bulk is 2188 bytes (3 chunks).
    bulk = [nc.place_action(1, i, 1, 100 + i, 1) for i in range(64)]
    transaction = nc.signed_transaction(seed, b"\x4e" * 32, 1, bulk)
    check("64-action transaction length", len(transaction), 2188)
    frame = nc.transaction_message(5, transaction)
    check("Transaction frame header", struct.unpack_from(nc.HEADER, frame), (2204, 14, 1, 0, 5))
    # Place flags: sell (bit 0), IOC (bits 1-2 = 1), cancel_both (bits 3-4 = 2), market (bit 6).
    record = nc.place_action(1, 9, 1, 123, 4, tif=1, stp=2, market_order=True)
    check("place flags", record[1], 0b0101_0011)
    check("market order price", struct.unpack_from("<q", record, 16)[0], 0)

    # New kinds decode.
    frame = struct.pack(nc.HEADER, 64, 120, 1, 0, 3) + struct.pack("<QBBHI32s", 2, 2, 0, 2, 0, b"\xab" * 32)
    check("TransactionStatus decode", nc.describe(nc.decode(frame)),
          "TransactionStatus hseq=3 client_seq=2 status=refused code=wrong_chain hash=" + "ab" * 32)
    code = b"coprocessor_inactive".ljust(32, b"\0")
    frame = struct.pack(nc.HEADER, 72, 121, 1, 0, 4) + struct.pack("<QQIHBB32s", 7, 9, 5, 0, 1, 0, code)
    check("CallResult decode", nc.describe(nc.decode(frame)),
          "CallResult hseq=4 client_seq=7 seq=9 coprocessor=5 action=0 status=refused "
          "result=coprocessor_inactive")
    frame = struct.pack(nc.HEADER, 64, 106, 1, 0, 0) + struct.pack("<32sQQ", b"\x01" * 32, 5, 1_700_000_000_123)
    check("ChainInfo decode", nc.describe(nc.decode(frame)),
          "ChainInfo hseq=0 chain_id=" + "01" * 32
          + " height=5 block_time_ms=1700000000123 block_time=2023-11-14T22:13:20.123Z")

    print("all passed" if not failures else f"{failures} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
