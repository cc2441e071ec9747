//! The console's charts: inline SVG made here from numbers (no script, nothing fetched),
//! and the figures they show: tracking records counted per minute, and the metrics
//! registry read back from its own text exposition.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::tracking::record::MinuteCount;

/// One sample of the registry: its name, labels and value.
type Sample = (String, BTreeMap<String, String>, f64);

/// The registry's samples, read from the Prometheus text format it renders.
pub struct Registry(Vec<Sample>);

impl Registry {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)),
                    None => (series, BTreeMap::new()),
                };
                Some((name.to_owned(), labels, value))
            })
            .collect();
        Self(samples)
    }

    /// The samples of `name`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.0
            .iter()
            .filter(move |(n, _, _)| n == name)
            .map(|(_, labels, v)| (labels, *v))
    }

    /// The non-zero samples of counter `name`, each named by its `keys` labels.
    pub fn counts(&self, name: &str, keys: &[&str]) -> Vec<(String, f64)> {
        self.samples(name)
            .filter(|(_, v)| *v > 0.0)
            .map(|(labels, v)| {
                let label: Vec<&str> = keys
                    .iter()
                    .map(|k| labels.get(*k).map(String::as_str).unwrap_or("-"))
                    .collect();
                (label.join(" / "), v)
            })
            .collect()
    }

    /// Quantile `q` of histogram `name` among samples whose labels include `with`, from its
    /// cumulative buckets (interpolated within the bucket); `None` without observations.
    pub fn quantile(&self, name: &str, with: &[(&str, &str)], q: f64) -> Option<f64> {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .samples(&bucket)
            .filter(|(labels, _)| {
                with.iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .filter_map(|(labels, count)| {
                let le = labels.get("le")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (le, count) in buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let within = count - below;
                let share = if within > 0.0 {
                    (rank - below) / within
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * share);
            }
            (lower, below) = (le, count);
        }
        None
    }
}

/// `k="v",k2="v2"`: the labels (values with `\"` and `\\` unescaped).
fn labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// Session and scan time percentiles, one row per histogram series.
#[derive(Debug, Serialize)]
pub struct Times {
    what: String,
    p50: String,
    p90: String,
    p99: String,
}

pub fn times(registry: &Registry) -> Vec<Times> {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{:.1} ms", s * 1000.0));
    let mut rows = Vec::new();
    for door in ["milter", "proxy"] {
        let with = [("door", door)];
        let name = "postern_session_duration_seconds";
        if registry.quantile(name, &with, 0.5).is_some() {
            rows.push(Times {
                what: format!("session ({door})"),
                p50: ms(registry.quantile(name, &with, 0.5)),
                p90: ms(registry.quantile(name, &with, 0.9)),
                p99: ms(registry.quantile(name, &with, 0.99)),
            });
        }
    }
    let name = "postern_scan_duration_seconds";
    if registry.quantile(name, &[], 0.5).is_some() {
        rows.push(Times {
            what: "content scan".to_owned(),
            p50: ms(registry.quantile(name, &[], 0.5)),
            p90: ms(registry.quantile(name, &[], 0.9)),
            p99: ms(registry.quantile(name, &[], 0.99)),
        });
    }
    rows
}

/// Tracking records counted per minute and verdict, the last 60 minutes up to now.
#[derive(Clone, Debug)]
pub struct Minutes {
    /// Oldest first; each minute's count per verdict.
    per: Vec<BTreeMap<String, i64>>,
    /// Records counted.
    pub total: i64,
}

/// The store's counts (minutes since the epoch) placed in the hour up to `now_ms`.
pub fn by_minute(counts: &[MinuteCount], now_ms: i64) -> Minutes {
    let mut per = vec![BTreeMap::new(); 60];
    let last = now_ms / 60_000;
    let mut total = 0;
    for c in counts {
        let ago = last - c.minute;
        if (0..60).contains(&ago) {
            *per[59 - ago as usize].entry(c.verdict.clone()).or_insert(0) += c.count;
            total += c.count;
        }
    }
    Minutes { per, total }
}

/// What the charts color each verdict.
fn color(verdict: &str) -> &'static str {
    match verdict {
        "continue" => "#2e7d32",
        "reject" => "#c62828",
        "tempfail" => "#ef6c00",
        "discard" => "#6a1b9a",
        _ => "#455a64",
    }
}

/// `s` escaped for SVG text.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Stacked columns: one per minute, one color per verdict, with a legend and a scale.
pub fn verdict_columns(minutes: &Minutes) -> String {
    let (w, h, left, bottom) = (720.0, 220.0, 40.0, 20.0);
    let top = minutes
        .per
        .iter()
        .map(|m| m.values().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let column = (w - left) / 60.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="recipients by verdict per minute" viewBox="0 0 {w} {}" width="{w}" height="{}">"#,
        h + 30.0,
        h + 30.0
    );
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{}" x2="{w}" y2="{}" stroke="#888"/><text x="{}" y="12" text-anchor="end" font-size="11">{top}</text><text x="{}" y="{}" text-anchor="end" font-size="11">0</text><text x="{left}" y="{}" font-size="11">60 min ago</text><text x="{w}" y="{}" text-anchor="end" font-size="11">now</text>"##,
        h - bottom,
        h - bottom,
        left - 4.0,
        left - 4.0,
        h - bottom,
        h - 4.0,
        h - 4.0
    );
    let mut verdicts: Vec<&String> = minutes.per.iter().flat_map(|m| m.keys()).collect();
    verdicts.sort();
    verdicts.dedup();
    for (i, minute) in minutes.per.iter().enumerate() {
        let mut y = h - bottom;
        for (verdict, n) in minute {
            let height = (*n as f64) / top * (h - bottom - 10.0);
            y -= height;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{height:.1}" fill="{}"><title>{} {}</title></rect>"#,
                left + i as f64 * column + 1.0,
                column - 2.0,
                color(verdict),
                n,
                escaped(verdict)
            );
        }
    }
    for (i, verdict) in verdicts.iter().enumerate() {
        let x = left + i as f64 * 110.0;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            h + 10.0,
            color(verdict),
            x + 14.0,
            h + 19.0,
            escaped(verdict)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars, one per item, longest first, with its figure and `unit`.
pub fn bars(items: &[(String, f64)], unit: &str) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    let mut items = items.to_vec();
    items.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let top = items[0].1.max(1.0);
    let (w, label, row) = (720.0, 260.0, 22.0);
    let h = row * items.len() as f64 + 4.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{unit}" viewBox="0 0 {w} {h}" width="{w}" height="{h}">"#
    );
    for (i, (name, v)) in items.iter().enumerate() {
        let y = i as f64 * row + 2.0;
        let width = v / top * (w - label - 90.0);
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="end" font-size="12">{}</text><rect x="{label}" y="{y}" width="{width:.1}" height="{}" fill="#1565c0"/><text x="{:.1}" y="{}" font-size="12">{} {unit}</text>"##,
            label - 6.0,
            y + 14.0,
            escaped(name),
            row - 6.0,
            label + width + 6.0,
            y + 14.0,
            v
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x\n\
postern_scan_duration_seconds_bucket{le=\"0.001\"} 50\n\
postern_scan_duration_seconds_bucket{le=\"0.01\"} 90\n\
postern_scan_duration_seconds_bucket{le=\"+Inf\"} 100\n\
postern_check_results_total{check=\"rbl\",result=\"listed\"} 3\n\
postern_check_results_total{check=\"spf\",result=\"pass\"} 0\n\
postern_rbl_zone_usable{zone=\"a.\\\"b\"} 1\n";

    #[test]
    fn the_registry_reads_back() {
        let r = Registry::parse(TEXT);
        assert_eq!(
            r.counts("postern_check_results_total", &["check", "result"]),
            [("rbl / listed".to_owned(), 3.0)]
        );
        let zone = r.samples("postern_rbl_zone_usable").next().unwrap();
        assert_eq!(zone.0.get("zone").unwrap(), "a.\"b");
        // Half the observations are under 1 ms; 90 % under 10 ms; the 95th is past the last bound.
        let q = |q| r.quantile("postern_scan_duration_seconds", &[], q).unwrap();
        assert!((q(0.5) - 0.001).abs() < 1e-9, "{}", q(0.5));
        assert!((q(0.7) - 0.0055).abs() < 1e-9, "{}", q(0.7));
        assert!((q(0.95) - 0.01).abs() < 1e-9, "{}", q(0.95));
        assert!(
            r.quantile("postern_session_duration_seconds", &[], 0.5)
                .is_none()
        );
    }

    #[test]
    fn minutes_count_by_verdict_and_charts_escape_names() {
        let now = 10_000 * 60_000 + 45_000;
        let count = |minute, verdict: &str, count| MinuteCount {
            minute,
            verdict: verdict.into(),
            count,
        };
        let m = by_minute(
            &[
                count(10_000, "continue", 3),
                count(10_000, "reject", 1),
                count(9_941, "continue", 2),
                count(9_940, "continue", 5),
            ],
            now,
        );
        assert_eq!(m.per[59].get("continue"), Some(&3));
        assert_eq!(m.per[59].get("reject"), Some(&1));
        assert_eq!(m.per[0].get("continue"), Some(&2));
        assert_eq!(m.total, 6, "the minute an hour back is out");
        assert!(verdict_columns(&m).contains("<title>1 reject</title>"));
        let svg = bars(&[("<b>".into(), 2.0)], "results").unwrap();
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        assert!(bars(&[], "x").is_none());
    }
}
