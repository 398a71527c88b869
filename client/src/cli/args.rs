//! The command line of `switchboard-cli`: [`Cli`] with the connection
//! options every command shares ([`ConnectionArgs`]) and one [`Command`]
//! per thing a user does, checked before anything is sent.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use switchboard_client::Status;
use switchboard_proto::ident::{is_valid_id, MAX_ID_BYTES};

#[derive(Parser)]
#[command(
    name = "switchboard-cli",
    version,
    about = "Switchboard command-line client: send, listen, chat, watch presence, manage rooms"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args)]
pub(crate) struct ConnectionArgs {
    /// The router's QUIC address, HOST:PORT (a host name resolves to its
    /// first IPv4 address, else its first IPv6 one).
    #[arg(
        long,
        env = "SWITCHBOARD_SERVER",
        default_value = "127.0.0.1:4433",
        global = true
    )]
    pub(crate) server: String,
    /// PEM file of the CA (or the server's self-signed certificate) to trust.
    /// Default when neither --ca nor --cert-sha256 is given: the dev
    /// certificate of a `switchboard serve` on this machine.
    #[arg(
        long,
        env = "SWITCHBOARD_CA",
        conflicts_with = "cert_sha256",
        global = true
    )]
    pub(crate) ca: Option<PathBuf>,
    /// SHA-256 fingerprint (64 hex digits) of the server certificate to pin.
    #[arg(long, env = "SWITCHBOARD_CERT_SHA256", global = true)]
    pub(crate) cert_sha256: Option<String>,
    /// Token (from `switchboard token --user NAME`).
    #[arg(long, env = "SWITCHBOARD_TOKEN", global = true)]
    pub(crate) token: Option<String>,
    /// Stable device id; default `cli-<pid>` so concurrent CLIs of one user
    /// are separate devices.
    #[arg(long, env = "SWITCHBOARD_DEVICE", global = true)]
    pub(crate) device: Option<String>,
    /// TLS server name.
    #[arg(long, default_value = "localhost", global = true)]
    pub(crate) server_name: String,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Send one message to a user or a room and print its result.
    Send {
        #[command(flatten)]
        peer: Peer,
        /// Message text.
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Print incoming messages (and acknowledge them) until interrupted.
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
    /// Interactive chat with a user or in a room: lines typed are sent,
    /// incoming messages shown.
    Chat {
        #[command(flatten)]
        peer: Peer,
    },
    /// Create, join, leave and list rooms.
    #[command(subcommand)]
    Room(RoomCommand),
}

/// Who a message goes to: exactly one of a user and a room.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub(crate) struct Peer {
    /// The user to write to.
    #[arg(long)]
    pub(crate) to: Option<String>,
    /// The room to write in (you must be a member).
    #[arg(long)]
    pub(crate) room: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum RoomCommand {
    /// Create a room owned by you (you are its first member).
    Create {
        /// The room id.
        room: String,
        /// Anyone may join (default: only the owner adds members).
        #[arg(long)]
        open: bool,
    },
    /// Join a room, or, as its owner, add a user to it.
    Join {
        /// The room id.
        room: String,
        /// The user to add (default: you).
        #[arg(long)]
        user: Option<String>,
    },
    /// Leave a room, or, as its owner, remove a user from it.
    Leave {
        /// The room id.
        room: String,
        /// The user to remove (default: you).
        #[arg(long)]
        user: Option<String>,
    },
    /// List a room's owner and members.
    Members {
        /// The room id.
        room: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum StatusArg {
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

impl Command {
    /// Checks every user and room id the command names, so that a typo is
    /// reported before connecting rather than as a server error.
    pub(crate) fn check_ids(&self) -> anyhow::Result<()> {
        let mut ids: Vec<(&str, &str)> = Vec::new();
        match self {
            Command::Send { peer, .. } | Command::Chat { peer } => ids.extend(peer.ids()),
            Command::Watch { users, .. } => ids.extend(users.iter().map(|u| ("user", u.as_str()))),
            Command::Room(RoomCommand::Join { room, user } | RoomCommand::Leave { room, user }) => {
                ids.push(("room", room));
                ids.extend(user.iter().map(|u| ("user", u.as_str())));
            }
            Command::Room(RoomCommand::Create { room, .. } | RoomCommand::Members { room }) => {
                ids.push(("room", room))
            }
            Command::Listen { .. } | Command::Status { .. } => {}
        }
        match ids.into_iter().find(|(_, id)| !is_valid_id(id)) {
            Some((kind, id)) => anyhow::bail!(
                "{id:?} is not a valid {kind} id: use 1 to {MAX_ID_BYTES} letters, digits or . _ @ -"
            ),
            None => Ok(()),
        }
    }
}

impl Peer {
    fn ids(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let user = self.to.as_deref().map(|u| ("user", u));
        let room = self.room.as_deref().map(|r| ("room", r));
        user.into_iter().chain(room)
    }

    /// How the peer reads in output: `bob` or `room general`.
    pub(crate) fn describe(&self) -> String {
        match (&self.to, &self.room) {
            (Some(user), _) => user.clone(),
            (None, Some(room)) => format!("room {room}"),
            (None, None) => unreachable!("clap requires one of --to and --room"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("switchboard-cli").chain(args.iter().copied()))
    }

    #[test]
    fn a_message_goes_to_exactly_one_of_a_user_and_a_room() {
        assert!(parse(&["send", "--to", "bob", "hi"]).is_ok());
        assert!(parse(&["chat", "--room", "general"]).is_ok());
        assert!(parse(&["send", "hi"]).is_err());
        assert!(parse(&["chat", "--to", "bob", "--room", "general"]).is_err());
    }

    #[test]
    fn invalid_ids_are_named_before_connecting() {
        let cli = parse(&["watch", "alice", "x y"]).unwrap();
        let error = cli.command.check_ids().unwrap_err().to_string();
        assert!(
            error.starts_with("\"x y\" is not a valid user id"),
            "{error}"
        );
        let cli = parse(&["room", "join", "general", "--user", "bad/user"]).unwrap();
        let error = cli.command.check_ids().unwrap_err().to_string();
        assert!(
            error.starts_with("\"bad/user\" is not a valid user id"),
            "{error}"
        );
        let cli = parse(&["send", "--room", "", "hi"]).unwrap();
        assert!(cli.command.check_ids().is_err());
        let cli = parse(&["room", "create", "general", "--open"]).unwrap();
        assert!(cli.command.check_ids().is_ok());
    }
}
