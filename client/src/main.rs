//! `switchboard-cli`: talk to a Switchboard router from a terminal: send,
//! listen, set status, watch users, or chat interactively.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use switchboard_client::{Client, ConnectOptions, Event, Events, Status, Trust};
use tokio::io::AsyncBufReadExt;

#[derive(Parser)]
#[command(
    name = "switchboard-cli",
    version,
    about = "Switchboard command-line client"
)]
struct Cli {
    #[command(flatten)]
    connection: ConnectionArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConnectionArgs {
    /// Router QUIC address.
    #[arg(
        long,
        env = "SWITCHBOARD_SERVER",
        default_value = "127.0.0.1:4433",
        global = true
    )]
    server: SocketAddr,
    /// PEM file of the CA (or the server's self-signed certificate) to trust.
    /// Default when neither --ca nor --cert-sha256 is given: the dev
    /// certificate of a `switchboard serve` on this machine.
    #[arg(
        long,
        env = "SWITCHBOARD_CA",
        conflicts_with = "cert_sha256",
        global = true
    )]
    ca: Option<PathBuf>,
    /// SHA-256 fingerprint (64 hex digits) of the server certificate to pin.
    #[arg(long, env = "SWITCHBOARD_CERT_SHA256", global = true)]
    cert_sha256: Option<String>,
    /// Token (from `switchboard token --user NAME`).
    #[arg(long, env = "SWITCHBOARD_TOKEN", global = true)]
    token: Option<String>,
    /// Stable device id; default `cli-<pid>` so concurrent CLIs of one user
    /// are separate devices.
    #[arg(long, env = "SWITCHBOARD_DEVICE", global = true)]
    device: Option<String>,
    /// TLS server name.
    #[arg(long, default_value = "localhost", global = true)]
    server_name: String,
}

#[derive(Subcommand)]
enum Command {
    /// Send one message and print its result.
    Send {
        /// Recipient user id.
        #[arg(long)]
        to: String,
        /// Message text.
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Print incoming messages and presence events until interrupted.
    Listen {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Set this user's status, then disconnect this device.
    Status {
        /// The status.
        status: StatusArg,
        /// Optional status text.
        text: Option<String>,
    },
    /// Watch users and print their presence changes until interrupted.
    Watch {
        /// Users to watch.
        #[arg(required = true)]
        users: Vec<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Interactive chat: lines typed are sent, incoming messages shown.
    Chat {
        /// The user to chat with.
        #[arg(long)]
        to: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusArg {
    Online,
    Away,
    Busy,
    Invisible,
}

impl From<StatusArg> for Status {
    fn from(arg: StatusArg) -> Status {
        match arg {
            StatusArg::Online => Status::Online,
            StatusArg::Away => Status::Away,
            StatusArg::Busy => Status::Busy,
            StatusArg::Invisible => Status::Invisible,
        }
    }
}

impl ConnectionArgs {
    async fn connect(&self) -> anyhow::Result<(Client, Events)> {
        let trust = match (&self.ca, &self.cert_sha256) {
            (Some(ca), _) => Trust::CaFile(ca.clone()),
            (None, Some(pin)) => Trust::fingerprint_hex(pin)?,
            (None, None) => Trust::CaFile(
                switchboard_proto::dev::default_dir().join(switchboard_proto::dev::CERT_FILE),
            ),
        };
        let token = self
            .token
            .clone()
            .context("a token is required: --token or SWITCHBOARD_TOKEN (see `switchboard token --user NAME`)")?;
        let device = self
            .device
            .clone()
            .unwrap_or_else(|| format!("cli-{}", std::process::id()));
        let mut options = ConnectOptions::new(self.server, trust, token, device);
        options.server_name = self.server_name.clone();
        Client::connect(options).await.context("connecting")
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (client, mut events) = cli.connection.connect().await?;
    match cli.command {
        Command::Send { to, text } => {
            let result = client.send(&to, text.join(" ").into_bytes()).await?;
            let outcome = describe_result(&result);
            client.close().await;
            match outcome {
                Ok(line) => println!("{line}"),
                Err(line) => anyhow::bail!(line),
            }
        }
        Command::Listen { json } => {
            print_events(&mut events, json).await;
        }
        Command::Status { status, text } => {
            client
                .set_status(status.into(), text.as_deref().unwrap_or(""))
                .await?;
            // A ping round trip proves the status was processed (or an error arrived).
            client.ping().await?;
            let mut error = None;
            while let Ok(Some(event)) =
                tokio::time::timeout(std::time::Duration::from_millis(50), events.next()).await
            {
                if let Event::Error(e) = event {
                    error = Some(e.message);
                }
            }
            client.close().await;
            if let Some(message) = error {
                anyhow::bail!("status refused: {message}");
            }
            println!("status set");
        }
        Command::Watch { users, json } => {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            client.watch(&users).await?;
            print_events(&mut events, json).await;
        }
        Command::Chat { to } => chat(client, events, &to).await?,
    }
    Ok(())
}

fn describe_result(result: &switchboard_client::SendResult) -> Result<String, String> {
    match switchboard_client::ErrorCode::try_from(result.error) {
        Ok(switchboard_client::ErrorCode::None) => Ok(format!(
            "routed: message {} to {} device(s)",
            result.message_id, result.devices
        )),
        Ok(code) => Err(format!("not routed: {}", code.as_str_name())),
        Err(_) => Err(format!("not routed: error {}", result.error)),
    }
}

async fn print_events(events: &mut Events, json: bool) {
    while let Some(event) = events.next().await {
        let closed = matches!(event, Event::Closed(_));
        println!(
            "{}",
            if json {
                event_json(&event)
            } else {
                event_text(&event)
            }
        );
        if closed {
            break;
        }
    }
}

fn status_name(status: i32) -> &'static str {
    match Status::try_from(status) {
        Ok(Status::Online) => "online",
        Ok(Status::Away) => "away",
        Ok(Status::Busy) => "busy",
        Ok(Status::Invisible) => "invisible",
        _ => "offline",
    }
}

fn receipt_name(kind: i32) -> &'static str {
    match switchboard_client::ReceiptKind::try_from(kind) {
        Ok(switchboard_client::ReceiptKind::Delivered) => "received",
        Ok(switchboard_client::ReceiptKind::Read) => "read",
        _ => "sent an unknown receipt for",
    }
}

fn signal_name(kind: i32) -> &'static str {
    match switchboard_client::SignalKind::try_from(kind) {
        Ok(switchboard_client::SignalKind::Typing) => "is typing",
        Ok(switchboard_client::SignalKind::StoppedTyping) => "stopped typing",
        _ => "sent an unknown signal",
    }
}

fn event_text(event: &Event) -> String {
    match event {
        Event::InboxOpened(o) => format!(
            "inbox epoch {}: continuing after #{} (latest #{}){}",
            o.epoch,
            o.resume_after,
            o.last_seq,
            if o.epoch_changed {
                "; the resume point was from another epoch"
            } else {
                ""
            }
        ),
        Event::Message(d) => {
            let m = d.message.clone().unwrap_or_default();
            let to = if m.room.is_empty() {
                m.to_user.clone()
            } else {
                format!("room {}", m.room)
            };
            match &m.receipt {
                Some(r) => format!(
                    "#{} {}/{} {} message {}",
                    d.seq,
                    m.from_user,
                    m.from_device,
                    receipt_name(r.kind),
                    r.message_id
                ),
                None => format!(
                    "#{} [{}/{} -> {}] {}",
                    d.seq,
                    m.from_user,
                    m.from_device,
                    to,
                    String::from_utf8_lossy(&m.payload)
                ),
            }
        }
        Event::Gap(g) => format!("messages #{}..=#{} are gone", g.from_seq, g.to_seq),
        Event::Signal { signal, .. } => format!(
            "{}/{} {} {}",
            signal.from_user,
            signal.from_device,
            signal_name(signal.kind),
            if signal.room.is_empty() {
                String::new()
            } else {
                format!("in {}", signal.room)
            }
        ),
        Event::Presence(p) => {
            let mut line = format!("presence {}: {}", p.user_id, status_name(p.status));
            if !p.text.is_empty() {
                line.push_str(&format!(" \"{}\"", p.text));
            }
            if p.last_seen_ms > 0 {
                line.push_str(&format!(" (last seen {} ms)", p.last_seen_ms));
            }
            line.push_str(&format!(" v{}", p.version));
            line
        }
        Event::Error(e) => format!("error {}: {}", e.code, e.message),
        Event::GoAway(g) => format!("server going away: {}", g.reason),
        Event::Closed(Some(info)) => format!("closed: {info}"),
        Event::Closed(None) => "closed".into(),
    }
}

fn event_json(event: &Event) -> String {
    let value = match event {
        Event::InboxOpened(o) => serde_json::json!({
            "type": "inbox_opened",
            "epoch": o.epoch,
            "resume_after": o.resume_after,
            "last_seq": o.last_seq,
            "epoch_changed": o.epoch_changed,
        }),
        Event::Message(d) => {
            let m = d.message.clone().unwrap_or_default();
            serde_json::json!({
                "type": "message",
                "seq": d.seq,
                "message_id": m.message_id,
                "from": m.from_user,
                "from_device": m.from_device,
                "to": m.to_user,
                "text": String::from_utf8_lossy(&m.payload),
                "sent_at_ms": m.sent_at_ms,
                "client_msg_id": m.client_msg_id,
                "room": m.room,
                "want_receipts": m.want_receipts,
                "receipt": m.receipt.as_ref().map(|r| serde_json::json!({
                    "message_id": r.message_id,
                    "kind": receipt_name(r.kind),
                })),
            })
        }
        Event::Gap(g) => serde_json::json!({
            "type": "gap",
            "from_seq": g.from_seq,
            "to_seq": g.to_seq,
        }),
        Event::Signal {
            signal,
            via_datagram,
        } => serde_json::json!({
            "type": "signal",
            "kind": signal_name(signal.kind),
            "from": signal.from_user,
            "from_device": signal.from_device,
            "to": signal.to_user,
            "room": signal.room,
            "version": signal.version,
            "expires_in_ms": signal.expires_in_ms,
            "via_datagram": via_datagram,
        }),
        Event::Presence(p) => serde_json::json!({
            "type": "presence",
            "user": p.user_id,
            "status": status_name(p.status),
            "text": p.text,
            "version": p.version,
            "last_seen_ms": p.last_seen_ms,
        }),
        Event::Error(e) => {
            serde_json::json!({"type": "error", "ref": e.r#ref, "code": e.code, "message": e.message})
        }
        Event::GoAway(g) => serde_json::json!({"type": "go_away", "reason": g.reason}),
        Event::Closed(info) => serde_json::json!({
            "type": "closed",
            "code": info.as_ref().map(|i| i.code),
            "reason": info.as_ref().map(|i| i.reason.clone()),
        }),
    };
    value.to_string()
}

async fn chat(client: Client, mut events: Events, to: &str) -> anyhow::Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    println!("chatting with {to}; type a line to send it, Ctrl-D to quit");
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    let result = client.send(to, line.into_bytes()).await?;
                    if let Err(why) = describe_result(&result) {
                        println!("! {why}");
                    }
                }
                None => break,
            },
            event = events.next() => match event {
                Some(event @ Event::Closed(_)) => {
                    println!("{}", event_text(&event));
                    return Ok(());
                }
                Some(event) => println!("{}", event_text(&event)),
                None => return Ok(()),
            },
        }
    }
    client.close().await;
    Ok(())
}
