//! A hand-written SVG line chart of daily metric averages: a title, a legend, then one panel per
//! metric (metrics have different scales: accuracy near 1, latency in seconds, cost in cents),
//! each with its own value axis and grid, all sharing the date axis at the bottom. One coloured
//! line with point markers per metric.

use std::fmt::Write;

use chrono::NaiveDate;

use crate::tracking::trend::Trends;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 80.0;
const PANEL_H: f64 = 150.0;
const PANEL_GAP: f64 = 44.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// Most metrics drawn (the rest are named in a note).
pub const MAX_PANELS: usize = 8;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// "Nice" ticks covering `[lo, hi]`: (first, step, count).
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (f64, f64, usize) {
    // A flat series (up to float noise, e.g. 0.002 and 0.0020000000000000005) gets a padded axis.
    let (lo, hi) = if hi - lo > 1e-9 * lo.abs().max(hi.abs()) {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
        (lo - pad, hi + pad)
    };
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() * step;
    let last = (hi / step).ceil() * step;
    let count = ((last - first) / step).round() as usize + 1;
    (first, step, count)
}

fn decimals(step: f64) -> usize {
    (0..8)
        .find(|d| {
            let x = step * 10f64.powi(*d as i32);
            (x - x.round()).abs() < 1e-6
        })
        .unwrap_or(8)
}

/// Renders the chart. `subtitle` says what was charted (window, records).
pub fn render(title: &str, subtitle: &str, trends: &Trends) -> String {
    let names: Vec<&String> = trends.metrics.keys().take(MAX_PANELS).collect();
    let panels = names.len().max(1);
    let height = TOP + panels as f64 * (PANEL_H + PANEL_GAP) + BOTTOM;
    let plot_w = WIDTH - LEFT - RIGHT;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = write!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = write!(
        s,
        r##"<text class="title" x="{}" y="28" text-anchor="middle" font-size="18" font-weight="bold" fill="#222">{}</text>"##,
        WIDTH / 2.0,
        esc(title)
    );
    let _ = write!(
        s,
        r##"<text x="{}" y="46" text-anchor="middle" fill="#555">{}</text>"##,
        WIDTH / 2.0,
        esc(subtitle)
    );
    // Legend.
    let _ = write!(s, r#"<g class="legend">"#);
    let mut x = LEFT;
    for (i, name) in names.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let t = &trends.metrics[*name];
        let label = format!(
            "{name} ({}{})",
            serde_json::to_value(t.trend)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            if t.lower_is_better {
                ", lower is better"
            } else {
                ""
            }
        );
        let _ = write!(
            s,
            r##"<g class="legend-item" data-metric="{}"><line x1="{x}" y1="62" x2="{}" y2="62" stroke="{c}" stroke-width="3"/><circle cx="{}" cy="62" r="3" fill="{c}"/><text x="{}" y="66" fill="#222">{}</text></g>"##,
            esc(name),
            x + 24.0,
            x + 12.0,
            x + 30.0,
            esc(&label)
        );
        x += 40.0 + 7.0 * label.len() as f64;
    }
    let _ = write!(s, "</g>");
    if trends.metrics.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#888" font-size="14">No metric records in this window</text></svg>"##,
            WIDTH / 2.0,
            TOP + PANEL_H / 2.0
        );
        return s;
    }
    // Shared date axis.
    let all_dates: Vec<NaiveDate> = names
        .iter()
        .flat_map(|n| trends.metrics[*n].points.iter().map(|p| p.date))
        .collect();
    let d0 = *all_dates.iter().min().expect("non-empty");
    let d1 = *all_dates.iter().max().expect("non-empty");
    let (d0, span) = if d1 > d0 {
        (d0, (d1 - d0).num_days() as f64)
    } else {
        (d0 - chrono::Duration::days(1), 2.0)
    };
    let xs = |d: NaiveDate| LEFT + (d - d0).num_days() as f64 / span * plot_w;
    let step_days = [1i64, 2, 7, 14, 30, 61, 91, 182, 365, 730]
        .into_iter()
        .find(|s| span / *s as f64 <= 8.0)
        .unwrap_or(1461);
    let date_ticks: Vec<NaiveDate> = (0..)
        .map(|i| d0 + chrono::Duration::days(i * step_days))
        .take_while(|d| (*d - d0).num_days() as f64 <= span)
        .collect();

    for (i, name) in names.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let t = &trends.metrics[*name];
        let top = TOP + i as f64 * (PANEL_H + PANEL_GAP);
        let bottom = top + PANEL_H;
        let lo = t
            .points
            .iter()
            .map(|p| p.value)
            .fold(f64::INFINITY, f64::min);
        let hi = t
            .points
            .iter()
            .map(|p| p.value)
            .fold(f64::NEG_INFINITY, f64::max);
        let (first, step, count) = nice_ticks(lo, hi, 4);
        let ymin = first;
        let ymax = first + step * (count - 1) as f64;
        let ys = |v: f64| bottom - (v - ymin) / (ymax - ymin) * PANEL_H;
        let dec = decimals(step);
        let _ = write!(s, r#"<g class="panel" data-metric="{}">"#, esc(name));
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="#fafafa" stroke="#ccc"/>"##
        );
        // Value axis with grid.
        let _ = write!(s, r#"<g class="y-axis">"#);
        for k in 0..count {
            let v = first + step * k as f64;
            let y = ys(v);
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e3e3e3"/><text class="y-tick" x="{}" y="{:.1}" text-anchor="end" fill="#444">{v:.dec$}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0
            );
        }
        let _ = write!(s, "</g>");
        let _ = write!(
            s,
            r##"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle" fill="{c}" font-weight="bold">{}</text>"##,
            top + PANEL_H / 2.0,
            top + PANEL_H / 2.0,
            esc(name)
        );
        // Date grid.
        for d in &date_ticks {
            let x = xs(*d);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#efefef"/>"##
            );
        }
        // The line and its points.
        let pts: Vec<String> = t
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", xs(p.date), ys(p.value)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="series" data-metric="{}" fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            esc(name),
            pts.join(" ")
        );
        for p in &t.points {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{} {}: {}</title></circle>"#,
                xs(p.date),
                ys(p.value),
                p.date,
                esc(name),
                p.value
            );
        }
        let _ = write!(s, "</g>");
    }
    // Date axis labels under the last panel.
    let axis_y = TOP + panels as f64 * (PANEL_H + PANEL_GAP) - PANEL_GAP;
    let _ = write!(s, r#"<g class="x-axis">"#);
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#444"/>"##,
        LEFT + plot_w
    );
    for d in &date_ticks {
        let x = xs(*d);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{axis_y}" x2="{x:.1}" y2="{}" stroke="#444"/><text class="x-tick" x="{x:.1}" y="{}" text-anchor="middle" fill="#444">{}</text>"##,
            axis_y + 5.0,
            axis_y + 18.0,
            d.format("%Y-%m-%d")
        );
    }
    let _ = write!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#444">date (UTC), daily averages</text>"##,
        LEFT + plot_w / 2.0,
        axis_y + 38.0
    );
    let _ = write!(s, "</g></svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover() {
        let (first, step, count) = nice_ticks(0.71, 0.93, 4);
        assert!(first <= 0.71 && first + step * (count - 1) as f64 >= 0.93);
        assert!(
            (step - 0.1).abs() < 1e-12 || (step - 0.05).abs() < 1e-12,
            "{step}"
        );
        let (first, step, count) = nice_ticks(5.0, 5.0, 4);
        assert!(first < 5.0 && first + step * (count - 1) as f64 > 5.0);
        // Float noise around a constant is a flat series, not a range of 1e-19.
        let (first, step, count) = nice_ticks(0.002, 0.002_000_000_000_000_000_5, 4);
        assert!(step > 1e-6, "{step}");
        assert!(first < 0.002 && first + step * (count - 1) as f64 > 0.002);
        assert!(count <= 6, "{count}");
        assert_eq!(decimals(0.05), 2);
        assert_eq!(decimals(0.1), 1);
        assert_eq!(decimals(0.25), 2);
        assert_eq!(decimals(2.0), 0);
    }
}
