//! Structural checks of `perp-bench` on tiny sizes: which accounts a mark move liquidates,
//! what the liquidation index hands out, and that spot and perp replays see the same trades.
//! Nothing here looks at a time.

use std::collections::BTreeSet;

use engine::{AccountId, Ticks, PPB};
use perf::memory::HeapProbe;
use perf::perp_bench::{
    measure_fixture, render_text, run, to_json, LiqAccount, LiquidationFixture, OrderKind,
    PerpBenchOptions, LIQ_ENTRY, LIQ_MARKET, LIQ_MMR_PPB, LIQ_TOP,
};

/// Under maintenance at `mark`, from what the fixture says it created, with the rule of
/// docs/perps.md written out again here: equity = collateral + size * (mark - entry) (QU 1,
/// no fees, no funding), maintenance = ceil(|size| * mark * mmr / 10^9).
fn under_maintenance(account: &LiqAccount, mark: Ticks) -> bool {
    let size = account.size as i128;
    let equity = account.collateral as i128 + size * (mark as i128 - account.entry as i128);
    let notional = (size * mark as i128).abs();
    let maintenance = (notional * LIQ_MMR_PPB as i128 + PPB - 1) / PPB; // notional >= 0
    equity < maintenance
}

fn expected_set(
    accounts: &[LiqAccount],
    gone: &BTreeSet<AccountId>,
    mark: Ticks,
) -> BTreeSet<AccountId> {
    accounts
        .iter()
        .filter(|a| !gone.contains(&a.id) && under_maintenance(a, mark))
        .map(|a| a.id)
        .collect()
}

#[test]
fn mark_moves_liquidate_exactly_the_crossed_accounts() {
    let n = 300;
    let mut fixture = LiquidationFixture::build(n, 7, HeapProbe::disabled());
    let accounts = fixture.accounts().to_vec();
    assert_eq!(accounts.len(), n);
    // The fixture's record agrees with the engine.
    for account in &accounts {
        let position = fixture
            .engine()
            .position_view(account.id, LIQ_MARKET)
            .expect("position");
        assert_eq!(position.size, account.size);
        assert_eq!(
            position.open_notional,
            account.size as i128 * account.entry as i128
        );
        let (collateral, _) = fixture
            .engine()
            .perp_collateral(account.id)
            .expect("account");
        assert_eq!(collateral, account.collateral);
        assert!(!under_maintenance(account, LIQ_ENTRY));
    }
    assert_eq!(fixture.stats().liquidations, 0);
    let mut gone = BTreeSet::new();

    // Moves that cross no liquidation key, from the entry price and right next to the
    // highest key: nothing checked, nothing liquidated, on a flat (empty) book.
    for price in [LIQ_TOP + 1, LIQ_TOP + 2, LIQ_TOP + 1] {
        assert!(expected_set(&accounts, &gone, price).is_empty());
        let outcome = fixture.oracle(price);
        assert_eq!(fixture.mark(), price, "empty book: mark = oracle");
        assert_eq!(outcome.rejected, 0);
        assert_eq!(outcome.candidates, 0, "no key crossed at {price}");
        assert_eq!(outcome.liquidations, 0);
        assert!(outcome.liquidated.is_empty());
    }

    // Moves that cross 25, then 40 more, then 1 key.
    let mut mark = LIQ_TOP + 1;
    let mut total_candidates = 0;
    for k in [25, 40, 1] {
        mark -= k;
        let expected = expected_set(&accounts, &gone, mark);
        assert_eq!(expected.len(), k as usize, "one liquidation price per tick");
        let outcome = fixture.oracle(mark);
        assert_eq!(outcome.rejected, 0);
        let liquidated: BTreeSet<AccountId> = outcome.liquidated.iter().copied().collect();
        assert_eq!(
            liquidated.len(),
            outcome.liquidated.len(),
            "each account once"
        );
        assert_eq!(liquidated, expected, "move to {mark}");
        assert_eq!(outcome.liquidations, k as u64);
        // The index handed out only the crossed keys: no full scan.
        assert_eq!(outcome.candidates, k as u64);
        total_candidates += outcome.candidates;
        for id in &expected {
            let position = fixture
                .engine()
                .position_view(*id, LIQ_MARKET)
                .expect("position");
            assert_eq!(position.size, 0, "liquidated account {id} is flat");
        }
        gone.extend(expected);
    }
    assert_eq!(fixture.stats().liquidation_candidates, total_candidates);
    assert_eq!(fixture.stats().liquidations, gone.len() as u64);
    // Everyone else still holds the position and is above maintenance.
    for account in accounts.iter().filter(|a| !gone.contains(&a.id)) {
        let engine = fixture.engine();
        assert_eq!(
            engine.position_view(account.id, LIQ_MARKET).unwrap().size,
            account.size
        );
        let margin = engine.margin_view(account.id, None).unwrap();
        assert!(
            margin.equity >= margin.maintenance,
            "account {}",
            account.id
        );
    }
    let (_, under) = fixture.full_scan();
    assert_eq!(under, 0);
}

fn tiny_options() -> PerpBenchOptions {
    PerpBenchOptions {
        seed: 3,
        risk: true,
        risk_orders: 300,
        risk_ops: 5_000,
        risk_accounts: 50,
        liquidation: true,
        accounts: vec![200, 500],
        quiet_moves: 50,
        multi: vec![7],
        scans: 2,
        ks: vec![5, 20, 1_000],
        reps: 3,
    }
}

#[test]
fn measured_fixture_reports_exact_counts() {
    let options = tiny_options();
    let mut fixture = LiquidationFixture::build(200, 3, HeapProbe::disabled());
    let result = measure_fixture(&mut fixture, &options);
    assert_eq!(result.accounts, 200);
    let quiet = &result.quiet;
    assert_eq!(quiet.moves, 50);
    assert_eq!(quiet.latency.count, 50);
    assert_eq!(
        (quiet.candidates, quiet.liquidations, quiet.expected),
        (0, 0, 0)
    );
    assert!(quiet.exact);
    // 200 accounts: at most 100 liquidated: k = 5 and 20 three times each, k = 1000 skipped.
    let ks: Vec<usize> = result.crossings.iter().map(|c| c.k).collect();
    assert_eq!(ks, vec![5, 20]);
    for crossing in &result.crossings {
        assert_eq!(crossing.moves, 3);
        let total = 3 * crossing.k as u64;
        assert_eq!(crossing.expected, total);
        assert_eq!(crossing.liquidations, total);
        assert_eq!(crossing.candidates, total);
        assert!(crossing.exact && crossing.rejected == 0);
    }
    assert_eq!(result.scan.scans, 2);
    assert_eq!(result.scan.under_maintenance, 0);
    assert_eq!(fixture.stats().liquidations, 75);
}

#[test]
fn spot_and_perp_replay_the_same_trades_and_the_report_renders() {
    let options = tiny_options();
    let report = run(&options, HeapProbe::disabled(), |_| {});
    let risk = report.risk.as_ref().expect("risk part ran");
    assert_eq!(
        risk.perp.positions_start, 50,
        "every account holds a position"
    );
    for side in [&risk.spot, &risk.perp] {
        assert_eq!(side.ops, 5_000);
        assert_eq!(side.latency.count, 5_000);
        assert_eq!(side.rejected, 0, "{}", side.label);
        let by_kind: u64 = OrderKind::ALL.iter().map(|k| side.kind(*k).count).sum();
        assert_eq!(by_kind, 5_000);
    }
    assert!(risk.spot.fills > 0);
    assert_eq!(risk.spot.fills, risk.perp.fills);
    for kind in OrderKind::ALL {
        assert!(risk.spot.kind(kind).count > 0, "{}", kind.name());
        assert_eq!(risk.spot.kind(kind).count, risk.perp.kind(kind).count);
    }
    assert_eq!(report.liquidation.len(), 3);
    // Accounts with positions in two markets are checked in full on every move.
    let multi = &report.liquidation[2];
    assert_eq!((multi.accounts, multi.multi), (500, 7));
    assert_eq!(multi.quiet.candidates, 7 * 50);
    assert_eq!(multi.quiet.liquidations, 0);
    assert!(multi.crossings.is_empty() && multi.scan.scans == 0);
    assert!(report.liquidation[..2]
        .iter()
        .all(|s| s.quiet.candidates == 0
            && s.crossings
                .iter()
                .all(|c| c.exact && c.candidates == c.liquidations)));
    assert!(!report.memory_measured);
    let text = render_text(&report);
    assert!(text.contains("ratio perp/spot"));
    assert!(text.contains("no key crossed"));
    let json = to_json(&report);
    assert_eq!(json["risk"]["perp"]["ops"], 5_000);
    assert_eq!(json["liquidation"][1]["accounts"], 500);
}
