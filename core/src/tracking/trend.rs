//! Trend math over metric records (pure; tested against hand-computed cases).
//!
//! * **Daily averages**: per UTC day and metric, the sum of the values divided by the number of
//!   records of that day that CARRY the metric (a record without it does not count).
//! * **Slope**: ordinary least squares over the daily averages, x = days since the first day of
//!   the series (gaps of days keep their real distance), in metric units per day; `null` for a
//!   series of one day.
//! * **Direction**: the fitted change over 30 days (`change_30d = slope × 30`) compared with the
//!   metric's scale (the mean absolute daily average): within ±[`STABLE_FRACTION`] of it the
//!   trend is `stable`; otherwise `improving` when it moves the good way — up for most metrics,
//!   down for lower-is-better metrics (names containing `latency`, `cost`, `error` or `loss`).
//! * **Current**: the latest daily average.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// A 30-day fitted change smaller than this fraction of the metric's scale is `stable`.
pub const STABLE_FRACTION: f64 = 0.02;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Improving,
    Declining,
    Stable,
}

/// One daily average of one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub date: NaiveDate,
    pub value: f64,
    /// Records of that day carrying the metric.
    pub count: u64,
}

/// The trend of one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricTrend {
    pub current: f64,
    pub trend: Direction,
    pub slope_per_day: Option<f64>,
    pub change_30d: Option<f64>,
    pub lower_is_better: bool,
    pub points: Vec<Point>,
}

/// Trends of every metric plus the daily table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trends {
    pub metrics: BTreeMap<String, MetricTrend>,
    /// `[{"date", "<metric>": avg, ...}]`, oldest first; a day lists only the metrics it has.
    pub daily: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Records read.
    pub records: u64,
}

/// Whether lower values of a metric are better.
pub fn lower_is_better(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["latency", "cost", "error", "loss"]
        .iter()
        .any(|w| n.contains(w))
}

/// Accumulates records into per-day, per-metric sums and counts.
#[derive(Debug, Default, Clone)]
pub struct DailyAccumulator {
    days: BTreeMap<NaiveDate, BTreeMap<String, (f64, u64)>>,
    records: u64,
}

impl DailyAccumulator {
    pub fn add(&mut self, timestamp: &DateTime<Utc>, metrics: &BTreeMap<String, f64>) {
        self.records += 1;
        let day = self.days.entry(timestamp.date_naive()).or_default();
        for (name, v) in metrics {
            let e = day.entry(name.clone()).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
    }

    /// Adds a whole day at once from its per-metric `(sum, count)` (a cached day).
    pub fn add_day(&mut self, date: NaiveDate, sums: &BTreeMap<String, (f64, u64)>, records: u64) {
        self.records += records;
        let day = self.days.entry(date).or_default();
        for (name, (sum, count)) in sums {
            let e = day.entry(name.clone()).or_insert((0.0, 0));
            e.0 += sum;
            e.1 += count;
        }
    }

    pub fn finish(self) -> Trends {
        let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        let mut daily = Vec::with_capacity(self.days.len());
        for (date, metrics) in &self.days {
            let mut row = serde_json::Map::new();
            row.insert("date".into(), date.to_string().into());
            for (name, (sum, count)) in metrics {
                let value = sum / *count as f64;
                row.insert(name.clone(), value.into());
                series.entry(name.clone()).or_default().push(Point {
                    date: *date,
                    value,
                    count: *count,
                });
            }
            daily.push(row);
        }
        let metrics = series
            .into_iter()
            .map(|(name, points)| {
                let t = trend_of(&name, points);
                (name, t)
            })
            .collect();
        Trends {
            metrics,
            daily,
            records: self.records,
        }
    }
}

/// Least-squares slope of (x, y) pairs; `None` for fewer than two distinct x.
pub fn least_squares_slope(xy: &[(f64, f64)]) -> Option<f64> {
    let n = xy.len() as f64;
    if xy.len() < 2 {
        return None;
    }
    let mx = xy.iter().map(|p| p.0).sum::<f64>() / n;
    let my = xy.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = xy.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx)
}

/// The trend of one metric's daily series (oldest first, non-empty).
pub fn trend_of(name: &str, points: Vec<Point>) -> MetricTrend {
    let first = points[0].date;
    let xy: Vec<(f64, f64)> = points
        .iter()
        .map(|p| ((p.date - first).num_days() as f64, p.value))
        .collect();
    let slope = least_squares_slope(&xy);
    let change_30d = slope.map(|s| s * 30.0);
    let scale = points.iter().map(|p| p.value.abs()).sum::<f64>() / points.len() as f64;
    let lower = lower_is_better(name);
    let trend = match change_30d {
        None => Direction::Stable,
        Some(c) if c.abs() <= STABLE_FRACTION * scale || c == 0.0 => Direction::Stable,
        Some(c) if (c > 0.0) != lower => Direction::Improving,
        Some(_) => Direction::Declining,
    };
    MetricTrend {
        current: points.last().map(|p| p.value).unwrap_or_default(),
        trend,
        slope_per_day: slope,
        change_30d,
        lower_is_better: lower,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn daily_average_divides_by_records_carrying_the_metric() {
        let mut acc = DailyAccumulator::default();
        acc.add(
            &at("2026-01-01T08:00:00Z"),
            &m(&[("accuracy", 0.8), ("latency", 2.0)]),
        );
        acc.add(&at("2026-01-01T12:00:00Z"), &m(&[("latency", 4.0)]));
        acc.add(&at("2026-01-01T23:59:59Z"), &m(&[("accuracy", 0.6)]));
        let t = acc.finish();
        // accuracy: (0.8 + 0.6) / 2 records carrying it = 0.7 (not / 3).
        close(t.metrics["accuracy"].current, 0.7);
        assert_eq!(t.metrics["accuracy"].points[0].count, 2);
        close(t.metrics["latency"].current, 3.0);
        assert_eq!(t.records, 3);
        assert_eq!(t.daily.len(), 1);
        assert_eq!(t.daily[0]["date"], "2026-01-01");
    }

    #[test]
    fn single_point_is_stable_without_slope() {
        let mut acc = DailyAccumulator::default();
        acc.add(&at("2026-01-05T00:00:00Z"), &m(&[("accuracy", 0.9)]));
        let t = &acc.finish().metrics["accuracy"];
        assert_eq!(t.slope_per_day, None);
        assert_eq!(t.change_30d, None);
        assert_eq!(t.trend, Direction::Stable);
        close(t.current, 0.9);
    }

    #[test]
    fn slope_respects_gaps_of_days() {
        // Days 0, 1 and 4 (a gap of 3 days) with averages 0.70, 0.72, 0.80.
        // mean x = 5/3, mean y = 2.22/3 = 0.74;
        // Sxx = (25 + 4 + 49)/9 = 78/9; Sxy = (-5/3)(-0.04) + (-2/3)(-0.02) + (7/3)(0.06) = 0.22
        // slope = 0.22 / (78/9) = 1.98/78 = 0.0253846…
        let mut acc = DailyAccumulator::default();
        acc.add(&at("2026-02-01T10:00:00Z"), &m(&[("accuracy", 0.60)]));
        acc.add(&at("2026-02-01T11:00:00Z"), &m(&[("accuracy", 0.80)]));
        acc.add(&at("2026-02-02T10:00:00Z"), &m(&[("accuracy", 0.72)]));
        acc.add(&at("2026-02-05T10:00:00Z"), &m(&[("accuracy", 0.80)]));
        let t = &acc.finish().metrics["accuracy"];
        close(t.slope_per_day.unwrap(), 1.98 / 78.0);
        close(t.change_30d.unwrap(), 30.0 * 1.98 / 78.0);
        assert_eq!(t.trend, Direction::Improving);
        close(t.current, 0.80);
        assert_eq!(t.points.len(), 3);
    }

    #[test]
    fn lower_is_better_for_latency_and_cost() {
        let mut acc = DailyAccumulator::default();
        // latency 2.0 → 1.0 over 10 days: slope -0.1/day; cost rising 0.001/day.
        acc.add(
            &at("2026-03-01T00:00:00Z"),
            &m(&[("latency", 2.0), ("cost", 0.010)]),
        );
        acc.add(
            &at("2026-03-11T00:00:00Z"),
            &m(&[("latency", 1.0), ("cost", 0.020)]),
        );
        let t = acc.finish();
        close(t.metrics["latency"].slope_per_day.unwrap(), -0.1);
        assert_eq!(t.metrics["latency"].trend, Direction::Improving);
        close(t.metrics["cost"].slope_per_day.unwrap(), 0.001);
        assert_eq!(t.metrics["cost"].trend, Direction::Declining);
    }

    #[test]
    fn small_relative_changes_are_stable() {
        // 0.900 → 0.901 over 10 days: change_30d = 0.003 < 2 % of ~0.9 → stable.
        let mut acc = DailyAccumulator::default();
        acc.add(&at("2026-03-01T00:00:00Z"), &m(&[("accuracy", 0.900)]));
        acc.add(&at("2026-03-11T00:00:00Z"), &m(&[("accuracy", 0.901)]));
        let t = &acc.finish().metrics["accuracy"];
        close(t.change_30d.unwrap(), 0.003);
        assert_eq!(t.trend, Direction::Stable);
        // A drop of 0.1 over 10 days is declining.
        let mut acc = DailyAccumulator::default();
        acc.add(&at("2026-03-01T00:00:00Z"), &m(&[("accuracy", 0.9)]));
        acc.add(&at("2026-03-11T00:00:00Z"), &m(&[("accuracy", 0.8)]));
        assert_eq!(acc.finish().metrics["accuracy"].trend, Direction::Declining);
    }
}
