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

/// Every option of `common` away from its default.
fn set_every_common_option(common: &mut Common) {
    common.server = vec![
        "127.0.0.1:14433".parse().unwrap(),
        "[::1]:14434".parse().unwrap(),
    ];
    common.cert_sha256 = Some("ab".repeat(32));
    common.secret_file = Some("/tmp/bench dir/secret".into());
    common.sessions = 10_000;
    common.connect_rate = 6_000.5;
    common.max_inflight = 64;
    common.client = ClientKind::Sdk;
    common.endpoints = 3;
    common.local_addr = vec!["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()];
    common.user_prefix = "-chat-2000-".into();
    common.keep_alive = Duration::from_secs(90);
    common.server_name = "router.example".into();
    common.json = Some("/tmp/chat-2000.json".into());
    common.quiet = true;
}

fn every_scenario_with_options_set() -> Vec<Cli> {
    let mut values = Vec::new();
    let mut connect = defaults("connect");
    set_every_common_option(common_of(&mut connect));
    if let Scenario::Connect { hold, .. } = &mut connect.scenario {
        *hold = Duration::from_secs(90);
    }
    connect.threads = 1;
    values.push(connect);

    let mut chat = defaults("chat");
    set_every_common_option(common_of(&mut chat));
    if let Scenario::Chat {
        rate,
        duration,
        payload,
        drain,
        ramp_up,
        server_pid,
        ..
    } = &mut chat.scenario
    {
        *rate = 2_500.25;
        *duration = Duration::from_millis(90_500);
        *payload = 200;
        *drain = Duration::from_secs(3_600 + 1);
        *ramp_up = Duration::from_secs(5);
        *server_pid = Some(4242);
    }
    values.push(chat);

    let mut rooms = defaults("rooms");
    set_every_common_option(common_of(&mut rooms));
    if let Scenario::Rooms {
        group,
        rate,
        duration,
        payload,
        server_pid,
        ..
    } = &mut rooms.scenario
    {
        *group = 100;
        *rate = 100.0;
        *duration = Duration::from_secs(20);
        *payload = 20;
        *server_pid = Some(1);
    }
    values.push(rooms);

    let mut churn = defaults("churn");
    set_every_common_option(common_of(&mut churn));
    if let Scenario::Churn {
        rate,
        reconnect_rate,
        duration,
        payload,
        server_pid,
        ..
    } = &mut churn.scenario
    {
        *rate = 5_000.0;
        *reconnect_rate = 200.0;
        *duration = Duration::from_secs(30);
        *payload = 81;
        *server_pid = Some(77);
    }
    values.push(churn);

    let mut presence = defaults("presence");
    set_every_common_option(common_of(&mut presence));
    if let Scenario::Presence {
        rate,
        duration,
        watch,
        ..
    } = &mut presence.scenario
    {
        *rate = 50.0;
        *duration = Duration::from_millis(1_500);
        *watch = 5;
    }
    values.push(presence);

    values.push(Cli {
        scenario: Scenario::NatsChat {
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
        threads: 2,
    });
    values
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
    if let Scenario::Chat {
        common,
        rate,
        ramp_up,
        ..
    } = &mut chat.scenario
    {
        common.server = vec![
            "127.0.0.1:14433".parse().unwrap(),
            "127.0.0.1:14434".parse().unwrap(),
        ];
        common.ca = Some("/tmp/ca.pem".into());
        common.keep_alive = Duration::from_secs(30);
        *rate = 10_000.0;
        *ramp_up = Duration::from_secs(90);
    }
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
    let cli = parse(&["connect".into(), "--client".into(), "lean".into()]);
    let Scenario::Connect { common, .. } = &cli.scenario else {
        panic!("{cli:?}");
    };
    assert_eq!(common.client, ClientKind::Driver);
    assert_eq!(defaults("chat"), cli_with_client("chat", "driver"));
}

fn cli_with_client(scenario: &str, client: &str) -> Cli {
    parse(&[scenario.into(), "--client".into(), client.into()])
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
        assert!(cli.json_report().is_some(), "{cli:?}");
    }
    assert_eq!(defaults("chat").json_report(), None);
}
