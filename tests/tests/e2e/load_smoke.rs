//! A small `switchboard-load` run as a test: 200 sessions, a few seconds of
//! chat, room traffic and presence churn against a real router, with zero
//! loss, duplicates or reordering. The scale runs live in the bench runner.

use std::sync::Arc;
use std::time::Duration;

use switchboard_client::Trust;
use switchboard_loadtest::fleet::{ClientKind, FleetOptions};
use switchboard_loadtest::progress::Counters;
use switchboard_loadtest::report::Report;
use switchboard_loadtest::scenario::{chat, connect, presence, rooms};
use switchboard_tests::{TestServer, SECRET};

fn fleet(server: &TestServer, sessions: usize, prefix: &str, client: ClientKind) -> FleetOptions {
    FleetOptions {
        servers: vec![server.addr],
        trust: Trust::Fingerprint(server.fingerprint),
        server_name: "localhost".into(),
        secret: SECRET.to_vec(),
        sessions,
        connect_rate: 1_000.0,
        max_inflight: 64,
        endpoints: 2,
        local_addrs: Vec::new(),
        user_prefix: prefix.into(),
        keep_alive: Duration::from_secs(5),
        client,
    }
}

/// The report of a run that finished and saw no violation.
fn clean(run: anyhow::Result<Report>) -> Report {
    let report = run.unwrap();
    assert!(report.violations.is_empty(), "{}", report.to_table());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_smoke_has_no_loss_duplicates_or_reordering() {
    chat_smoke(ClientKind::Driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_smoke_through_the_sdk_has_no_loss_duplicates_or_reordering() {
    chat_smoke(ClientKind::Sdk).await;
}

async fn chat_smoke(client: ClientKind) {
    let server = TestServer::start().await;
    let counters = Arc::new(Counters::default());
    let options = chat::ChatOptions {
        // 400 messages while the rate rises over 2 s, then 1,200 at 400/s.
        ramp_up: Duration::from_secs(2),
        ..chat::ChatOptions::new(400.0, Duration::from_secs(3), 80)
    };
    let fleet = fleet(&server, 200, "chat-", client);
    let report = clean(chat::run(&fleet, &options, &counters).await);
    assert_eq!(report.sessions_opened, 200);
    let traffic = report.traffic.unwrap();
    assert_eq!(traffic.scheduled, 1_600);
    assert_eq!(
        (traffic.routed, traffic.delivered, traffic.lost),
        (1_600, 1_600, 0)
    );
    // The figures describe the full rate: the ramp's messages were checked
    // but are not in the latency, and the rate is theirs over its time
    // (how long that took is the machine's business, not the test's; the
    // schedule makes it at least the duration).
    assert_eq!(traffic.latency.samples, 1_200);
    assert_eq!(traffic.ramp_up_s, 2.0);
    assert!(traffic.duration_s >= 2.99, "{}", traffic.duration_s);
    let counted = traffic.delivered_rate_per_s * traffic.duration_s;
    assert!((counted - 1_200.0).abs() < 0.5, "{counted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_smoke_loses_and_repeats_nothing_across_reconnects() {
    let server = TestServer::start().await;
    let counters = Arc::new(Counters::default());
    let mut options = chat::ChatOptions::new(300.0, Duration::from_secs(3), 80);
    options.reconnect_rate = 20.0;
    // Sends whose SendResult went to a connection that was just dropped are
    // never answered; don't wait the full default drain for them.
    options.drain = Duration::from_secs(3);
    let fleet = fleet(&server, 100, "churn-", ClientKind::Driver);
    let report = clean(chat::run(&fleet, &options, &counters).await);
    assert_eq!(report.scenario, "churn");
    let reconnects = report.reconnects.unwrap();
    assert!(reconnects >= 40, "{}", report.to_table());
    let table = report.to_table();
    let traffic = report.traffic.unwrap();
    assert!(traffic.routed > 700, "{table}");
    assert_eq!(
        (traffic.lost, traffic.duplicated, traffic.reordered),
        (0, 0, 0)
    );
    // A message can arrive whose SendResult was lost with its sender's
    // connection, so deliveries may exceed the sends known to be routed.
    assert!(traffic.delivered >= traffic.routed, "{table}");
}

/// A reconnect the router refuses (here `RECONNECTING_TOO_FAST`, as a
/// router too busy to answer a Hello in time refuses with `AUTH_TIMEOUT`) is
/// tried again after the wait the close asks for, so the messages stored for
/// it meanwhile are delivered and nothing counts as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_tries_a_refused_reconnect_again_and_loses_nothing() {
    // A bucket of 20 sessions per device, one more every 3 s.
    let server = TestServer::start_with(|c| c.limits.device_connects_per_minute = 20).await;
    let counters = Arc::new(Counters::default());
    let mut options = chat::ChatOptions::new(100.0, Duration::from_secs(2), 80);
    // About 20 reconnects per device in 2 s: the bucket runs dry.
    options.reconnect_rate = 20.0;
    options.drain = Duration::from_secs(8);
    let fleet = fleet(&server, 2, "refused-", ClientKind::Driver);
    let report = clean(chat::run(&fleet, &options, &counters).await);
    let table = report.to_table();
    assert!(report.reconnect_retries.unwrap() > 0, "{table}");
    let traffic = report.traffic.unwrap();
    assert!(traffic.routed > 50, "{table}");
    assert_eq!(
        (traffic.lost, traffic.duplicated, traffic.reordered),
        (0, 0, 0),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_smoke_delivers_to_every_member_once_in_order() {
    let server = TestServer::start().await;
    let counters = Arc::new(Counters::default());
    let options = rooms::RoomsOptions {
        chat: chat::ChatOptions::new(50.0, Duration::from_secs(2), 80),
        group: 20,
    };
    let fleet = fleet(&server, 200, "rooms-", ClientKind::Driver);
    let report = clean(rooms::run(&fleet, &options, &counters).await);
    let traffic = report.traffic.unwrap();
    assert_eq!((traffic.scheduled, traffic.routed), (100, 100));
    assert_eq!(traffic.deliveries_per_message, 19);
    assert_eq!((traffic.delivered, traffic.lost), (1_900, 0));
    assert_eq!(report.fan_out_spread.unwrap().samples, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_presence_smoke() {
    let server = TestServer::start().await;
    let counters = Arc::new(Counters::default());
    for (client, prefix) in [(ClientKind::Driver, "driver-"), (ClientKind::Sdk, "sdk-")] {
        let options = fleet(&server, 100, prefix, client);
        let report = clean(connect::run(&options, Duration::from_millis(200), &counters).await);
        assert_eq!(report.sessions_verified_alive, Some(100), "{client:?}");
    }

    let options = presence::PresenceOptions {
        rate: 50.0,
        duration: Duration::from_secs(2),
        watch: 5,
        drain: Duration::from_secs(10),
    };
    let fleet = fleet(&server, 50, "pres-", ClientKind::Sdk);
    let report = clean(presence::run(&fleet, &options, &counters).await);
    let traffic = report.traffic.unwrap();
    assert_eq!(traffic.delivered, traffic.scheduled * 5);
}

/// A wrong address fails the load generator at once, naming it, instead of
/// as thousands of timed-out sessions.
#[tokio::test]
async fn the_probe_names_an_address_that_does_not_answer() {
    let server = TestServer::start().await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let mut options = fleet(&server, 1, "probe-", ClientKind::Driver);
    options.probe().await.expect("the router answers");
    options.servers = vec![addr];
    let error = options.probe().await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("no answer from {addr} within 5 s")),
        "{error}"
    );
}
