//! The report of a run: a table on stdout, a JSON file and an HTML file with inline SVG plots
//! (percentile curves and CDFs), all from the same [`Results`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::curve::{cdf, percentile_curve};
use super::svg::{self, Axis, Scale, Series, PALETTE};
use super::Results;
use crate::latency::LatencyRecorder;
use crate::report::{duration_ns, latency_json, si, thousands, Align, Table};

/// The target of issue #4: order-to-ack p50 at most this many times the loopback p50.
pub const TARGET_RATIO: f64 = 2.0;

/// One latency distribution of the report.
pub struct Distribution<'a> {
    /// Stable key (JSON).
    pub key: &'static str,
    /// Human label.
    pub label: &'static str,
    /// What exactly is measured.
    pub meaning: &'static str,
    /// The samples.
    pub recorder: &'a LatencyRecorder,
    /// Drawn in the plots.
    pub plotted: bool,
}

/// Every distribution of a run, in report order (missing baselines left out).
pub fn distributions(results: &Results) -> Vec<Distribution<'_>> {
    let m = &results.metrics;
    let mut list = vec![
        Distribution {
            key: "order_to_ack_from_due",
            label: "order-to-ack (from due)",
            meaning: "due time on the open-loop schedule -> first reply read (OrderAccepted, OrderRejected, Replaced, Canceled or Reject); includes the sender's own lateness (coordinated-omission safe)",
            recorder: &m.order_to_ack.due,
            plotted: true,
        },
        Distribution {
            key: "order_to_ack_from_send",
            label: "order-to-ack (from send)",
            meaning: "clock read just before the request's write() -> first reply read",
            recorder: &m.order_to_ack.sent,
            plotted: true,
        },
        Distribution {
            key: "order_to_sequenced_from_due",
            label: "order-to-Sequenced (from due)",
            meaning: "due time -> Sequenced read (the input was executed; every reply came before)",
            recorder: &m.order_to_sequenced.due,
            plotted: false,
        },
        Distribution {
            key: "order_to_sequenced_from_send",
            label: "order-to-Sequenced (from send)",
            meaning: "write() -> Sequenced read",
            recorder: &m.order_to_sequenced.sent,
            plotted: false,
        },
        Distribution {
            key: "order_to_finalized_from_due",
            label: "order-to-Finalized (from due)",
            meaning: "due time -> Finalized read (the input's block is durable in the WAL)",
            recorder: &m.order_to_finalized.due,
            plotted: false,
        },
        Distribution {
            key: "order_to_finalized_from_send",
            label: "order-to-Finalized (from send)",
            meaning: "write() -> Finalized read",
            recorder: &m.order_to_finalized.sent,
            plotted: true,
        },
        Distribution {
            key: "order_to_market_data_from_due",
            label: "order-to-market-data (from due)",
            meaning: "maker quote (new or cancel-replace) due time -> the feed read that delivered the LevelUpdate caused by that input at the quote's side and price",
            recorder: &results.order_to_market_data.due,
            plotted: false,
        },
        Distribution {
            key: "order_to_market_data_from_send",
            label: "order-to-market-data (from send)",
            meaning: "maker quote write() -> the feed read that delivered its LevelUpdate",
            recorder: &results.order_to_market_data.sent,
            plotted: true,
        },
        Distribution {
            key: "tick_to_trade",
            label: "tick-to-trade",
            meaning: "feed read that changed the best bid or ask -> the first Fill of the IOC the reactive taker sent at once in reaction, read on its order connection",
            recorder: &m.tick_to_trade,
            plotted: true,
        },
        Distribution {
            key: "tick_to_send",
            label: "tick-to-send (harness)",
            meaning: "feed read -> the reactive IOC's write(): the harness's own reaction time, part of tick-to-trade",
            recorder: &results.tick_to_send,
            plotted: false,
        },
        Distribution {
            key: "send_lateness",
            label: "send lateness (harness)",
            meaning: "due time -> write() of scheduled requests: how late the senders were",
            recorder: &m.send_lateness,
            plotted: false,
        },
    ];
    if let Some(recorder) = results.loopback_open_loop.as_ref() {
        list.push(Distribution {
            key: "loopback_open_loop",
            label: "loopback open loop",
            meaning: "raw TCP round trip of a 48-byte message to an echo thread over 127.0.0.1 (TCP_NODELAY), open loop at the run's rate with a sender and a receiver thread like an order connection, same count, from write() to the echo read",
            recorder,
            plotted: true,
        });
    }
    if let Some(recorder) = results.loopback_back_to_back.as_ref() {
        list.push(Distribution {
            key: "loopback_back_to_back",
            label: "loopback ping-pong (back to back)",
            meaning: "the same round trip closed loop on one thread, each round trip right after the last",
            recorder,
            plotted: true,
        });
    }
    list
}

/// The ratios of order-to-ack p50 to the loopback p50.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ratios {
    /// Order-to-ack (from send) p50 / open-loop loopback p50.
    pub from_send_vs_open_loop: Option<f64>,
    /// Order-to-ack (from due) p50 / open-loop loopback p50.
    pub from_due_vs_open_loop: Option<f64>,
    /// Order-to-ack (from send) p50 / back-to-back loopback p50.
    pub from_send_vs_back_to_back: Option<f64>,
}

/// The ratios of a run (None where a side has no samples).
pub fn ratios(results: &Results) -> Ratios {
    let p50 = |r: &LatencyRecorder| {
        let s = r.summary();
        (s.count > 0).then_some(s.p50_ns as f64)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let m = &results.metrics;
    let open_loop = results.loopback_open_loop.as_ref().and_then(p50);
    let b2b = results.loopback_back_to_back.as_ref().and_then(p50);
    Ratios {
        from_send_vs_open_loop: ratio(p50(&m.order_to_ack.sent), open_loop),
        from_due_vs_open_loop: ratio(p50(&m.order_to_ack.due), open_loop),
        from_send_vs_back_to_back: ratio(p50(&m.order_to_ack.sent), b2b),
    }
}

fn cells(recorder: &LatencyRecorder) -> Vec<String> {
    let s = recorder.summary();
    if s.count == 0 {
        return vec!["0".into(), "-".into(), "-".into(), "-".into(), "-".into()];
    }
    vec![
        thousands(s.count),
        duration_ns(s.p50_ns as f64),
        duration_ns(s.p99_ns as f64),
        duration_ns(s.p999_ns as f64),
        duration_ns(s.max_ns as f64),
    ]
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or("-".into(), |r| format!("{r:.2}x"))
}

/// The verdict line on the target.
pub fn verdict(results: &Results) -> String {
    match ratios(results).from_send_vs_open_loop {
        Some(r) if r <= TARGET_RATIO => format!(
            "target (order-to-ack p50 within {TARGET_RATIO}x of the loopback p50): reached, {r:.2}x"
        ),
        Some(r) => format!(
            "target (order-to-ack p50 within {TARGET_RATIO}x of the loopback p50): not reached, {r:.2}x"
        ),
        None => "target: no baseline or no samples to compare".into(),
    }
}

/// The human-readable report.
pub fn text(results: &Results) -> String {
    let mut out = String::new();
    let config = results.config.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "nexus-perf: scenario {}, {} requests/s open loop, {:.1} s measured after {:.1} s warm-up; node {} ({})",
        config.scenario.as_str(),
        si(config.rate),
        results.window_s,
        config.warmup_s,
        results.node.kind,
        results.node.order_entry
    );
    let roles: Vec<String> = results
        .connections
        .iter()
        .map(|c| {
            if c.role == "react" {
                format!("react (<= {}/s)", si(c.rate))
            } else {
                format!("{} {} ({}/s)", c.role, c.index, si(c.rate))
            }
        })
        .collect();
    let _ = writeln!(out, "connections: {}", roles.join(", "));
    out.push('\n');
    let mut table = Table::new(&[
        ("latency", Align::Left),
        ("count", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("p99.9", Align::Right),
        ("max", Align::Right),
    ]);
    for d in distributions(results) {
        let mut row = vec![d.label.to_string()];
        row.extend(cells(d.recorder));
        table.row(row);
    }
    out.push_str(&table.render());
    out.push('\n');
    let mut kinds = Table::new(&[
        ("order-to-ack by request", Align::Left),
        ("count", Align::Right),
        ("p50 (send)", Align::Right),
        ("p99 (send)", Align::Right),
        ("p99.9 (send)", Align::Right),
        ("max (send)", Align::Right),
        ("p50 (due)", Align::Right),
        ("p99 (due)", Align::Right),
    ]);
    for (kind, pair) in &results.metrics.by_kind {
        let mut row = vec![kind.as_str().to_string()];
        row.extend(cells(&pair.sent));
        let due = pair.due.summary();
        row.push(duration_ns(due.p50_ns as f64));
        row.push(duration_ns(due.p99_ns as f64));
        kinds.row(row);
    }
    out.push_str(&kinds.render());
    out.push('\n');
    let m = &results.metrics;
    let w = results.window_s;
    let _ = writeln!(
        out,
        "throughput over the {w:.1} s window: sent {}/s, acked {}/s, fills (taker side = trades) {}/s, maker fills {}/s; feed: {} trades/s, {} level updates/s, {} top-of-book changes/s",
        si(per_second(m.requests, w)),
        si(per_second(m.acked, w)),
        si(per_second(m.taker_fills, w)),
        si(per_second(m.maker_fills, w)),
        si(per_second(results.feed_trades, w)),
        si(per_second(results.feed_level_updates, w)),
        si(per_second(results.top_changes, w)),
    );
    let _ = writeln!(
        out,
        "requests in the window: {} sent, {} unanswered, {} not sequenced, {} not finalized (drain {:.2} s)",
        thousands(m.requests),
        thousands(m.unanswered),
        thousands(m.unsequenced),
        thousands(m.unfinalized),
        results.drain_s
    );
    let rejects: Vec<String> = m
        .rejects
        .iter()
        .map(|(reason, count)| format!("{reason} {}", thousands(*count)))
        .collect();
    let _ = writeln!(
        out,
        "rejects (whole run): {}",
        if rejects.is_empty() {
            "none".to_string()
        } else {
            rejects.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "reactive taker: {} IOCs in the window, {} filled; quotes seen on the feed: {} of {}",
        thousands(m.react_sent),
        thousands(m.react_filled),
        thousands(results.quotes_on_feed),
        thousands(results.quotes_on_feed + results.quotes_not_on_feed)
    );
    let r = ratios(results);
    let _ = writeln!(
        out,
        "order-to-ack p50 / loopback p50: {} from send, {} from due (vs open-loop loopback); {} from send vs back-to-back loopback",
        ratio_text(r.from_send_vs_open_loop),
        ratio_text(r.from_due_vs_open_loop),
        ratio_text(r.from_send_vs_back_to_back)
    );
    let _ = writeln!(out, "{}", verdict(results));
    for error in &results.errors {
        let _ = writeln!(out, "ERROR: {error}");
    }
    out
}

fn curve_json(recorder: &LatencyRecorder) -> Value {
    Value::Array(
        percentile_curve(recorder.histogram())
            .iter()
            .map(|p| json!([p.quantile, p.value_ns]))
            .collect(),
    )
}

/// The JSON report.
pub fn json(results: &Results) -> Value {
    let config = results.config.clone().unwrap_or_default();
    let mut latency = serde_json::Map::new();
    for d in distributions(results) {
        let mut entry = latency_json(&d.recorder.summary());
        entry["label"] = json!(d.label);
        entry["meaning"] = json!(d.meaning);
        entry["curve"] = curve_json(d.recorder);
        latency.insert(d.key.to_string(), entry);
    }
    let mut by_kind = serde_json::Map::new();
    for (kind, pair) in &results.metrics.by_kind {
        by_kind.insert(
            kind.as_str().to_string(),
            json!({
                "from_send": latency_json(&pair.sent.summary()),
                "from_due": latency_json(&pair.due.summary()),
            }),
        );
    }
    let m = &results.metrics;
    let w = results.window_s;
    let r = ratios(results);
    json!({
        "tool": "nexus-perf",
        "version": env!("CARGO_PKG_VERSION"),
        "started_unix_s": results.started_unix_s,
        "wall_s": results.wall_s,
        "machine": {
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
        },
        "config": {
            "scenario": config.scenario.as_str(),
            "rate_per_s": config.rate,
            "duration_s": config.duration_s,
            "warmup_s": config.warmup_s,
            "makers": config.makers,
            "takers": config.takers,
            "storms": config.storms,
            "levels": config.levels,
            "maker_max_qty": config.maker_max_qty,
            "sweep_ticks": config.sweep_ticks,
            "taker_max_qty": config.taker_max_qty,
            "storm_gap": config.storm_gap,
            "react_rate_per_s": config.react_rate,
            "react_qty": config.react_qty,
            "market": config.market,
            "mid": config.mid,
            "seed": config.seed,
            "spin_ns": config.spin_ns,
            "drain_s": config.drain_s,
            "baseline_count": config.baseline_count,
        },
        "node": {
            "kind": results.node.kind,
            "nexus": results.node.nexus,
            "config": results.node.config,
            "order_entry": results.node.order_entry,
            "market_data": results.node.market_data,
            "admin": results.node.admin,
            "ready": results.node.ready,
            "stopped": results.node.stopped,
        },
        "connections": results.connections.iter().map(|c| json!({
            "role": c.role, "index": c.index, "rate_per_s": c.rate, "account": c.account,
        })).collect::<Vec<_>>(),
        "window_s": w,
        "latency": latency,
        "order_to_ack_by_kind": by_kind,
        "throughput_per_s": {
            "sent": per_second(m.requests, w),
            "acked": per_second(m.acked, w),
            "taker_fills": per_second(m.taker_fills, w),
            "maker_fills": per_second(m.maker_fills, w),
            "feed_trades": per_second(results.feed_trades, w),
            "feed_level_updates": per_second(results.feed_level_updates, w),
            "top_changes": per_second(results.top_changes, w),
        },
        "counts": {
            "requests": m.requests,
            "acked": m.acked,
            "unanswered": m.unanswered,
            "unsequenced": m.unsequenced,
            "unfinalized": m.unfinalized,
            "taker_fills": m.taker_fills,
            "maker_fills": m.maker_fills,
            "react_sent": m.react_sent,
            "react_filled": m.react_filled,
            "quotes_on_feed": results.quotes_on_feed,
            "quotes_not_on_feed": results.quotes_not_on_feed,
            "drain_s": results.drain_s,
        },
        "rejects": m.rejects,
        "ratios": {
            "order_to_ack_p50_from_send_vs_loopback_open_loop_p50": r.from_send_vs_open_loop,
            "order_to_ack_p50_from_due_vs_loopback_open_loop_p50": r.from_due_vs_open_loop,
            "order_to_ack_p50_from_send_vs_loopback_back_to_back_p50": r.from_send_vs_back_to_back,
        },
        "target": {
            "description": format!("order-to-ack p50 (from send) within {TARGET_RATIO}x of the open-loop loopback p50"),
            "max_ratio": TARGET_RATIO,
            "reached": r.from_send_vs_open_loop.map(|x| x <= TARGET_RATIO),
        },
        "errors": results.errors,
    })
}

/// A round duration for an axis: `1e4` -> `10us`, `2e6` -> `2ms`.
pub fn axis_duration(nanos: f64) -> String {
    let (value, unit) = if nanos >= 1e9 {
        (nanos / 1e9, "s")
    } else if nanos >= 1e6 {
        (nanos / 1e6, "ms")
    } else if nanos >= 1e3 {
        (nanos / 1e3, "us")
    } else {
        (nanos, "ns")
    };
    format!("{}{unit}", (value * 100.0).round() / 100.0)
}

/// The percentile-curve plot and the CDF plot of the plotted distributions.
pub fn plots(results: &Results) -> (String, String) {
    let plotted: Vec<Distribution<'_>> = distributions(results)
        .into_iter()
        .filter(|d| d.plotted && d.recorder.summary().count > 0)
        .collect();
    let mut min_ns = f64::MAX;
    let mut max_ns: f64 = 1.0;
    let mut max_nines: f64 = 1.0;
    let mut curves = Vec::new();
    let mut cdfs = Vec::new();
    for (i, d) in plotted.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()].to_string();
        let dashed = d.key.starts_with("loopback");
        let curve = percentile_curve(d.recorder.histogram());
        for p in &curve {
            min_ns = min_ns.min(p.value_ns.max(1) as f64);
            max_ns = max_ns.max(p.value_ns as f64);
            max_nines = max_nines.max(p.nines);
        }
        curves.push(Series {
            label: d.label.to_string(),
            color: color.clone(),
            points: curve
                .iter()
                .map(|p| (p.nines, p.value_ns.max(1) as f64))
                .collect(),
            dashed,
        });
        cdfs.push(Series {
            label: d.label.to_string(),
            color,
            points: cdf(d.recorder.histogram(), 400)
                .into_iter()
                .map(|(v, f)| (v.max(1) as f64, f))
                .collect(),
            dashed,
        });
    }
    if min_ns == f64::MAX {
        min_ns = 1.0;
    }
    let low = 10f64.powf(min_ns.log10().floor());
    let high = 10f64.powf(max_ns.log10().ceil()).max(low * 10.0);
    let label = axis_duration;
    let latency_axis = |name: &str| Axis {
        label: name.to_string(),
        min: low,
        max: high,
        scale: Scale::Log10,
        ticks: svg::log_ticks(low, high, label),
    };
    let top = max_nines.ceil();
    let percentile_axis = Axis {
        label: "percentile".into(),
        min: 0.0,
        max: top,
        scale: Scale::Linear,
        ticks: (0..=top as u32)
            .map(|n| {
                let text = match n {
                    0 => "0%".to_string(),
                    n => {
                        let digits = n as usize - 1;
                        format!(
                            "{:.*}%",
                            digits.saturating_sub(1),
                            100.0 - 100.0 / 10f64.powi(n as i32)
                        )
                    }
                };
                (n as f64, text)
            })
            .collect(),
    };
    let fraction_axis = Axis {
        label: "fraction of samples <= latency".into(),
        min: 0.0,
        max: 1.0,
        scale: Scale::Linear,
        ticks: [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]
            .iter()
            .map(|&f| (f, format!("{f}")))
            .collect(),
    };
    (
        svg::plot(
            "Latency by percentile (log scale; x: 90% = 1, 99% = 2, 99.9% = 3 nines)",
            &percentile_axis,
            &latency_axis("latency"),
            &curves,
        ),
        svg::plot(
            "Latency CDF",
            &latency_axis("latency (log scale)"),
            &fraction_axis,
            &cdfs,
        ),
    )
}

/// The HTML report: summary, tables, the two plots. Self-contained (no scripts, no links).
pub fn html(results: &Results) -> String {
    let e = svg::escape;
    let mut out = String::new();
    let config = results.config.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>nexus-perf {}</title>",
        e(config.scenario.as_str())
    );
    out.push_str(
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}\
         .meaning{color:#555;font-size:90%;text-align:left}.ok{color:#2a7a2a}.bad{color:#b22}</style></head><body>\n",
    );
    let _ = writeln!(
        out,
        "<h1>nexus-perf: {}</h1>\n<p>{} requests/s open loop, {:.1} s measured after {:.1} s warm-up; node {} at {}; {} connections; started at Unix time {}.</p>",
        e(config.scenario.as_str()),
        e(&si(config.rate)),
        results.window_s,
        config.warmup_s,
        e(&results.node.kind),
        e(&results.node.order_entry),
        results.connections.len(),
        results.started_unix_s
    );
    let verdict = verdict(results);
    let class = if verdict.contains(": reached") {
        "ok"
    } else {
        "bad"
    };
    let _ = writeln!(out, "<p class=\"{class}\"><b>{}</b></p>", e(&verdict));
    out.push_str("<table><tr><th>latency</th><th>count</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th><th>meaning</th></tr>\n");
    for d in distributions(results) {
        let _ = write!(out, "<tr><td>{}</td>", e(d.label));
        for cell in cells(d.recorder) {
            let _ = write!(out, "<td>{}</td>", e(&cell));
        }
        let _ = writeln!(out, "<td class=\"meaning\">{}</td></tr>", e(d.meaning));
    }
    out.push_str("</table>\n");
    let (curves, cdfs) = plots(results);
    out.push_str(&curves);
    out.push_str(&cdfs);
    out.push_str("<h2>Order-to-ack by request kind</h2>\n<table><tr><th>kind</th><th>count</th><th>p50 (send)</th><th>p99 (send)</th><th>p99.9 (send)</th><th>max (send)</th></tr>\n");
    for (kind, pair) in &results.metrics.by_kind {
        let _ = write!(out, "<tr><td>{}</td>", e(kind.as_str()));
        for cell in cells(&pair.sent) {
            let _ = write!(out, "<td>{}</td>", e(&cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n<h2>Counts and throughput</h2>\n<pre>");
    let text = text(results);
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("throughput")
                || l.starts_with("requests")
                || l.starts_with("rejects")
                || l.starts_with("reactive")
                || l.starts_with("order-to-ack p50")
                || l.starts_with("connections")
                || l.starts_with("ERROR")
        })
        .collect();
    out.push_str(&e(&tail.join("\n")));
    out.push_str("</pre>\n</body></html>\n");
    out
}

/// Writes `<dir>/nexus-perf-<scenario>-<unix time>.json` and `.html`; returns both paths.
pub fn write_files(results: &Results, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let scenario = results
        .config
        .as_ref()
        .map_or("run", |c| c.scenario.as_str());
    let stem = format!("nexus-perf-{scenario}-{}", results.started_unix_s);
    let json_path = dir.join(format!("{stem}.json"));
    let html_path = dir.join(format!("{stem}.html"));
    let mut text = serde_json::to_string_pretty(&json(results)).expect("JSON value");
    text.push('\n');
    std::fs::write(&json_path, text)?;
    std::fs::write(&html_path, html(results))?;
    Ok((json_path, html_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway_bench::flows::RequestKind;
    use crate::gateway_bench::{Config, NodeInfo};

    fn sample_results() -> Results {
        let mut results = Results {
            config: Some(Config::default()),
            node: NodeInfo {
                kind: "spawned".into(),
                order_entry: "127.0.0.1:1".into(),
                ..NodeInfo::default()
            },
            window_s: 2.0,
            started_unix_s: 1_700_000_000,
            ..Results::default()
        };
        for v in 1..=1_000u64 {
            results.metrics.order_to_ack.sent.record_ns(40_000 + v);
            results.metrics.order_to_ack.due.record_ns(50_000 + v);
            results
                .metrics
                .order_to_finalized
                .sent
                .record_ns(1_000_000 + v);
        }
        results
            .metrics
            .by_kind
            .entry(RequestKind::TakerIoc)
            .or_default()
            .sent
            .record_ns(42_000);
        results.metrics.requests = 1_000;
        results.metrics.acked = 1_000;
        results
            .metrics
            .rejects
            .insert("engine:unknown_order".into(), 3);
        let mut paced = LatencyRecorder::new();
        for v in 1..=1_000u64 {
            paced.record_ns(20_000 + v);
        }
        results.loopback_open_loop = Some(paced);
        results
    }

    #[test]
    fn axis_labels_are_round() {
        assert_eq!(axis_duration(10_000.0), "10us");
        assert_eq!(axis_duration(2_000_000.0), "2ms");
        assert_eq!(axis_duration(500.0), "500ns");
        assert_eq!(axis_duration(1e9), "1s");
    }

    #[test]
    fn ratios_and_the_verdict() {
        let results = sample_results();
        let r = ratios(&results);
        let expected = 40_500.0 / 20_500.0;
        assert!((r.from_send_vs_open_loop.unwrap() - expected).abs() < 0.01);
        assert!(r.from_send_vs_back_to_back.is_none());
        assert!(verdict(&results).contains(": reached"));
        let none = Results::default();
        assert_eq!(ratios(&none), Ratios::default());
    }

    #[test]
    fn the_json_report_has_every_figure() {
        let results = sample_results();
        let value = json(&results);
        let text = serde_json::to_string(&value).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        let o2a = &back["latency"]["order_to_ack_from_send"];
        assert_eq!(o2a["count"], 1_000);
        // HDR buckets keep 3 significant digits: 40,500 reads back within 0.1%.
        let p50 = o2a["p50_ns"].as_u64().unwrap();
        assert!((40_480..=40_540).contains(&p50), "{p50}");
        let max = o2a["curve"].as_array().unwrap().last().unwrap()[1]
            .as_u64()
            .unwrap();
        assert!((41_000..=41_040).contains(&max), "{max}");
        assert_eq!(back["rejects"]["engine:unknown_order"], 3);
        assert_eq!(back["config"]["scenario"], "mixed");
        assert_eq!(back["target"]["reached"], true);
        assert_eq!(
            back["order_to_ack_by_kind"]["taker_ioc"]["from_send"]["count"],
            1
        );
        assert!(back["latency"]["loopback_back_to_back"].is_null());
        assert_eq!(back["throughput_per_s"]["acked"], 500.0);
    }

    #[test]
    fn the_html_report_is_self_contained() {
        let results = sample_results();
        let page = html(&results);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.trim_end().ends_with("</html>"));
        assert_eq!(page.matches("<svg").count(), 2);
        assert_eq!(page.matches("</svg>").count(), 2);
        assert!(!page.contains("<script"));
        assert!(
            !page.contains("http://") || page.matches("http://").count() == 2,
            "only the SVG namespaces"
        );
        assert!(page.contains("order-to-ack (from send)"));
        // Four plotted distributions with samples (order-to-ack from due and from send,
        // order-to-Finalized, open-loop loopback): one line each in each plot.
        assert_eq!(page.matches("<polyline").count(), 8);
        let text = text(&results);
        assert!(text.contains("order-to-ack (from send)"));
        assert!(text.contains("40.5us"));
        assert!(text.contains("engine:unknown_order 3"));
    }

    #[test]
    fn files_are_written_under_the_report_dir() {
        let dir = tempfile::tempdir().unwrap();
        let (json_path, html_path) = write_files(&sample_results(), &dir.path().join("r")).unwrap();
        assert!(json_path.ends_with("nexus-perf-mixed-1700000000.json"));
        let value: Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
        assert_eq!(value["tool"], "nexus-perf");
        assert!(std::fs::read_to_string(html_path).unwrap().contains("<svg"));
    }
}
