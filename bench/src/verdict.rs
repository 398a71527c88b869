//! Whether a step passed: its correctness violations, and for a chat rung
//! whether its rate was sustainable (everything scheduled delivered, p99
//! under [`SUSTAINABLE_P99_MS`]).

use switchboard_loadtest::report::Report;

/// The p99 delivery latency under which a chat rate counts as sustainable.
pub(crate) const SUSTAINABLE_P99_MS: f64 = 50.0;

/// Whether a step's rate was sustainable: no violations, traffic carried,
/// everything delivered in time.
pub(crate) fn sustainable(report: &Report) -> bool {
    report.violations.is_empty() && report.traffic.is_some() && shortfall(report).is_none()
}

/// Why a correct chat step was not sustainable: not everything it scheduled
/// was delivered, or its p99 reached [`SUSTAINABLE_P99_MS`]. `None` when
/// it was (or carried no traffic).
fn shortfall(r: &Report) -> Option<String> {
    let t = r.traffic.as_ref()?;
    let due = t.scheduled * t.deliveries_per_message.max(1);
    if t.delivered < due {
        Some(format!("{} of {due} delivered", t.delivered))
    } else if t.latency.p99_ms >= SUSTAINABLE_P99_MS {
        Some(format!("p99 >= {SUSTAINABLE_P99_MS:.0} ms"))
    } else {
        None
    }
}

/// The report's verdict on one step: its correctness violations, else, for
/// a chat ladder step, whether it was sustainable, else `pass`. Rooms and
/// churn steps are judged on correctness alone: a room's p99 spans its
/// whole fan-out, and churn skips sends while a session reconnects.
pub(crate) fn verdict(r: &Report) -> String {
    if !r.violations.is_empty() {
        return r.violations.join("; ");
    }
    match shortfall(r) {
        Some(why) if matches!(r.scenario.as_str(), "chat" | "nats-chat") => {
            format!("correct, not sustainable: {why}")
        }
        _ => "pass".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use switchboard_loadtest::report::Traffic;

    /// A chat report with 1,000 messages scheduled.
    pub(crate) fn chat_report(delivered: u64, p99_ms: f64) -> Report {
        let mut traffic = Traffic {
            scheduled: 1_000,
            deliveries_per_message: 1,
            delivered,
            ..Traffic::default()
        };
        traffic.latency.p99_ms = p99_ms;
        Report {
            scenario: "chat".into(),
            traffic: Some(traffic),
            ..Report::default()
        }
    }

    #[test]
    fn verdict_tells_correct_but_slow_from_pass_and_from_violations() {
        assert_eq!(verdict(&chat_report(1_000, 12.0)), "pass");
        assert_eq!(
            verdict(&chat_report(1_000, 293.0)),
            "correct, not sustainable: p99 >= 50 ms"
        );
        assert_eq!(
            verdict(&chat_report(990, 12.0)),
            "correct, not sustainable: 990 of 1000 delivered"
        );
        let mut lossy = chat_report(990, 12.0);
        lossy.violations = vec!["10 lost".into()];
        assert_eq!(verdict(&lossy), "10 lost");
        assert_eq!(verdict(&Report::default()), "pass");
        let mut slow_room = chat_report(1_000, 168.0);
        slow_room.scenario = "rooms".into();
        assert_eq!(verdict(&slow_room), "pass");
    }

    #[test]
    fn only_a_correct_timely_complete_step_is_sustainable() {
        assert!(sustainable(&chat_report(1_000, 12.0)));
        assert!(!sustainable(&chat_report(1_000, 50.0)));
        assert!(!sustainable(&chat_report(999, 12.0)));
        assert!(!sustainable(&Report::default()), "no traffic");
    }
}
