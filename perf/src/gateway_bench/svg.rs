//! A hand-made SVG line plot (no JavaScript, no external files): axes with linear or log10
//! scales, tick labels, one polyline per series and a legend.

use std::fmt::Write as _;

/// How an axis maps values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Evenly spaced values.
    Linear,
    /// Evenly spaced powers of ten (values must be > 0).
    Log10,
}

/// One axis: its range, scale, label and tick marks (value, text).
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// Axis title.
    pub label: String,
    /// Lowest value shown.
    pub min: f64,
    /// Highest value shown.
    pub max: f64,
    /// Scale.
    pub scale: Scale,
    /// Tick marks with their labels.
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    /// Where `value` falls on the axis, 0 (min) to 1 (max), clamped.
    pub fn fraction(&self, value: f64) -> f64 {
        let (value, min, max) = match self.scale {
            Scale::Linear => (value, self.min, self.max),
            Scale::Log10 => (
                value.max(f64::MIN_POSITIVE).log10(),
                self.min.max(f64::MIN_POSITIVE).log10(),
                self.max.max(f64::MIN_POSITIVE).log10(),
            ),
        };
        if max <= min {
            return 0.0;
        }
        ((value - min) / (max - min)).clamp(0.0, 1.0)
    }
}

/// One line of a plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// CSS color.
    pub color: String,
    /// Points in data coordinates, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Dashed line.
    pub dashed: bool,
}

/// Colors given to series in order.
pub const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Escapes text for XML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 290.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// The plot as one `<svg>` element.
pub fn plot(title: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |v: f64| LEFT + x.fraction(v) * plot_w;
    let py = |v: f64| TOP + (1.0 - y.fraction(v)) * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Grid and ticks.
    for (value, text) in &x.ticks {
        let gx = px(*value);
        let _ = writeln!(
            svg,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#e0e0e0"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 18.0,
            escape(text)
        );
    }
    for (value, text) in &y.ticks {
        let gy = py(*value);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#e0e0e0"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            gy + 4.0,
            escape(text)
        );
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0,
        escape(&x.label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(&y.label)
    );
    // Series and legend.
    for (i, s) in series.iter().enumerate() {
        if !s.points.is_empty() {
            let points: Vec<String> = s
                .points
                .iter()
                .map(|&(vx, vy)| format!("{:.1},{:.1}", px(vx), py(vy)))
                .collect();
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"#,
                escape(&s.color),
                points.join(" "),
                escape(&s.label)
            );
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + plot_w + 15.0;
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="3"{dash}/>"#,
            lx + 24.0,
            escape(&s.color)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Ticks at powers of ten (and 2x, 5x when the range is narrow) between `min` and `max`,
/// labeled by `label`.
pub fn log_ticks(min: f64, max: f64, label: impl Fn(f64) -> String) -> Vec<(f64, String)> {
    let low = min.max(1e-12).log10().floor() as i32;
    let high = max.max(1e-12).log10().ceil() as i32;
    let steps: &[f64] = if high - low <= 2 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let mut ticks = Vec::new();
    for exponent in low..=high {
        for step in steps {
            let value = step * 10f64.powi(exponent);
            if value >= min * 0.999 && value <= max * 1.001 {
                ticks.push((value, label(value)));
            }
        }
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(scale: Scale, min: f64, max: f64) -> Axis {
        Axis {
            label: "x".into(),
            min,
            max,
            scale,
            ticks: vec![(min, "lo".into()), (max, "hi".into())],
        }
    }

    #[test]
    fn axes_map_values_to_fractions() {
        let linear = axis(Scale::Linear, 0.0, 4.0);
        assert_eq!(linear.fraction(1.0), 0.25);
        assert_eq!(linear.fraction(9.0), 1.0);
        let log = axis(Scale::Log10, 1e3, 1e6);
        assert!((log.fraction(1e4) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(log.fraction(1.0), 0.0);
    }

    #[test]
    fn the_plot_is_one_svg_element_with_a_line_per_series() {
        let series = vec![
            Series {
                label: "a <&> b".into(),
                color: PALETTE[0].into(),
                points: vec![(0.0, 1e3), (1.0, 2e3), (2.0, 1e4)],
                dashed: false,
            },
            Series {
                label: "empty".into(),
                color: PALETTE[1].into(),
                points: vec![],
                dashed: true,
            },
        ];
        let svg = plot(
            "t & t",
            &axis(Scale::Linear, 0.0, 2.0),
            &axis(Scale::Log10, 1e3, 1e4),
            &series,
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(
            svg.matches("<polyline").count(),
            1,
            "empty series draw no line"
        );
        assert!(svg.contains("a &lt;&amp;&gt; b"));
        assert!(svg.contains("t &amp; t"));
        assert!(!svg.contains("a <&> b"));
        // First point at the bottom-left corner of the plot area, last at the top-right.
        assert!(svg.contains(&format!("points=\"{LEFT:.1},{:.1} ", HEIGHT - BOTTOM)));
        assert!(svg.contains(&format!(" {:.1},{TOP:.1}\"", WIDTH - RIGHT)));
    }

    #[test]
    fn log_ticks_cover_the_range() {
        let ticks = log_ticks(20_000.0, 3_000_000.0, |v| format!("{v}"));
        let values: Vec<f64> = ticks.iter().map(|t| t.0).collect();
        assert_eq!(values, vec![100_000.0, 1_000_000.0]);
        let narrow = log_ticks(15.0, 90.0, |v| format!("{v}"));
        let values: Vec<f64> = narrow.iter().map(|t| t.0).collect();
        assert_eq!(values, vec![20.0, 50.0]);
    }
}
