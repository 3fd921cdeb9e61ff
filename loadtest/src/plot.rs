//! `--plot`: the run's per-second samples as an SVG, written by hand (no plotting crate for one
//! chart). Two panels share the time axis: throughput per second of every counter that moved,
//! and p50/p99 latency per second on a log scale; dashed vertical lines mark phase changes.

use std::fmt::Write;

use crate::stats::{Sample, LATENCIES, SERIES};

const W: f64 = 1160.0;
const H: f64 = 724.0;
const LEFT: f64 = 80.0;
/// The plot area ends here; the legends live to its right.
const RIGHT: f64 = 900.0;
const TOP1: f64 = 100.0;
const BOT1: f64 = 360.0;
const TOP2: f64 = 400.0;
const BOT2: f64 = 660.0;
/// Category-10 colours: ten that stay apart on a white background.
const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// The latency of a histogram takes the colour of the counter it follows (registered, register
/// events, notifications received, command responses, DTLS handshakes), so the two panels read
/// together.
const LATENCY_COLOR: [usize; LATENCIES.len()] = [0, 1, 3, 5, 9];
/// Counters that normally run on top of another (MQTT register events over 2.01s, notifications
/// and commands sent over those received): dashed, and drawn last, so both stay visible.
const DASHED: [usize; 3] = [1, 2, 4];
const DASH: &str = r#" stroke-dasharray="6 4""#;

/// Every label goes through here: titles and names hold no markup today, but one `&` or `<`
/// would make the whole document unreadable.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A coordinate: finite whatever the data did (an SVG with NaN in it renders as nothing).
fn c(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    format!("{:.1}", v.clamp(-1e6, 1e6))
}

/// Tick step of 1, 2 or 5 times a power of ten giving about `target` ticks over `range`.
fn nice_step(range: f64, target: f64) -> f64 {
    let raw = (range / target).max(1e-9);
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let f = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * p
}

/// Tick label of a count or rate: 1500 -> "1.5k".
fn short(v: f64) -> String {
    let (d, suffix) = if v.abs() >= 1e6 {
        (v / 1e6, "M")
    } else if v.abs() >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    // About three significant digits: a peak of 300.02/s reads as 300.
    let decimals = if d.abs() >= 100.0 {
        0
    } else if d.abs() >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{d:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{suffix}")
}

/// Label of `m` x 10^`e` ms without float noise ("0.02", not "0.020000000000000004").
fn log_label(m: u32, e: i32) -> String {
    if e >= 0 {
        format!("{}", m as u64 * 10u64.pow(e as u32))
    } else {
        format!("{:.*}", (-e) as usize, m as f64 * 10f64.powi(e))
    }
}

/// An SVG path through points in pixels; `None` breaks the line (a second without data). Where
/// more than two points fall in one pixel column only the lowest and highest are kept, so a long
/// run stays a small file without losing its spikes. A lone point becomes a dot.
fn path_d(points: impl Iterator<Item = Option<(f64, f64)>>) -> String {
    let mut segs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for p in points {
        match p {
            Some(p) => segs.last_mut().expect("never empty").push(p),
            None if !segs.last().expect("never empty").is_empty() => segs.push(Vec::new()),
            None => {}
        }
    }
    let mut d = String::new();
    for seg in segs.iter().filter(|s| !s.is_empty()) {
        let mut kept: Vec<(f64, f64)> = Vec::with_capacity(seg.len());
        let mut i = 0;
        while i < seg.len() {
            let col = seg[i].0.floor();
            let j = seg[i..]
                .iter()
                .position(|p| p.0.floor() != col)
                .map_or(seg.len(), |k| i + k);
            let group = &seg[i..j];
            if group.len() <= 2 {
                kept.extend_from_slice(group);
            } else {
                let lo = (0..group.len()).min_by(|&a, &b| group[a].1.total_cmp(&group[b].1));
                let hi = (0..group.len()).max_by(|&a, &b| group[a].1.total_cmp(&group[b].1));
                let (lo, hi) = (lo.expect("non-empty"), hi.expect("non-empty"));
                kept.push(group[lo.min(hi)]);
                kept.push(group[lo.max(hi)]);
            }
            i = j;
        }
        for (k, (x, y)) in kept.iter().enumerate() {
            let _ = write!(d, "{}{},{} ", if k == 0 { "M" } else { "L" }, c(*x), c(*y));
        }
        if kept.len() == 1 {
            // Round caps turn this into a dot of the stroke's width.
            d.push_str("h0.1 ");
        }
    }
    d.trim_end().to_string()
}

fn text(o: &mut String, x: f64, y: f64, anchor: &str, extra: &str, s: &str) {
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="{anchor}"{extra}>{}</text>"#,
        c(x),
        c(y),
        escape(s)
    );
}

fn line(o: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, style: &str) {
    let _ = writeln!(
        o,
        r#"<line x1="{}" y1="{}" x2="{}" y2="{}" {style}/>"#,
        c(x1),
        c(y1),
        c(x2),
        c(y2)
    );
}

/// A legend entry: a short stroke of the series' style, its name, and a figure at the right.
fn legend(o: &mut String, y: f64, color: &str, dash: &str, label: &str, figure: &str) {
    let x = RIGHT + 16.0;
    line(
        o,
        x,
        y - 4.0,
        x + 22.0,
        y - 4.0,
        &format!(r#"stroke="{color}" stroke-width="2"{dash}"#),
    );
    text(o, x + 28.0, y, "start", "", label);
    if !figure.is_empty() {
        text(o, W - 12.0, y, "end", "", figure);
    }
}

/// Each sample as a step over its interval (a rate is an average over the interval, not a value
/// at its end; and a run's first second would otherwise be a lone point). `y` maps a value to
/// pixels; non-finite values break the line like missing ones.
fn steps<'a>(
    samples: &'a [Sample],
    x: &'a dyn Fn(f64) -> f64,
    value: impl Fn(&Sample) -> Option<f64> + 'a,
    y: &'a dyn Fn(f64) -> f64,
) -> impl Iterator<Item = Option<(f64, f64)>> + 'a {
    samples.iter().flat_map(move |s| {
        let v = value(s).filter(|v| v.is_finite()).map(y);
        [v.map(|v| (x(s.start), v)), v.map(|v| (x(s.t), v))]
    })
}

fn series(o: &mut String, d: &str, color: &str, dash: &str) {
    let _ = writeln!(
        o,
        r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.5" stroke-linejoin="round" stroke-linecap="round"{dash}/>"#
    );
}

/// A latency in ms with about three significant digits.
fn ms_label(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The SVG document. `phases` are (seconds on the harness clock, name) of each phase change.
pub fn svg(title: &str, samples: &[Sample], phases: &[(f64, &str)]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        o,
        r#"<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>"#
    );
    let bold = r#" font-weight="bold""#;
    text(
        &mut o,
        LEFT,
        26.0,
        "start",
        r#" font-size="16" font-weight="bold""#,
        title,
    );

    let t_end = samples
        .iter()
        .map(|s| s.t)
        .chain(phases.iter().map(|p| p.0))
        .filter(|t| t.is_finite())
        .fold(1.0f64, f64::max);
    let x_step = nice_step(t_end, 10.0);
    let t_max = (t_end / x_step).ceil() * x_step;
    let x = |t: f64| LEFT + (t / t_max).clamp(0.0, 1.0) * (RIGHT - LEFT);

    // Time axis: grid through both panels, labels under the lower one.
    let mut t = 0.0;
    while t <= t_max + x_step * 1e-6 {
        for (top, bot) in [(TOP1, BOT1), (TOP2, BOT2)] {
            line(&mut o, x(t), top, x(t), bot, r##"stroke="#eee""##);
        }
        text(&mut o, x(t), BOT2 + 16.0, "middle", "", &short(t));
        t += x_step;
    }
    text(
        &mut o,
        (LEFT + RIGHT) / 2.0,
        BOT2 + 36.0,
        "middle",
        "",
        "seconds since the harness started",
    );

    // Panel 1: throughput.
    let moved: Vec<usize> = (0..SERIES.len())
        .filter(|&i| samples.iter().any(|s| s.rates[i] > 0.0))
        .collect();
    let peak_of = |i: usize| {
        samples
            .iter()
            .map(|s| s.rates[i])
            .filter(|r| r.is_finite())
            .fold(0.0f64, f64::max)
    };
    let peak = moved.iter().map(|&i| peak_of(i)).fold(0.0f64, f64::max);
    let y_step = nice_step(peak.max(1.0), 5.0);
    let y_max = (peak.max(1.0) / y_step).ceil() * y_step;
    let y1 = |v: f64| BOT1 - (v / y_max).clamp(0.0, 1.0) * (BOT1 - TOP1);
    let mut v = 0.0;
    while v <= y_max + y_step * 1e-6 {
        line(&mut o, LEFT, y1(v), RIGHT, y1(v), r##"stroke="#eee""##);
        text(&mut o, LEFT - 6.0, y1(v) + 4.0, "end", "", &short(v));
        v += y_step;
    }
    let mid1 = (TOP1 + BOT1) / 2.0;
    text(
        &mut o,
        22.0,
        mid1,
        "middle",
        &format!(r#" transform="rotate(-90 22 {})""#, c(mid1)),
        "throughput (per second)",
    );
    text(
        &mut o,
        RIGHT + 16.0,
        TOP1 + 4.0,
        "start",
        bold,
        "per second",
    );
    text(&mut o, W - 12.0, TOP1 + 4.0, "end", bold, "peak");
    let dash_of = |i: usize| if DASHED.contains(&i) { DASH } else { "" };
    let mut order = moved.clone();
    order.sort_by_key(|i| DASHED.contains(i));
    for &i in &order {
        let d = path_d(steps(samples, &x, |s| Some(s.rates[i]), &y1));
        series(&mut o, &d, COLORS[i % COLORS.len()], dash_of(i));
    }
    for (k, &i) in moved.iter().enumerate() {
        let y = TOP1 + 24.0 + 16.0 * k as f64;
        let color = COLORS[i % COLORS.len()];
        legend(
            &mut o,
            y,
            color,
            dash_of(i),
            SERIES[i].1,
            &short(peak_of(i)),
        );
    }
    if moved.is_empty() {
        let grey = r##" fill="#888""##;
        text(
            &mut o,
            (LEFT + RIGHT) / 2.0,
            mid1,
            "middle",
            grey,
            "no counter moved",
        );
    }

    // Panel 2: latency, log scale.
    let with_data: Vec<usize> = (0..LATENCIES.len())
        .filter(|&i| samples.iter().any(|s| s.latency[i].is_some()))
        .collect();
    let values = || {
        with_data
            .iter()
            .flat_map(|&i| samples.iter().filter_map(move |s| s.latency[i]))
            .flat_map(|(a, b)| [a, b])
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    // Histograms count from 1 ns = 1e-6 ms; below that a log axis has nothing to show.
    let lo = values().fold(f64::INFINITY, f64::min).max(1e-6);
    let hi = values().fold(0.0f64, f64::max).max(lo);
    let (e_lo, mut e_hi) = if with_data.is_empty() {
        (-1, 3)
    } else {
        (lo.log10().floor() as i32, hi.log10().ceil() as i32)
    };
    if e_hi <= e_lo {
        e_hi = e_lo + 1;
    }
    let y2 = |ms: f64| {
        let l = ms.max(1e-9).log10();
        let f = (l - e_lo as f64) / (e_hi - e_lo) as f64;
        BOT2 - f.clamp(0.0, 1.0) * (BOT2 - TOP2)
    };
    // Few decades: label 2 and 5 as well, or the axis has two numbers on it.
    let label_minor = e_hi - e_lo <= 2;
    for e in e_lo..=e_hi {
        for m in [1u32, 2, 5] {
            if e == e_hi && m > 1 {
                break;
            }
            let v = m as f64 * 10f64.powi(e);
            let style = if m == 1 {
                r##"stroke="#ddd""##
            } else {
                r##"stroke="#f3f3f3""##
            };
            line(&mut o, LEFT, y2(v), RIGHT, y2(v), style);
            if m == 1 || label_minor {
                text(&mut o, LEFT - 6.0, y2(v) + 4.0, "end", "", &log_label(m, e));
            }
        }
    }
    let mid2 = (TOP2 + BOT2) / 2.0;
    text(
        &mut o,
        22.0,
        mid2,
        "middle",
        &format!(r#" transform="rotate(-90 22 {})""#, c(mid2)),
        "latency per second (ms, log)",
    );
    text(&mut o, RIGHT + 16.0, TOP2 + 4.0, "start", bold, "latency");
    text(&mut o, W - 12.0, TOP2 + 4.0, "end", bold, "median ms");
    let mut k = 0;
    for &i in &with_data {
        let color = COLORS[LATENCY_COLOR[i] % COLORS.len()];
        for (q, dash) in [(0, ""), (1, DASH)] {
            // A log axis has no place for zero or less: such a second is a gap, like no data.
            let pick = |s: &Sample| {
                s.latency[i]
                    .map(|l| if q == 0 { l.0 } else { l.1 })
                    .filter(|v| *v > 0.0)
            };
            series(&mut o, &path_d(steps(samples, &x, pick, &y2)), color, dash);
            // The median of the per-second figures: where the line mostly sits.
            let mut v: Vec<f64> = samples
                .iter()
                .filter_map(pick)
                .filter(|v| v.is_finite())
                .collect();
            v.sort_by(f64::total_cmp);
            let med = v.get(v.len() / 2).map_or(String::new(), |m| ms_label(*m));
            let label = format!("{} {}", LATENCIES[i], if q == 0 { "p50" } else { "p99" });
            legend(
                &mut o,
                TOP2 + 24.0 + 16.0 * k as f64,
                color,
                dash,
                &label,
                &med,
            );
            k += 1;
        }
    }
    if with_data.is_empty() {
        let grey = r##" fill="#888""##;
        text(
            &mut o,
            (LEFT + RIGHT) / 2.0,
            mid2,
            "middle",
            grey,
            "no latency recorded",
        );
    }

    // Phase changes over both panels; labels in three rows above the upper panel, the next row
    // taken when a label would run into the one before. Phases that follow each other too fast
    // for any row (connect, setup and the measured phase within a second) share one label.
    const ROWS: usize = 3;
    let mut row_end = [f64::NEG_INFINITY; ROWS];
    let mut labels: Vec<(f64, usize, String)> = Vec::new();
    // Roughly 6.5 px per character at 11 px.
    let width = |s: &str| 6.5 * s.chars().count() as f64 + 8.0;
    for &(t, name) in phases.iter().filter(|p| p.0.is_finite()) {
        let px = x(t);
        let style = r##"stroke="#555" stroke-width="1" stroke-dasharray="3 3""##;
        line(&mut o, px, TOP1 - 4.0, px, BOT2, style);
        match (0..ROWS).find(|&r| row_end[r] <= px) {
            Some(row) => {
                row_end[row] = px + width(name);
                labels.push((px, row, name.to_string()));
            }
            None => {
                let (lx, row, l) = labels.last_mut().expect("rows are only full after a label");
                l.push_str(", ");
                l.push_str(name);
                row_end[*row] = *lx + width(l);
            }
        }
    }
    for (px, row, l) in &labels {
        let y = TOP1 - 36.0 + 13.0 * *row as f64;
        text(
            &mut o,
            px + 3.0,
            y,
            "start",
            r##" font-size="11" fill="#333""##,
            l,
        );
    }

    for (top, bot) in [(TOP1, BOT1), (TOP2, BOT2)] {
        let _ = writeln!(
            o,
            r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
            c(LEFT),
            c(top),
            c(RIGHT - LEFT),
            c(bot - top)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small XML well-formedness check (the harness has no XML crate): tags balance, names
    /// match, attributes are quoted, text has no raw `<` or stray `&`, and every number in a
    /// geometry attribute is finite.
    fn check_xml(doc: &str) {
        assert!(
            !doc.contains("NaN") && !doc.contains("inf"),
            "non-finite number"
        );
        let entity_ok = |s: &str| {
            s.match_indices('&').all(|(i, _)| {
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| s[i..].starts_with(e))
            })
        };
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = doc;
        while let Some(lt) = rest.find('<') {
            let txt = &rest[..lt];
            assert!(!txt.contains('>'), "raw > in text {txt:?}");
            assert!(entity_ok(txt), "stray & in text {txt:?}");
            if !txt.trim().is_empty() {
                assert!(!stack.is_empty(), "text outside the root");
            }
            rest = &rest[lt..];
            if rest.starts_with("<?") {
                rest = &rest[rest.find("?>").expect("unclosed <?") + 2..];
                continue;
            }
            let gt = rest.find('>').expect("unclosed tag");
            let tag = &rest[1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.trim()),
                    "mismatched </{name}>"
                );
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, mut attrs) = tag.split_once(' ').unwrap_or((tag, ""));
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "bad tag name {name:?}"
            );
            if stack.is_empty() {
                roots += 1;
                assert_eq!(name, "svg");
            }
            loop {
                attrs = attrs.trim_start();
                if attrs.is_empty() {
                    break;
                }
                let (key, after) = attrs.split_once("=\"").expect("attribute without =\"");
                let end = after.find('"').expect("unterminated attribute");
                let val = &after[..end];
                assert!(!val.contains('<') && entity_ok(val), "bad value {val:?}");
                let key = key.trim();
                if ["x", "y", "x1", "y1", "x2", "y2", "width", "height", "d"].contains(&key) {
                    for num in val
                        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
                        .filter(|n| !n.is_empty())
                    {
                        let f: f64 = num.parse().unwrap_or_else(|_| panic!("{key}={val:?}"));
                        assert!(f.is_finite());
                    }
                }
                attrs = &after[end + 1..];
            }
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        assert!(rest.trim().is_empty(), "trailing text");
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1);
    }

    fn sample(t: f64, rate: f64, lat: Option<(f64, f64)>) -> Sample {
        let mut rates = [0.0; SERIES.len()];
        rates[3] = rate;
        Sample {
            start: t - 1.0,
            t,
            rates,
            latency: [None, None, lat, None, None],
        }
    }

    #[test]
    fn empty_run_is_a_valid_document() {
        let doc = svg("empty & <odd> \"title\"", &[], &[]);
        check_xml(&doc);
        assert!(doc.contains("no counter moved") && doc.contains("no latency recorded"));
        assert!(doc.contains("empty &amp; &lt;odd&gt; &quot;title&quot;"));
    }

    #[test]
    fn spiky_and_gappy_series() {
        let mut samples = Vec::new();
        for i in 1..=120 {
            let t = i as f64;
            let (rate, lat) = match i {
                // Nothing at all for a while: the latency line must break, not dive to zero.
                10..=19 => (0.0, None),
                // A spike of six orders of magnitude in both panels.
                50 => (2.5e6, Some((0.004, 9_000.0))),
                // Garbage the sampler never produces, but the writer must survive.
                60 => (f64::NAN, Some((f64::INFINITY, f64::NAN))),
                61 => (f64::INFINITY, Some((0.0, -1.0))),
                _ => (1000.0 + (i % 7) as f64 * 10.0, Some((0.3, 2.0))),
            };
            samples.push(sample(t, rate, lat));
        }
        let phases = [
            (0.01, "connect"),
            (0.2, "setup"),
            (0.3, "notify"),
            (110.0, "drain"),
        ];
        let doc = svg("notify", &samples, &phases);
        check_xml(&doc);
        assert!(doc.contains("notifications received"));
        assert!(doc.contains("notification p99"));
        // Only the counter that moved and the histogram that had data are drawn.
        assert!(!doc.contains("registered (2.01)") && !doc.contains("register 2.01 p50"));
        for p in ["connect", "setup", "notify", "drain"] {
            assert!(doc.contains(&format!(">{p}</text>")));
        }
        // The gap splits the p50 path into several subpaths.
        assert!(doc.matches(" M").count() + doc.matches("\"M").count() > 4);
    }

    #[test]
    fn long_runs_are_thinned_to_pixel_columns() {
        let samples: Vec<Sample> = (1..=100_000)
            .map(|i| {
                let spike = if i == 77_777 { 1e6 } else { 10.0 };
                sample(i as f64, spike, Some((1.0, spike / 1e3)))
            })
            .collect();
        let doc = svg("long", &samples, &[]);
        check_xml(&doc);
        assert!(doc.len() < 200_000, "{} bytes", doc.len());
        // The spike survives thinning: some point sits at the top of the upper panel.
        assert!(doc.contains(&format!(",{} ", c(TOP1))));
    }

    #[test]
    fn phases_too_close_for_any_row_share_a_label() {
        let samples = [sample(1.0, 5.0, None), sample(100.0, 5.0, None)];
        let phases = [
            (0.1, "connect"),
            (0.2, "setup"),
            (0.3, "notify"),
            (0.4, "drain"),
        ];
        let doc = svg("t", &samples, &phases);
        check_xml(&doc);
        assert!(doc.contains(">notify, drain</text>"), "{doc}");
        assert_eq!(doc.matches(r#"stroke-dasharray="3 3""#).count(), 4);
    }

    #[test]
    fn labels() {
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(2_000_000.0), "2M");
        assert_eq!(short(0.0), "0");
        assert_eq!(short(300.02), "300");
        assert_eq!(short(56_430.0), "56.4k");
        assert_eq!(short(100.0), "100");
        assert_eq!(log_label(2, -2), "0.02");
        assert_eq!(log_label(5, 2), "500");
        assert_eq!(nice_step(97.0, 10.0), 10.0);
        assert_eq!(nice_step(7.0, 10.0), 1.0);
    }
}
