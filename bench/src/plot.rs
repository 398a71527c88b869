//! A dependency-free SVG line chart of the router's RSS and CPU over a run,
//! with the scenario phases marked.

use std::fmt::Write as _;

use crate::procstat::Sample;

/// A named time span of the run.
pub(crate) struct Phase {
    /// Label.
    pub(crate) name: String,
    /// Start, seconds.
    pub(crate) start_s: f64,
    /// End, seconds.
    pub(crate) end_s: f64,
}

/// Renders RSS (MiB, left axis) and CPU (% of a core, right axis) over time.
pub(crate) fn svg(samples: &[Sample], phases: &[Phase]) -> String {
    let (w, h, margin) = (900.0, 360.0, 50.0);
    let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let rss_max = samples
        .iter()
        .map(|s| s.rss_kib as f64 / 1024.0)
        .fold(1.0, f64::max)
        * 1.1;
    let cpu_max = samples.iter().map(|s| s.cpu_percent).fold(100.0, f64::max) * 1.1;
    let x = |t: f64| margin + t / t_max * (w - 2.0 * margin);
    let y = |v: f64, max: f64| h - margin - v / max * (h - 2.0 * margin);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    for (i, phase) in phases.iter().enumerate() {
        let fill = if i % 2 == 0 { "#f0f4ff" } else { "#fff4e8" };
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{margin}" width="{:.1}" height="{:.1}" fill="{fill}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x(phase.start_s),
            (x(phase.end_s) - x(phase.start_s)).max(1.0),
            h - 2.0 * margin,
            x(phase.start_s) + 2.0,
            margin - 4.0 - (i % 2) as f64 * 12.0,
            phase.name
        );
    }
    let line = |value: &dyn Fn(&Sample) -> f64, max: f64| {
        samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t_s), y(value(s), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        out,
        r##"<polyline fill="none" stroke="#1f5fbf" stroke-width="1.5" points="{}"/>"##,
        line(&|s| s.rss_kib as f64 / 1024.0, rss_max)
    );
    let _ = write!(
        out,
        r##"<polyline fill="none" stroke="#d9480f" stroke-width="1" points="{}"/>"##,
        line(&|s| s.cpu_percent, cpu_max)
    );
    let _ = write!(
        out,
        r##"<line x1="{margin}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/><text x="{margin}" y="{2}">0 s</text><text x="{3}" y="{2}">{t_max:.0} s</text>"##,
        h - margin,
        w - margin,
        h - margin + 14.0,
        w - margin - 20.0
    );
    let _ = write!(
        out,
        r##"<text x="4" y="{margin}" fill="#1f5fbf">RSS {rss_max:.0} MiB</text><text x="{:.0}" y="{margin}" fill="#d9480f">CPU {cpu_max:.0}%</text></svg>"##,
        w - 110.0
    );
    out
}
