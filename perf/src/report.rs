//! Output helpers shared by the benchmarks: number formatting, a plain-text table and JSON.

use std::fmt::Write as _;

use crate::latency::LatencySummary;

/// A count with thousands separators: `1234567` -> `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let head = match digits.len() % 3 {
        0 => 3,
        n => n,
    }
    .min(digits.len());
    let mut out = digits[..head].to_string();
    for group in digits.as_bytes()[head..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).expect("ascii digits"));
    }
    out
}

/// A rate with an SI suffix: `12_345_678.0` -> `12.35M`.
pub fn si(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "K")
    } else {
        (value, "")
    };
    format!("{scaled:.2}{suffix}")
}

/// A duration in nanoseconds, switching to us/ms when large: `850` -> `850ns`,
/// `12_300` -> `12.3us`.
pub fn duration_ns(nanos: f64) -> String {
    if nanos >= 1e6 {
        format!("{:.2}ms", nanos / 1e6)
    } else if nanos >= 1e4 {
        format!("{:.1}us", nanos / 1e3)
    } else if nanos >= 100.0 {
        format!("{nanos:.0}ns")
    } else {
        format!("{nanos:.1}ns")
    }
}

/// A 32-byte hash as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Column alignment in a [`Table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Pad on the right.
    Left,
    /// Pad on the left (numbers).
    Right,
}

/// A plain-text table: a header row, then rows, columns padded to their widest cell.
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            columns: columns
                .iter()
                .map(|&(name, align)| (name.to_string(), align))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, columns separated by two spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|(name, _)| name.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, (width, (_, align))) in widths.iter().zip(&self.columns).enumerate() {
                let cell = cells.next().unwrap_or("");
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = width.saturating_sub(cell.chars().count());
                match align {
                    Align::Left => {
                        text.push_str(cell);
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        text.extend(std::iter::repeat_n(' ', pad));
                        text.push_str(cell);
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(
            &mut out,
            &mut self.columns.iter().map(|(name, _)| name.as_str()),
        );
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        line(&mut out, &mut rule.iter().map(String::as_str));
        for row in &self.rows {
            line(&mut out, &mut row.iter().map(String::as_str));
        }
        out
    }
}

/// A latency summary as a JSON object (all figures in nanoseconds).
pub fn latency_json(summary: &LatencySummary) -> serde_json::Value {
    serde_json::json!({
        "count": summary.count,
        "mean_ns": summary.mean_ns,
        "p50_ns": summary.p50_ns,
        "p90_ns": summary.p90_ns,
        "p99_ns": summary.p99_ns,
        "p99_9_ns": summary.p999_ns,
        "p99_99_ns": summary.p9999_ns,
        "max_ns": summary.max_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(si(12_345_678.0), "12.35M");
        assert_eq!(si(950.0), "950.00");
        assert_eq!(duration_ns(42.25), "42.2ns");
        assert_eq!(duration_ns(850.0), "850ns");
        assert_eq!(duration_ns(12_300.0), "12.3us");
        assert_eq!(hex(&[0, 171, 255]), "00abff");
    }

    #[test]
    fn table_pads_columns() {
        let mut table = Table::new(&[("name", Align::Left), ("n", Align::Right)]);
        table.row(vec!["a".into(), "100".into()]);
        table.row(vec!["long".into(), "7".into()]);
        assert_eq!(
            table.render(),
            "name    n\n----  ---\na     100\nlong    7\n"
        );
    }
}
