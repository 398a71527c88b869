//! Round trips of [`Cli::to_args`]: every scenario, options set and
//! unset, parses back to the value it came from.

use super::*;

fn parse(args: &[String]) -> Cli {
    let argv = ["switchboard-load".to_owned()]
        .into_iter()
        .chain(args.iter().cloned());
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn defaults(scenario: &str) -> Cli {
    Cli::try_parse_from(["switchboard-load", scenario]).unwrap()
}

fn common_of(cli: &mut Cli) -> &mut Common {
    match &mut cli.scenario {
        Scenario::Connect { common, .. }
        | Scenario::Chat { common, .. }
        | Scenario::Rooms { common, .. }
        | Scenario::Churn { common, .. }
        | Scenario::Presence { common, .. } => common,
        Scenario::NatsChat { .. } => panic!("nats-chat has no common options"),
    }
}

/// Every common option away from its default.
fn every_common_option_set() -> Common {
    Common {
        server: vec![
            "127.0.0.1:14433".parse().unwrap(),
            "[::1]:14434".parse().unwrap(),
        ],
        ca: None,
        cert_sha256: Some("ab".repeat(32)),
        secret_file: Some("/tmp/bench dir/secret".into()),
        sessions: 10_000,
        connect_rate: 6_000.5,
        max_inflight: 64,
        client: ClientKind::Sdk,
        endpoints: 3,
        local_addr: vec!["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()],
        user_prefix: "-chat-2000-".into(),
        keep_alive: Duration::from_secs(90),
        server_name: "router.example".into(),
        json: Some("/tmp/chat-2000.json".into()),
        quiet: true,
    }
}

fn every_scenario_with_options_set() -> Vec<Cli> {
    let common = every_common_option_set;
    let scenarios = [
        Scenario::Connect {
            common: common(),
            hold: Duration::from_secs(90),
        },
        Scenario::Chat {
            common: common(),
            rate: 2_500.25,
            duration: Duration::from_millis(90_500),
            payload: 200,
            drain: Duration::from_secs(3_600 + 1),
            ramp_up: Duration::from_secs(5),
            server_pid: Some(4242),
        },
        Scenario::Rooms {
            common: common(),
            group: 100,
            rate: 100.0,
            duration: Duration::from_secs(20),
            payload: 20,
            server_pid: Some(1),
        },
        Scenario::Churn {
            common: common(),
            rate: 5_000.0,
            reconnect_rate: 200.0,
            duration: Duration::from_secs(30),
            payload: 81,
            server_pid: Some(77),
        },
        Scenario::Presence {
            common: common(),
            rate: 50.0,
            duration: Duration::from_millis(1_500),
            watch: 5,
        },
        Scenario::NatsChat {
            nats_url: "tls://localhost:14222".into(),
            nats_ca: Some("/tmp/nats-tls/cert.pem".into()),
            sessions: 10_000,
            connect_rate: 6_000.0,
            max_inflight: 512,
            rate: 30_000.0,
            duration: Duration::from_secs(90),
            payload: 120,
            ramp_up: Duration::from_secs(5),
            server_pid: Some(31337),
            json: Some("/tmp/nats-chat-30000.json".into()),
            quiet: true,
        },
    ];
    let threads = [1, 0, 0, 0, 0, 2];
    let cli = |(scenario, threads)| Cli { scenario, threads };
    scenarios.into_iter().zip(threads).map(cli).collect()
}

#[test]
fn every_scenario_at_its_defaults_is_just_its_name() {
    for name in ["connect", "chat", "rooms", "churn", "nats-chat", "presence"] {
        let cli = defaults(name);
        assert_eq!(cli.scenario.name(), name);
        assert_eq!(cli.to_args(), vec![name.to_owned()]);
        assert_eq!(parse(&cli.to_args()), cli);
    }
}

#[test]
fn every_scenario_with_every_option_set_parses_back_to_itself() {
    for cli in every_scenario_with_options_set() {
        let args = cli.to_args();
        assert_eq!(parse(&args), cli, "{args:?}");
    }
}

#[test]
fn options_set_and_unset_parse_back_to_themselves() {
    // Some options set, the rest left unset or at their default.
    let mut chat = defaults("chat");
    let Scenario::Chat {
        common,
        rate,
        ramp_up,
        ..
    } = &mut chat.scenario
    else {
        unreachable!()
    };
    common.server = vec![
        "127.0.0.1:14433".parse().unwrap(),
        "127.0.0.1:14434".parse().unwrap(),
    ];
    common.ca = Some("/tmp/ca.pem".into());
    common.keep_alive = Duration::from_secs(30);
    *rate = 10_000.0;
    *ramp_up = Duration::from_secs(90);
    let args = chat.to_args();
    assert_eq!(parse(&args), chat);
    let line = args.join(" ");
    assert!(
        line.contains("--server 127.0.0.1:14433,127.0.0.1:14434"),
        "{line}"
    );
    assert!(line.contains("--ramp-up 1m30s"), "{line}");
    assert!(line.contains("--keep-alive 30s"), "{line}");
    for unset in [
        "--server-pid",
        "--cert-sha256",
        "--json",
        "--quiet",
        "--threads",
    ] {
        assert!(!line.contains(unset), "{line}");
    }

    // An option set to its default value is left out and still parses
    // back to the same value.
    let mut connect = defaults("connect");
    common_of(&mut connect).sessions = 100;
    assert_eq!(connect.to_args(), vec!["connect".to_owned()]);
    assert_eq!(parse(&connect.to_args()), connect);
}

#[test]
fn durations_are_written_without_spaces() {
    let mut chat = defaults("chat");
    if let Scenario::Chat { duration, .. } = &mut chat.scenario {
        *duration = Duration::from_secs(90);
    }
    let args = chat.to_args();
    assert_eq!(args, ["chat", "--duration", "1m30s"]);
    assert_eq!(parse(&args), chat);
}

#[test]
fn the_old_name_of_the_driver_client_is_still_accepted() {
    let with_client =
        |scenario: &str, client: &str| parse(&[scenario.into(), "--client".into(), client.into()]);
    let mut cli = with_client("connect", "lean");
    assert_eq!(common_of(&mut cli).client, ClientKind::Driver);
    assert_eq!(defaults("chat"), with_client("chat", "driver"));
}

#[test]
fn default_common_options_are_the_command_lines_defaults() {
    let mut connect = defaults("connect");
    assert_eq!(*common_of(&mut connect), Common::default());
    assert_eq!(Common::default().client, ClientKind::Driver);
}

#[test]
fn the_json_report_path_is_found_in_every_scenario() {
    for cli in every_scenario_with_options_set() {
        let (json, quiet) = cli.output();
        assert!(
            json.is_some() && json == cli.json_report() && quiet,
            "{cli:?}"
        );
    }
    assert_eq!(defaults("chat").json_report(), None);
}
