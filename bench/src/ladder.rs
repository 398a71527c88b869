//! Chat rate ladders: which rungs a ladder climbs, and the names the
//! report gives its ladders and their steps.

use serde::Serialize;

use crate::target::Target;

/// The 10k-session ladder against the router: steps `chat-<rate>`.
pub(crate) const SWITCHBOARD_LADDER: &str = "chat";
/// The same ladder against nats-server: steps `nats-chat-<rate>`.
pub(crate) const NATS_LADDER: &str = "nats-chat";

/// One chat rate ladder: against which target, with how many sessions.
pub(crate) struct Ladder<'a> {
    /// The server it drives.
    pub(crate) target: &'a Target,
    /// Sessions (or nats connections) per rung.
    pub(crate) sessions: usize,
    /// Its name; rung steps are `{name}-{rate}`, a retry
    /// `{name}-{rate}-retry`.
    pub(crate) name: &'a str,
    /// Also run once at half the best rate (the latency figure).
    pub(crate) half_rate_step: bool,
}

/// Where a step sits on a ladder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Rung {
    /// The ladder's name.
    pub(crate) ladder: String,
    /// Messages per second.
    pub(crate) rate_per_s: f64,
    /// Whether this is the second try of the rate.
    pub(crate) retry: bool,
}

impl Rung {
    /// The step's name.
    pub(crate) fn step_name(&self) -> String {
        let retry = if self.retry { "-retry" } else { "" };
        format!("{}-{}{retry}", self.ladder, self.rate_per_s)
    }
}

/// The rungs tried, fastest first, when the ladder's first rung `first`
/// failed: halving, down to 1/16 of it.
pub(crate) fn rungs_below(first: f64) -> Vec<f64> {
    (1..=4).map(|k| first / f64::from(1u32 << k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_down_by_halving_from_a_failed_first_rung() {
        assert_eq!(
            rungs_below(16_000.0),
            vec![8_000.0, 4_000.0, 2_000.0, 1_000.0]
        );
    }

    #[test]
    fn rung_steps_are_named_by_ladder_rate_and_try() {
        let mut rung = Rung {
            ladder: "chat".into(),
            rate_per_s: 2_000.0,
            retry: false,
        };
        assert_eq!(rung.step_name(), "chat-2000");
        rung.retry = true;
        rung.rate_per_s = 625.5;
        assert_eq!(rung.step_name(), "chat-625.5-retry");
    }
}
