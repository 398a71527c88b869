//! `switchboard-cli`: talk to a Switchboard router from a terminal: send,
//! listen, chat with a user or in a room, set status, watch users, manage
//! rooms. [`args`] holds the command line, [`render`] how events read;
//! this file connects and runs one command.
//!
//! A command that follows the session (`listen`, `watch`, `chat`) ends on
//! Ctrl-C with a normal close, so the server sees the device leave at once;
//! when the server goes away or closes the session it exits non-zero with
//! the reason. Exit codes: 0 done, 1 an error (printed on stderr), 2 a
//! command-line mistake.

mod args;
mod render;

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use switchboard_client::{
    Client, ClientError, CloseCode, ConnectOptions, Event, Events, Status, Trust,
};
use switchboard_proto::dev;
use tokio::io::AsyncBufReadExt;

use args::{Cli, Command, ConnectionArgs, Peer, RoomCommand};
use render::{event_json, event_text, room_outcome, send_outcome};

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
    cli.command.check_ids()?;
    // The commands that follow the session ack what reaches it (each device
    // has its own place in the inbox, so this takes nothing from the user's
    // other devices); a session that held messages unacked would be closed
    // as a slow consumer after the server's ack timeout. `watch` shows none
    // of them.
    let follows = matches!(
        cli.command,
        Command::Listen { .. } | Command::Chat { .. } | Command::Watch { .. }
    );
    let (client, events) = cli.connection.connect(follows).await?;
    match cli.command {
        Command::Send { peer, text } => {
            let text = text.join(" ").into_bytes();
            let result = match &peer.room {
                Some(room) => client.send_to_room(room, text, "").await?,
                None => client.send(peer.to.as_deref().unwrap_or(""), text).await?,
            };
            client.close().await;
            println!(
                "{}",
                send_outcome(&result, &peer.describe()).map_err(anyhow::Error::msg)?
            );
        }
        Command::Listen { json } => follow(client, events, Follow::Listen { json }).await?,
        Command::Status { status, text } => set_status(client, events, status.into(), text).await?,
        Command::Watch { users, json } => {
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            client.watch(&users).await?;
            follow(client, events, Follow::Watch { json }).await?
        }
        Command::Chat { peer } => follow(client, events, Follow::Chat(peer)).await?,
        Command::Room(command) => {
            let outcome = room(&client, command).await;
            client.close().await;
            println!("{}", outcome?);
        }
    }
    Ok(())
}

impl ConnectionArgs {
    /// Resolves the server, connects and authenticates; every way this can
    /// fail says what to check.
    async fn connect(&self, auto_ack: bool) -> anyhow::Result<(Client, Events)> {
        let token = self
            .token
            .clone()
            .filter(|t| !t.trim().is_empty())
            .context(
                "a token is required: mint one with `switchboard token --user NAME` \
                 and pass it with --token or SWITCHBOARD_TOKEN",
            )?;
        let trust = match (&self.ca, &self.cert_sha256) {
            (Some(ca), _) => Trust::CaFile(ca.clone()),
            (None, Some(pin)) => Trust::fingerprint_hex(pin)?,
            (None, None) => {
                let cert = dev::default_dir().join(dev::CERT_FILE);
                anyhow::ensure!(
                    cert.exists(),
                    "no dev certificate at {}: start `switchboard serve` on this machine \
                     first (it writes one there), or pass --ca FILE or --cert-sha256 HEX",
                    cert.display()
                );
                Trust::CaFile(cert)
            }
        };
        let server = resolve(&self.server).await?;
        let device = self
            .device
            .clone()
            .unwrap_or_else(|| format!("cli-{}", std::process::id()));
        let mut options = ConnectOptions::new(server, trust, token, device);
        options.server_name = self.server_name.clone();
        options.auto_ack = auto_ack;
        Client::connect(options)
            .await
            .map_err(|error| match &error {
                // What went wrong first, then what to do about it.
                ClientError::NoAnswer { .. } => anyhow::anyhow!(
                    "{error}: is `switchboard serve` running and listening on UDP {server}? \
                 Check --server (or SWITCHBOARD_SERVER) and that no firewall drops UDP"
                ),
                ClientError::Closed(info)
                    if matches!(
                        info.known,
                        Some(CloseCode::TokenInvalid | CloseCode::TokenExpired)
                    ) =>
                {
                    anyhow::anyhow!(
                        "{error}: mint a fresh token with `switchboard token --user NAME`, \
                     signed with the server's secret"
                    )
                }
                _ => anyhow::Error::new(error)
                    .context(format!("connecting to {} ({server})", self.server)),
            })
    }
}

/// `HOST:PORT` to one address: an IP address as it is, a host name to its
/// first IPv4 address (a dev server listens on 127.0.0.1), else its first
/// IPv6 one.
async fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = server.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(server)
        .await
        .with_context(|| {
            format!("--server {server:?}: expected HOST:PORT, such as 127.0.0.1:4433")
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("--server {server:?}: the name has no address"))
}

async fn set_status(
    client: Client,
    mut events: Events,
    status: Status,
    text: Option<String>,
) -> anyhow::Result<()> {
    let text = text.unwrap_or_default();
    let limit = client.welcome().max_status_text_bytes as usize;
    if text.len() > limit {
        client.close().await;
        anyhow::bail!(
            "the status text is {} bytes; this server allows at most {limit}",
            text.len()
        );
    }
    client.set_status(status, &text).await?;
    // The answer to a ping comes after any error about the status.
    client.ping().await?;
    let mut refused = None;
    while let Ok(Some(event)) =
        tokio::time::timeout(std::time::Duration::from_millis(50), events.next()).await
    {
        if let Event::Error(e) = event {
            refused = Some(e.message);
            break;
        }
    }
    client.close().await;
    match refused {
        Some(message) => anyhow::bail!("status refused: {message}"),
        None => {
            println!("status set");
            Ok(())
        }
    }
}

async fn room(client: &Client, command: RoomCommand) -> anyhow::Result<String> {
    let joining = matches!(command, RoomCommand::Join { .. });
    let outcome = match command {
        RoomCommand::Create { room, open } => {
            let done = if open { "created, open" } else { "created" };
            room_outcome(&client.create_room(&room, open).await?, done)
        }
        RoomCommand::Join { room, user } | RoomCommand::Leave { room, user } => {
            let user = user.unwrap_or_default();
            let done = match (joining, user.is_empty()) {
                (true, true) => "joined".to_owned(),
                (true, false) => format!("added {user}"),
                (false, true) => "left".to_owned(),
                (false, false) => format!("removed {user}"),
            };
            let result = if joining {
                client.join_room(&room, &user).await?
            } else {
                client.leave_room(&room, &user).await?
            };
            room_outcome(&result, &done)
        }
        RoomCommand::Members { room } => {
            let members = client.list_members(&room).await?;
            if members.error != switchboard_client::ErrorCode::None as i32 {
                Err(format!(
                    "room {room}: {}",
                    render::error_words(members.error)
                ))
            } else {
                let owner = if members.owner.is_empty() {
                    "none".into()
                } else {
                    members.owner
                };
                Ok(format!(
                    "room {room} ({}, owner {owner}): {}",
                    if members.open { "open" } else { "closed" },
                    members.members.join(", ")
                ))
            }
        }
    };
    outcome.map_err(anyhow::Error::msg)
}

/// What a command that follows the session shows and reads.
enum Follow {
    /// Every event.
    Listen { json: bool },
    /// Presence only (and why a watch was refused, which ends it).
    Watch { json: bool },
    /// Every event, and lines from stdin sent to the peer.
    Chat(Peer),
}

/// Shows events until Ctrl-C (or end of input in a chat), then closes
/// normally. GoAway, a close by the server or a lost connection end it
/// with an error that says so.
async fn follow(client: Client, mut events: Events, mode: Follow) -> anyhow::Result<()> {
    let welcome = client.welcome();
    match &mode {
        Follow::Chat(peer) => eprintln!(
            "chatting with {} as {}; type a line to send it, Ctrl-D to quit",
            peer.describe(),
            welcome.user_id
        ),
        _ => eprintln!("connected as {}; Ctrl-C to stop", welcome.user_id),
    }
    let json = matches!(
        mode,
        Follow::Listen { json: true } | Follow::Watch { json: true }
    );
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            line = stdin.next_line(), if matches!(mode, Follow::Chat(_)) => {
                let Follow::Chat(peer) = &mode else { unreachable!() };
                match line? {
                    Some(line) if line.trim().is_empty() => {}
                    Some(line) => {
                        let text = line.into_bytes();
                        let result = match &peer.room {
                            Some(room) => client.send_to_room(room, text, "").await?,
                            None => client.send(peer.to.as_deref().unwrap_or(""), text).await?,
                        };
                        if let Err(why) = send_outcome(&result, &peer.describe()) {
                            eprintln!("! {why}");
                        }
                    }
                    None => break,
                }
            }
            event = events.next() => {
                let event = event.unwrap_or(Event::Closed(None));
                // The end of the session is said once, as the error below.
                let shown = match (&mode, &event) {
                    (_, Event::GoAway(_) | Event::Closed(_)) => json,
                    (Follow::Watch { .. }, Event::Presence(_) | Event::Error(_)) => true,
                    (Follow::Watch { .. }, _) => false,
                    _ => true,
                };
                if shown {
                    if json {
                        println!("{}", event_json(&event));
                    } else if let Some(line) = event_text(&event) {
                        println!("{line}");
                    }
                }
                match event {
                    Event::GoAway(go_away) => {
                        client.close().await;
                        anyhow::bail!(
                            "the server is shutting down ({}); disconnected, reconnect later",
                            go_away.reason
                        );
                    }
                    Event::Closed(_) => anyhow::bail!(
                        "{}",
                        event_text(&event).expect("a close has a line")
                    ),
                    Event::Error(error) if matches!(mode, Follow::Watch { .. }) => {
                        client.close().await;
                        anyhow::bail!("watch refused: {}", error.message);
                    }
                    _ => {}
                }
            }
        }
    }
    client.close().await;
    Ok(())
}
