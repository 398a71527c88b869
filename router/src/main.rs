//! `switchboard`: run the router (`serve`), mint a token (`token`), or check a
//! configuration file (`check-config`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchboard_quic::huge_pages::{self, HeapPages};
use switchboard_router::config::{Config, FlagOverrides, LogFormat};
use switchboard_router::dev::SecretSource;
use switchboard_router::server::{shutdown_signal, Server};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Presence and message router over QUIC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router. With no arguments: QUIC on 127.0.0.1:4433, admin HTTP on
    /// 127.0.0.1:9464, dev certificate and dev token secret.
    Serve {
        /// TOML configuration file (see switchboard.example.toml).
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
        /// QUIC listen address (overrides the file and environment).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Admin HTTP listen address (overrides the file and environment).
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Print a token for a user, signed with the configured (or dev) secret.
    Token {
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// How long the token is valid, e.g. 24h, 30m, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// TOML configuration file naming the secret file.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file, with the SWITCHBOARD_* variables of
    /// the environment over it as `serve` would read them, and explain every
    /// problem found.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
        } => serve(
            config,
            FlagOverrides {
                listen,
                admin_listen,
            },
        ),
        Command::Token { user, ttl, config } => token(config, &user, ttl),
        Command::CheckConfig { file } => return check_config(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A panic anywhere ends the process once its message is printed: a shard
/// or driver task that died while `/livez` still answered 200 would leave
/// a node that looks healthy and routes nothing, where a restart recovers.
fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        std::process::abort();
    }));
}

fn serve(file: Option<PathBuf>, flags: FlagOverrides) -> anyhow::Result<()> {
    abort_on_panic();
    let config = Config::load(file.as_deref(), &flags)?;
    // Before any thread starts: this may restart the process image.
    let heap = if config.heap_huge_pages {
        // glibc's own arenas: with one runtime thread (as the bench runs
        // the router) the current-thread runtime allocates everything in
        // the main arena anyway, and more workers would share its lock.
        huge_pages::use_huge_page_heap(huge_pages::Arenas::PerThread)
    } else {
        HeapPages::Regular("heap_huge_pages = false".into())
    };
    init_logging(config.log_format);
    match heap {
        HeapPages::Huge => tracing::info!("heap on transparent huge pages"),
        HeapPages::Regular(why) => tracing::info!(%why, "heap on regular pages"),
    }
    let runtime = switchboard_quic::runtime::build(config.worker_thread_count())?;
    runtime.block_on(async move {
        let metrics = switchboard_router::metrics::install_prometheus()?;
        let dev_dir = config.dev_dir.clone();
        let dev_cert = config.tls.cert.is_none();
        let shards = config.shard_count();
        let server = Server::bind(config, Some(metrics)).await?;
        print_banner(&server, &dev_dir, dev_cert, shards);
        server.run(shutdown_signal()).await;
        Ok(())
    })
}

/// What a person starting the server needs, once, on stdout: where the
/// dev files are, the certificate to pin, a copy-paste line for the server
/// API, and the addresses (the bench runner reads the `listening` line).
fn print_banner(server: &Server, dev_dir: &std::path::Path, dev_cert: bool, shards: u32) {
    use switchboard_proto::dev;
    if dev_cert {
        println!(
            "dev certificate: {}",
            dev_dir.join(dev::CERT_FILE).display()
        );
    }
    println!(
        "certificate SHA-256 fingerprint: {}",
        server.cert_fingerprint()
    );
    if server.secret_source() == SecretSource::Dev {
        println!(
            "WARNING: tokens are signed with the dev secret {}: anyone with this file can sign \
             tokens; set auth.secret_file in production",
            dev_dir.join(dev::SECRET_FILE).display()
        );
    }
    if server.api_token_source() == SecretSource::Dev {
        let path = dev_dir.join(dev::API_TOKEN_FILE);
        println!("server API token (dev): {}", path.display());
        println!(
            "  for curl: AUTH=\"Authorization: Bearer $(cat '{}')\"",
            path.display()
        );
    }
    println!(
        "switchboard listening: quic={} admin=http://{} shards={shards}",
        server.local_addr(),
        server.admin_addr()
    );
}

fn token(file: Option<PathBuf>, user: &str, ttl: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        switchboard_proto::ident::is_valid_id(user),
        "--user must be 1-64 characters of [A-Za-z0-9._@-]"
    );
    let config = Config::load(file.as_deref(), &FlagOverrides::default())?;
    let max = config.auth.max_token_lifetime;
    anyhow::ensure!(
        ttl <= max,
        "--ttl {} is longer than auth.max_token_lifetime ({}): the server would refuse the token",
        humantime::format_duration(ttl),
        humantime::format_duration(max)
    );
    let (secret, source) = switchboard_router::dev::token_secret(&config)?;
    if source == SecretSource::Dev {
        eprintln!(
            "note: signed with the dev secret in {}",
            config.dev_dir.display()
        );
    }
    println!("{}", switchboard_proto::token::mint(&secret, user, ttl));
    Ok(())
}

fn check_config(file: &std::path::Path) -> ExitCode {
    // As `serve` would load it: the file under the SWITCHBOARD_* variables.
    match Config::load(Some(file), &FlagOverrides::default()) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
