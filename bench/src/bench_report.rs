//! [`BenchReport`]: everything a run measured, and writing it out as
//! `<date>-report.{json,svg,md}` (the Markdown also to stdout).

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::calibrate;
use crate::plot;
use crate::procstat;
use crate::step::Step;
use crate::summary::Summary;

/// The whole run.
#[derive(Debug, Serialize)]
pub(crate) struct BenchReport {
    pub(crate) date: String,
    pub(crate) machine: String,
    /// What a system call, a loopback datagram and a cache miss cost here,
    /// measured before the run: machines that differ in these give
    /// different figures.
    pub(crate) calibration: Option<calibrate::Calibration>,
    /// The router binary measured (`--router-bin`).
    pub(crate) router_bin: String,
    /// The load generator that measured it (`--load-bin`).
    pub(crate) load_bin: String,
    /// Runtime threads the router and the load generator each ran (see
    /// `--threads-each`).
    pub(crate) threads_each: usize,
    /// Seconds each chat step's rate rose before it held (`--chat-ramp-up`).
    pub(crate) chat_ramp_up_s: f64,
    /// Seconds each chat step held its full rate (`--chat-duration`).
    pub(crate) chat_duration_s: f64,
    pub(crate) router_config: String,
    pub(crate) steps: Vec<Step>,
    pub(crate) summary: Summary,
    pub(crate) samples: Vec<procstat::Sample>,
}

impl BenchReport {
    /// Writes `<out>/<date>-report.{json,svg,md}` and prints the Markdown.
    pub(crate) fn write(&self, out: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let stem = out.join(format!("{}-report", self.date.replace(':', "")));
        write(
            &stem.with_extension("json"),
            &serde_json::to_string_pretty(self)?,
        )?;
        let phases: Vec<plot::Phase> = self
            .steps
            .iter()
            .map(|s| plot::Phase {
                name: s.name.clone(),
                start_s: s.started_s,
                end_s: s.ended_s,
            })
            .collect();
        let svg = stem.with_extension("svg");
        write(&svg, &plot::svg(&self.samples, &phases))?;
        let markdown = crate::markdown::render(self, &file_name(&svg));
        write(&stem.with_extension("md"), &markdown)?;
        println!("{markdown}");
        eprintln!("report written to {}.{{md,json,svg}}", stem.display());
        Ok(())
    }
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or(String::new(), |f| f.to_string_lossy().into_owned())
}
