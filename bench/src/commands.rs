//! The load generator's command line for each standard step, built as
//! [`switchboard_loadtest::cli::Cli`] values (their argv comes from
//! [`Cli::to_args`]), and the command as the report shows it: the same
//! arguments with fingerprints, secrets, file paths and process ids masked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_loadtest::cli::{Cli, Common, Scenario};

use crate::target::{RouterTarget, Target};
use crate::BenchCli;

/// Every Switchboard session keeps alive every 30 s, as a mobile client
/// would: at 100k sessions a 10 s keep-alive alone is 10,000 pings a
/// second. (nats clients keep their own ping interval.)
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Payload bytes of every message.
const PAYLOAD_BYTES: usize = 80;
/// How long a chat step waits after its last send for messages in flight.
const DRAIN: Duration = Duration::from_secs(10);
/// Members per room in the rooms step.
const ROOM_MEMBERS: usize = 100;
/// Messages sent per second in the rooms step (each to 99 members).
const ROOMS_RATE: f64 = 100.0;
/// Sessions dropped and resumed per second in the churn step.
const CHURN_RECONNECTS_PER_S: f64 = 200.0;

/// Arguments whose values the report does not show, and what it shows
/// instead.
const MASKED: [(&str, &str); 6] = [
    ("--cert-sha256", "<fingerprint>"),
    ("--secret-file", "<secret file>"),
    ("--ca", "<ca file>"),
    ("--nats-ca", "<ca file>"),
    ("--json", "<report file>"),
    ("--server-pid", "<pid>"),
];

/// Builds the steps' command lines for one run.
pub(crate) struct Commands<'a> {
    cli: &'a BenchCli,
    /// The work directory, where each step writes its JSON report.
    dir: &'a Path,
}

impl<'a> Commands<'a> {
    /// Command lines for the run `cli` describes, reporting into `dir`.
    pub(crate) fn new(cli: &'a BenchCli, dir: &'a Path) -> Commands<'a> {
        Commands { cli, dir }
    }

    /// `connect`: `--connect-sessions` held for `--hold`.
    pub(crate) fn connect(&self, router: &RouterTarget, step: &str) -> Cli {
        self.with_threads(Scenario::Connect {
            common: self.common(router, step, self.cli.connect_sessions),
            hold: self.cli.hold,
        })
    }

    /// One chat rung at `rate` with `sessions`: `chat` against a router,
    /// `nats-chat` against nats-server, both with the server's pid.
    pub(crate) fn chat(&self, target: &Target, step: &str, sessions: usize, rate: f64) -> Cli {
        let cli = self.cli;
        let scenario = match target {
            Target::Switchboard(router) => Scenario::Chat {
                common: self.common(router, step, sessions),
                rate,
                duration: cli.chat_duration,
                payload: PAYLOAD_BYTES,
                drain: DRAIN,
                ramp_up: cli.chat_ramp_up,
                server_pid: Some(router.pid),
            },
            Target::Nats(nats) => Scenario::NatsChat {
                nats_url: nats.url.clone(),
                nats_ca: Some(nats.ca.clone()),
                sessions,
                connect_rate: cli.connect_rate,
                // The same bound on connects in flight as Switchboard's.
                max_inflight: Common::default().max_inflight,
                rate,
                duration: cli.chat_duration,
                payload: PAYLOAD_BYTES,
                ramp_up: cli.chat_ramp_up,
                server_pid: Some(nats.pid),
                json: Some(self.report_path(step)),
                quiet: true,
            },
        };
        self.with_threads(scenario)
    }

    /// `rooms`: `--chat-sessions` in rooms of 100, 100 messages a second.
    pub(crate) fn rooms(&self, router: &RouterTarget, step: &str) -> Cli {
        self.with_threads(Scenario::Rooms {
            common: self.common(router, step, self.cli.chat_sessions),
            group: ROOM_MEMBERS,
            rate: ROOMS_RATE,
            duration: self.cli.chat_duration,
            payload: PAYLOAD_BYTES,
            server_pid: Some(router.pid),
        })
    }

    /// `churn`: chat at `rate` while 200 sessions a second drop and resume.
    pub(crate) fn churn(&self, router: &RouterTarget, step: &str, rate: f64) -> Cli {
        self.with_threads(Scenario::Churn {
            common: self.common(router, step, self.cli.chat_sessions),
            rate,
            reconnect_rate: CHURN_RECONNECTS_PER_S,
            duration: self.cli.chat_duration,
            payload: PAYLOAD_BYTES,
            server_pid: Some(router.pid),
        })
    }

    /// Where step `step` writes its report.
    fn report_path(&self, step: &str) -> PathBuf {
        self.dir.join(format!("{step}.json"))
    }

    /// The session options of a Switchboard step: its own user prefix
    /// (inboxes and rooms outlive sessions on the router), the 30 s
    /// keep-alive, the router's address, certificate and secret.
    fn common(&self, router: &RouterTarget, step: &str, sessions: usize) -> Common {
        Common {
            server: vec![router.addr],
            cert_sha256: Some(router.fingerprint.clone()),
            secret_file: Some(router.secret_file.clone()),
            sessions,
            connect_rate: self.cli.connect_rate,
            user_prefix: format!("{step}-"),
            keep_alive: KEEP_ALIVE,
            json: Some(self.report_path(step)),
            quiet: true,
            ..Common::default()
        }
    }

    fn with_threads(&self, scenario: Scenario) -> Cli {
        Cli {
            scenario,
            threads: self.cli.threads_each(),
        }
    }
}

/// `switchboard-load ARGS` as the report shows it: the values of
/// [`MASKED`] arguments replaced, arguments with spaces quoted.
pub(crate) fn shown_command(args: &[String]) -> String {
    let mask_of = |flag: &str| MASKED.iter().find(|(f, _)| *f == flag).map(|(_, m)| *m);
    let mut shown = vec!["switchboard-load".to_owned()];
    let mut mask_next: Option<&str> = None;
    for arg in args {
        if let Some(mask) = mask_next.take() {
            shown.push(mask.to_owned());
            continue;
        }
        if let Some((flag, _)) = arg.split_once('=') {
            if let Some(mask) = mask_of(flag) {
                shown.push(format!("{flag}={mask}"));
                continue;
            }
        }
        mask_next = mask_of(arg);
        shown.push(if arg.is_empty() || arg.contains(char::is_whitespace) {
            format!("'{arg}'")
        } else {
            arg.clone()
        });
    }
    shown.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    /// The default run's commands, with one thread, reporting into `dir`.
    fn commands(dir: &'static str) -> Commands<'static> {
        let cli = BenchCli::try_parse_from(["switchboard-bench", "--threads-each", "1"]).unwrap();
        Commands::new(Box::leak(Box::new(cli)), Path::new(dir))
    }

    fn router() -> RouterTarget {
        RouterTarget {
            pid: 4242,
            addr: "127.0.0.1:14433".parse().unwrap(),
            fingerprint: "ab".repeat(32),
            secret_file: "/work/secret".into(),
        }
    }

    fn parse(cli: &Cli) -> Cli {
        let argv = ["switchboard-load".to_owned()]
            .into_iter()
            .chain(cli.to_args());
        Cli::try_parse_from(argv).unwrap()
    }

    #[test]
    fn a_chat_rung_against_the_router_reads_as_before_with_the_servers_pid() {
        let chat =
            commands("/work").chat(&Target::Switchboard(router()), "chat-2000", 10_000, 2_000.0);
        assert_eq!(parse(&chat), chat);
        assert_eq!(chat.json_report(), Some(Path::new("/work/chat-2000.json")));
        assert_eq!(
            shown_command(&chat.to_args()),
            "switchboard-load chat --server 127.0.0.1:14433 --cert-sha256 <fingerprint> \
             --secret-file <secret file> --sessions 10000 --connect-rate 6000 \
             --user-prefix chat-2000- --keep-alive 30s --json <report file> --quiet \
             --rate 2000 --ramp-up 5s --server-pid <pid> --threads 1"
        );
    }

    #[test]
    fn a_nats_rung_names_the_server_and_its_pid() {
        let nats = Target::Nats(crate::target::NatsTarget {
            pid: 77,
            url: "tls://localhost:14222".into(),
            ca: "/work/nats-tls/cert.pem".into(),
        });
        let chat = commands("/work").chat(&nats, "nats-chat-5000", 10_000, 5_000.0);
        assert_eq!(parse(&chat), chat);
        assert!(chat.to_args().join(" ").contains("--server-pid 77"));
        let shown = shown_command(&chat.to_args());
        assert!(
            shown.starts_with(
                "switchboard-load nats-chat --nats-url tls://localhost:14222 --nats-ca <ca file> "
            ),
            "{shown}"
        );
        assert!(!shown.contains("/work"), "{shown}");
    }

    #[test]
    fn every_standard_step_parses_back_and_shows_no_secret() {
        let commands = commands("/work dir");
        let router = router();
        for command in [
            commands.connect(&router, "connect"),
            commands.rooms(&router, "rooms-100"),
            commands.churn(&router, "churn", 1_000.0),
        ] {
            assert_eq!(parse(&command), command);
            let shown = shown_command(&command.to_args());
            assert!(!shown.contains("abab"), "{shown}");
            assert!(!shown.contains("/work"), "{shown}");
            assert!(shown.contains("--keep-alive 30s"), "{shown}");
        }
    }

    #[test]
    fn masking_covers_the_equals_form_and_quotes_spaces() {
        let args: Vec<String> = [
            "chat",
            "--json=/x.json",
            "--user-prefix",
            "a b",
            "--ca",
            "/ca.pem",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            shown_command(&args),
            "switchboard-load chat --json=<report file> --user-prefix 'a b' --ca <ca file>"
        );
    }
}
