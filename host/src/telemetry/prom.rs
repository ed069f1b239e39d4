//! The one Prometheus text-format (version 0.0.4) writer: everything `/metrics` serves is
//! written through [`Writer`].
//!
//! * [`Writer::family`] writes a family's `# HELP` and `# TYPE` lines, once, and hands back a
//!   [`Family`] whose samples can only carry that family's name, so a family's samples sit
//!   together right under its header.
//! * Label values are escaped as the format requires (`\` → `\\`, `"` → `\"`, newline → `\n`);
//!   HELP text escapes `\` and newline.
//! * [`Family::histogram`] writes `_bucket{…,le="…"}` (cumulative, ending with `+Inf`),
//!   `_sum` and `_count` from a [`Histogram`].
//!
//! Cost: this module only *renders*, at scrape time. Recording is untouched by it: the request
//! path still bumps plain atomics in structs pre-allocated per route, listener, endpoint and
//! plugin ([`Histogram::observe`] included), with no label lookup, hashing or allocation. So
//! per-request CPU is the same as with the hand-formatted text this replaced, by construction.
//! (A registry crate such as `prometheus-client` keys label sets by hash on every lookup, and
//! would have needed pre-resolved handles everywhere to stay at that cost.)

use super::histogram::Histogram;
use std::fmt::Write as _;

/// A family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value, written as Rust's `Display` writes it (so `3`, `0.25`), except that
/// non-finite floats use the format's `+Inf`, `-Inf` and `NaN`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Self {
        Num::U(v)
    }
}
impl From<u32> for Num {
    fn from(v: u32) -> Self {
        Num::U(v.into())
    }
}
impl From<u8> for Num {
    fn from(v: u8) -> Self {
        Num::U(v.into())
    }
}
impl From<bool> for Num {
    fn from(v: bool) -> Self {
        Num::U(v.into())
    }
}
impl From<usize> for Num {
    fn from(v: usize) -> Self {
        Num::U(v as u64)
    }
}
impl From<i64> for Num {
    fn from(v: i64) -> Self {
        Num::I(v)
    }
}
impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num::F(v)
    }
}

impl Num {
    fn write(self, out: &mut String) {
        let _ = match self {
            Num::U(v) => write!(out, "{v}"),
            Num::I(v) => write!(out, "{v}"),
            Num::F(v) if v.is_nan() => write!(out, "NaN"),
            Num::F(v) if v == f64::INFINITY => write!(out, "+Inf"),
            Num::F(v) if v == f64::NEG_INFINITY => write!(out, "-Inf"),
            Num::F(v) => write!(out, "{v}"),
        };
    }
}

/// Label pairs of one sample: `(name, value)`; values are escaped on output.
pub(crate) type Labels<'l> = [(&'l str, &'l str)];

/// Writes families into a `String`. Cheap to create; several writers may append to the same
/// text one after the other (family names must still be unique across the whole text).
pub(crate) struct Writer<'a> {
    out: &'a mut String,
    /// Families written so far, to catch a family opened twice (which would split it).
    seen: Vec<&'static str>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut String) -> Self {
        Writer {
            out,
            seen: Vec::new(),
        }
    }

    /// Writes `# HELP` and `# TYPE` for `name` and returns the handle its samples are written
    /// through. Call once per family, with all of its samples before the next family.
    pub(crate) fn family(&mut self, name: &'static str, help: &str, kind: Kind) -> Family<'_, 'a> {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        debug_assert!(
            !self.seen.contains(&name),
            "metric family {name} written twice"
        );
        self.seen.push(name);
        let out = &mut *self.out;
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        escape_help(out, help);
        out.push_str("\n# TYPE ");
        out.push_str(name);
        out.push(' ');
        out.push_str(kind.as_str());
        out.push('\n');
        Family {
            w: self,
            name,
            kind,
        }
    }
}

/// One family being written; see [`Writer::family`].
pub(crate) struct Family<'w, 'a> {
    w: &'w mut Writer<'a>,
    name: &'static str,
    kind: Kind,
}

impl Family<'_, '_> {
    /// `name{labels} value` for a counter or gauge.
    pub(crate) fn sample(&mut self, labels: &Labels<'_>, value: impl Into<Num>) {
        debug_assert!(
            self.kind != Kind::Histogram,
            "{}: use histogram()",
            self.name
        );
        self.line("", labels, None, value.into());
    }

    /// `name_bucket{labels,le="…"}` for every bound and `+Inf` (cumulative), then `name_sum`
    /// and `name_count` (equal to the `+Inf` bucket).
    pub(crate) fn histogram(&mut self, labels: &Labels<'_>, h: &Histogram) {
        debug_assert!(
            self.kind == Kind::Histogram,
            "{}: not a histogram",
            self.name
        );
        let mut le = String::new();
        let mut cum = 0;
        let mut bounds = h.bounds().iter();
        for c in h.cumulative() {
            cum = c;
            le.clear();
            match bounds.next() {
                Some(b) => {
                    let _ = write!(le, "{b}");
                }
                None => le.push_str("+Inf"),
            }
            self.line("_bucket", labels, Some(&le), Num::U(cum));
        }
        self.line("_sum", labels, None, Num::F(h.sum_seconds()));
        self.line("_count", labels, None, Num::U(cum));
    }

    fn line(&mut self, suffix: &str, labels: &Labels<'_>, le: Option<&str>, value: Num) {
        let out = &mut *self.w.out;
        out.push_str(self.name);
        out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            out.push('{');
            let le = le.map(|v| ("le", v));
            for (i, (k, v)) in labels.iter().copied().chain(le).enumerate() {
                debug_assert!(valid_name(k) && !k.contains(':'), "bad label name {k:?}");
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                escape_label_value(out, v);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        value.write(out);
        out.push('\n');
    }
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn escape_label_value(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    if !v.contains(['\\', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::histogram::OVERHEAD_BUCKETS;
    use super::*;
    use std::time::Duration;

    #[test]
    fn headers_once_then_samples_with_escaped_labels() {
        let mut s = String::new();
        let mut w = Writer::new(&mut s);
        let mut f = w.family("x_total", "Things, by \\ and\nline.", Kind::Counter);
        f.sample(&[("a", "plain"), ("b", "q\"uo\\te\nnl")], 3u64);
        f.sample(&[], 0u64);
        let mut g = w.family("y", "A gauge.", Kind::Gauge);
        g.sample(&[("a", "1")], -2i64);
        g.sample(&[("a", "2")], 0.25);
        g.sample(&[("a", "3")], f64::INFINITY);
        g.sample(&[("a", "4")], f64::NAN);
        assert_eq!(
            s,
            "# HELP x_total Things, by \\\\ and\\nline.\n\
             # TYPE x_total counter\n\
             x_total{a=\"plain\",b=\"q\\\"uo\\\\te\\nnl\"} 3\n\
             x_total 0\n\
             # HELP y A gauge.\n\
             # TYPE y gauge\n\
             y{a=\"1\"} -2\n\
             y{a=\"2\"} 0.25\n\
             y{a=\"3\"} +Inf\n\
             y{a=\"4\"} NaN\n"
        );
    }

    #[test]
    #[should_panic(expected = "written twice")]
    #[cfg(debug_assertions)]
    fn a_family_opened_twice_is_caught() {
        let mut s = String::new();
        let mut w = Writer::new(&mut s);
        w.family("x", "X.", Kind::Gauge);
        w.family("x", "X.", Kind::Gauge);
    }

    #[test]
    fn histogram_buckets_are_cumulative_le_inclusive_and_end_with_inf() {
        let h = Histogram::new(OVERHEAD_BUCKETS);
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(11));
        h.observe(Duration::from_secs(5));
        let mut s = String::new();
        let mut w = Writer::new(&mut s);
        w.family("x", "X.", Kind::Histogram).histogram(&[], &h);
        w.family("y", "Y.", Kind::Histogram)
            .histogram(&[("route", "r\"1")], &h);
        assert!(s.starts_with("# HELP x X.\n# TYPE x histogram\n"), "{s}");
        assert!(s.contains("\nx_bucket{le=\"0.00001\"} 1\n"), "{s}");
        assert!(s.contains("\nx_bucket{le=\"0.000015\"} 2\n"), "{s}");
        assert!(s.contains("\nx_bucket{le=\"1\"} 2\n"), "{s}");
        assert!(
            s.contains("\nx_bucket{le=\"+Inf\"} 3\nx_sum 5.000021\nx_count 3\n"),
            "{s}"
        );
        assert!(
            s.contains("\ny_bucket{route=\"r\\\"1\",le=\"0.000005\"} 0\n"),
            "{s}"
        );
        assert!(s.contains(
            "\ny_bucket{route=\"r\\\"1\",le=\"+Inf\"} 3\n\
             y_sum{route=\"r\\\"1\"} 5.000021\n\
             y_count{route=\"r\\\"1\"} 3\n"
        ));
        // One bucket line per bound plus +Inf, counts never decreasing.
        let counts: Vec<u64> = s
            .lines()
            .filter(|l| l.starts_with("x_bucket"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert_eq!(counts.len(), OVERHEAD_BUCKETS.len() + 1);
        assert!(counts.windows(2).all(|p| p[0] <= p[1]), "{counts:?}");
    }
}
