//! `switchboard-cli` run as a process, the way a newcomer meets it: against
//! no server, against a router that shuts down, interrupted with Ctrl-C, and
//! chatting in a room.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use switchboard_client::Status;
use switchboard_tests::{next_event, next_presence, TestServer, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

/// The CLI pointed at `server` as `user`, with no SWITCHBOARD_* variable of
/// the environment in the way.
fn cli(server: &TestServer, user: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard-cli"));
    command
        .env_clear()
        .args(["--server", &server.addr.to_string()])
        .args(["--cert-sha256", &hex::encode(server.fingerprint)])
        .args(["--token", &server.token(user)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs a command to its end; returns its exit status, stdout and stderr.
async fn output(command: &mut Command) -> (ExitStatus, String, String) {
    let out = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("the CLI ends")
        .expect("the CLI runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("UTF-8");
    (out.status, text(out.stdout), text(out.stderr))
}

/// Starts a following command and waits for its "connected" line.
async fn spawn_connected(command: &mut Command) -> (Child, BufReader<ChildStderr>) {
    let mut child = command.spawn().expect("the CLI starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    tokio::time::timeout(WAIT, stderr.read_line(&mut line))
        .await
        .expect("the CLI connects")
        .expect("stderr");
    assert!(
        line.starts_with("connected as") || line.starts_with("chatting with"),
        "{line}"
    );
    (child, stderr)
}

async fn rest(mut stderr: BufReader<ChildStderr>) -> String {
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text)
        .await
        .expect("stderr");
    text
}

#[tokio::test]
async fn no_server_names_the_address_and_what_to_check_within_seconds() {
    // A UDP port that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let started = Instant::now();
    let (status, _, stderr) = output(
        Command::new(env!("CARGO_BIN_EXE_switchboard-cli"))
            .env_clear()
            .args(["--server", &addr.to_string(), "--token", "t"])
            .args(["--cert-sha256", &"00".repeat(32), "listen"]),
    )
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("no answer from {addr} within 5 s")),
        "{stderr}"
    );
    assert!(
        stderr.contains("is `switchboard serve` running"),
        "{stderr}"
    );
    // The SDK's own deadline ends it, not the 15 s QUIC idle timeout.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_missing_or_empty_token_says_how_to_get_one() {
    let server = TestServer::start().await;
    for token in [None, Some("")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard-cli"));
        command
            .env_clear()
            .args(["--server", &server.addr.to_string()]);
        command.args(["--cert-sha256", &hex::encode(server.fingerprint), "listen"]);
        if let Some(token) = token {
            command.env("SWITCHBOARD_TOKEN", token);
        }
        let (status, _, stderr) = output(&mut command).await;
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("switchboard token --user NAME"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_away_ends_listen_with_the_reason_and_a_non_zero_exit() {
    let server = TestServer::start_with(|config| {
        // A CLI that lingered would hold the shutdown this long.
        config.shutdown_timeout = Duration::from_secs(30);
    })
    .await;
    let (child, stderr) = spawn_connected(cli(&server, "alice").arg("listen")).await;
    let started = Instant::now();
    server.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the CLI held the drain"
    );
    let out = child.wait_with_output().await.unwrap();
    let stderr = rest(stderr).await;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: the server is shutting down"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_closes_the_session_so_watchers_see_it_leave_at_once() {
    let server = TestServer::start_with(|config| {
        config.presence.offline_grace = Duration::from_millis(100);
    })
    .await;
    let (watcher, mut events) = server.connect("carol", "phone").await;
    watcher.watch(&["bob"]).await.unwrap();
    assert_eq!(
        next_presence(&mut events, "bob").await.status,
        Status::Offline as i32
    );
    let (child, _stderr) = spawn_connected(cli(&server, "bob").arg("listen")).await;
    assert_eq!(
        next_presence(&mut events, "bob").await.status,
        Status::Online as i32
    );
    let pid = child.id().expect("running").to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    // Without a close the server would notice only at the idle timeout.
    let offline = next_presence(&mut events, "bob").await;
    assert_eq!(offline.status, Status::Offline as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_created_joined_listed_and_chatted_in() {
    let server = TestServer::start().await;
    let run = |args: &'static [&'static str]| {
        let mut command = cli(&server, "alice");
        command.args(args);
        command
    };
    let (status, stdout, stderr) = output(&mut run(&["room", "create", "general"])).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "room general: created; 1 member(s)\n");
    let (_, stdout, _) = output(&mut run(&["room", "join", "general", "--user", "bob"])).await;
    assert_eq!(stdout, "room general: added bob; 2 member(s)\n");
    let (_, stdout, _) = output(&mut run(&["room", "members", "general"])).await;
    assert_eq!(stdout, "room general (closed, owner alice): alice, bob\n");
    let (status, _, stderr) = output(&mut run(&["room", "create", "general"])).await;
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("room general: room exists"), "{stderr}");

    let (_bob, mut bob_events) = server.connect("bob", "phone").await;
    let mut chat = cli(&server, "alice");
    chat.args(["chat", "--room", "general"])
        .stdin(Stdio::piped());
    let (mut child, _stderr) = spawn_connected(&mut chat).await;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello room\n").await.unwrap();
    match next_event(&mut bob_events).await {
        switchboard_client::Event::Message(deliver) => {
            let message = deliver.message.unwrap();
            assert_eq!(
                (message.room.as_str(), &message.payload[..]),
                ("general", &b"hello room"[..])
            );
        }
        other => panic!("expected the room message, got {other:?}"),
    }
    drop(stdin); // end of input ends the chat normally
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn watch_names_a_bad_user_before_connecting() {
    let server = TestServer::start().await;
    let (status, _, stderr) = output(cli(&server, "alice").args(["watch", "bob", "x y"])).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("\"x y\" is not a valid user id"),
        "{stderr}"
    );
}

/// `watch` shows no messages, but acks them for its own device: a session
/// that held them unacked would be closed as a slow consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_hides_the_watchers_messages_and_is_not_closed_for_them() {
    let server = TestServer::start_with(|config| {
        config.delivery.ack_timeout = Duration::from_millis(200);
    })
    .await;
    let (mut child, _stderr) = spawn_connected(cli(&server, "alice").args(["watch", "bob"])).await;
    let (carol, _events) = server.connect("carol", "phone").await;
    let sent = carol.send("alice", b"for alice".to_vec()).await.unwrap();
    assert_eq!(sent.devices, 1, "the watch session got it");
    // Five ack timeouts: a session holding the message unacked is closed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(child.try_wait().unwrap().is_none(), "watch was closed");
    child.kill().await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("for alice"), "{stdout}");
    assert!(stdout.contains("bob is offline"), "{stdout}");
}
