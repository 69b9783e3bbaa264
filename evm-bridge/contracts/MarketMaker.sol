// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

/// The CoreWriter system contract (docs/evm.md): every call leaves one action for Core.
interface ICoreWriter {
    function placeOrder(uint32 market, uint64 oid, bool isBuy, uint64 price, uint64 qty, uint8 tif, bool reduceOnly) external;
    function cancelOrder(uint32 market, uint64 oid) external;
    function cancelAll(uint32 market) external;
    function depositToCore() external payable;
    function withdrawToEvm(uint64 units) external;
}

/// A market maker that quotes a Core spot market from the EVM: it deposits native value to
/// Core, quotes a bid and an ask through CoreWriter, reads its Core balance and the book
/// through the read precompiles, and counts the fills Core reports back in callbacks.
contract MarketMaker {
    ICoreWriter constant CORE = ICoreWriter(0x3333333333333333333333333333333333333333);
    address constant BALANCE = address(0x0801);
    address constant BBO = address(0x0803);
    address constant CORE_BLOCK = address(0x0800);
    address constant SYSTEM = 0xffffFFFfFFffffffffffffffFfFFFfffFFFfFFfE;

    address public owner;
    uint32 public market;
    uint64 public nextOid = 1;
    uint64 public callbacks;
    uint64 public fills;
    int64 public filledLots;
    int64 public lastFillPrice;
    uint64 public lastActionId;
    uint8 public lastKind;

    event Quoted(uint64 bidOid, uint64 askOid, uint64 bid, uint64 ask, uint64 size);
    event CoreEvent(uint64 actionId, uint8 kind, uint64 oid, int64 price, int64 qty, int64 left, uint32 code);

    constructor(uint32 market_) payable {
        owner = msg.sender;
        market = market_;
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "MarketMaker: not owner");
        _;
    }

    /// Moves the attached value to this contract's Core balance (native asset).
    function deposit() external payable onlyOwner {
        CORE.depositToCore{value: msg.value}();
    }

    /// Moves Core units of the native asset back to this contract's EVM balance.
    function withdraw(uint64 units) external onlyOwner {
        CORE.withdrawToEvm(units);
    }

    /// Quotes `size` lots on both sides (GTC).
    function quote(uint64 bid, uint64 ask, uint64 size) public onlyOwner {
        require(bid < ask, "MarketMaker: crossed quote");
        uint64 bidOid = nextOid++;
        uint64 askOid = nextOid++;
        CORE.placeOrder(market, bidOid, true, bid, size, 0, false);
        CORE.placeOrder(market, askOid, false, ask, size, 0, false);
        emit Quoted(bidOid, askOid, bid, ask, size);
    }

    /// Quotes `halfSpread` ticks around the middle of Core's best bid and offer as of this
    /// block's start.
    function quoteAroundBook(uint64 halfSpread, uint64 size) external onlyOwner {
        (int64 bid, , int64 ask, ) = bestBidOffer();
        require(bid > 0 && ask > 0, "MarketMaker: empty book");
        uint64 mid = uint64(bid + ask) / 2;
        quote(mid - halfSpread, mid + halfSpread, size);
    }

    /// Quotes, then reverts: Core must never see these orders.
    function quoteThenRevert(uint64 bid, uint64 ask, uint64 size) external onlyOwner {
        quote(bid, ask, size);
        revert("MarketMaker: changed my mind");
    }

    function cancelAll() external onlyOwner {
        CORE.cancelAll(market);
    }

    /// This contract's Core balance of `asset`, as of this block's start.
    function coreBalance(uint32 asset) public view returns (int64 total, int64 locked) {
        (bool ok, bytes memory out) = BALANCE.staticcall(abi.encode(address(this), asset));
        require(ok, "MarketMaker: balance read failed");
        (total, locked) = abi.decode(out, (int64, int64));
    }

    /// Core's best bid and offer in this market, as of this block's start.
    function bestBidOffer() public view returns (int64 bid, int64 bidLots, int64 ask, int64 askLots) {
        (bool ok, bytes memory out) = BBO.staticcall(abi.encode(market));
        require(ok, "MarketMaker: bbo read failed");
        (bid, bidLots, ask, askLots) = abi.decode(out, (int64, int64, int64, int64));
    }

    /// The Core block height this EVM block sees.
    function coreBlock() external view returns (uint64 height) {
        (bool ok, bytes memory out) = CORE_BLOCK.staticcall("");
        require(ok, "MarketMaker: block read failed");
        height = abi.decode(out, (uint64));
    }

    /// Core -> EVM results, delivered by the system in the block after Core ran them.
    function onCoreEvent(uint64 actionId, uint8 kind, uint64 oid, int64 price, int64 qty, int64 left, uint32 code) external {
        require(msg.sender == SYSTEM, "MarketMaker: not system");
        callbacks++;
        lastKind = kind;
        lastActionId = actionId;
        if (kind == 3) {
            fills++;
            filledLots += qty;
            lastFillPrice = price;
        }
        emit CoreEvent(actionId, kind, oid, price, qty, left, code);
    }

    receive() external payable {}
}
