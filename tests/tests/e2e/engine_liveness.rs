//! Node liveness on a real `redis-server`: one heartbeat key per node, a
//! silent node found and cleaned up by exactly one other and fenced after,
//! and a heartbeat that rides out Redis going away.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use switchboard_router::engine::liveness::{self, Cleanup, Heartbeat, Liveness, NodeId};
use switchboard_tests::redis::RedisServer;

fn liveness(node_timeout_ms: u64) -> Liveness {
    Liveness {
        key_prefix: "sbtest".into(),
        heartbeat_interval: Duration::from_millis(100),
        node_timeout: Duration::from_millis(node_timeout_ms),
    }
}

async fn connect(server: &RedisServer) -> ConnectionManager {
    let client = redis::Client::open(server.url()).unwrap();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    client
        .get_connection_manager_with_config(config)
        .await
        .unwrap()
}

/// A new node, listed as beating now.
async fn register(redis: &mut ConnectionManager, config: &Liveness) -> NodeId {
    liveness::register(redis, config, liveness::unix_ms())
        .await
        .unwrap()
}

/// Milliseconds `key` has left to live (-2: it does not exist).
async fn pttl(redis: &mut ConnectionManager, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(redis)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_beats_one_key_and_one_other_node_cleans_up_a_silent_one() {
    let server = RedisServer::start();
    let mut redis = connect(&server).await;
    let config = liveness(1_000);
    let first = register(&mut redis, &config).await;
    let second = register(&mut redis, &config).await;
    let third = register(&mut redis, &config).await;
    assert!(first != second && second != third && first != third);

    let start = liveness::unix_ms();
    for node in [first, second, third] {
        liveness::beat(&mut redis, &config, node, start)
            .await
            .unwrap();
    }
    // One key per node, living at most node_timeout.
    let ttl = pttl(&mut redis, &config.node_key(first)).await;
    assert!((1..=1_000).contains(&ttl), "{ttl}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sbtest:node:*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");

    // Within the timeout nobody is silent; past it, the node that stopped
    // beating is, and only it.
    let later = start + 1_500;
    assert!(liveness::silent_nodes(&mut redis, &config, start + 500)
        .await
        .unwrap()
        .is_empty());
    for node in [first, third] {
        liveness::beat(&mut redis, &config, node, later)
            .await
            .unwrap();
    }
    let silent = liveness::silent_nodes(&mut redis, &config, later)
        .await
        .unwrap();
    assert_eq!(silent, vec![second]);

    // Exactly one of the live nodes gets to clean it up.
    // A live node cannot be claimed.
    let live = liveness::claim_cleanup(&mut redis, &config, third, first, later)
        .await
        .unwrap();
    assert!(!live, "a live node was claimed");
    let by_first = liveness::claim_cleanup(&mut redis, &config, second, first, later)
        .await
        .unwrap();
    let by_third = liveness::claim_cleanup(&mut redis, &config, second, third, later)
        .await
        .unwrap();
    assert_eq!((by_first, by_third), (true, false));
    liveness::forget(&mut redis, &config, second).await.unwrap();
    // A claim made from a list read before the forget fails, even once
    // the first claim has lapsed.
    let lapsed = later + 2_000;
    let late = liveness::claim_cleanup(&mut redis, &config, second, third, lapsed)
        .await
        .unwrap();
    assert!(!late, "cleaned up twice");
    // And the forgotten node, should it wake up, is fenced, not listed again.
    let back = liveness::beat(&mut redis, &config, second, lapsed)
        .await
        .unwrap();
    assert!(!back, "a cleaned-up node came back");
    let silent = liveness::silent_nodes(&mut redis, &config, later)
        .await
        .unwrap();
    assert!(silent.is_empty(), "{silent:?}");
    assert_eq!(pttl(&mut redis, &config.node_key(second)).await, -2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_survives_redis_going_away_and_a_redis_that_came_back_empty_fences_the_node()
{
    let mut server = RedisServer::start();
    let mut redis = connect(&server).await;
    let config = liveness(1_000);
    let node = register(&mut redis, &config).await;
    let (heartbeat, task) = Heartbeat::spawn(connect(&server).await, config.clone(), node);
    assert_eq!(heartbeat.node(), node);

    // Beating: the key stays, and the last beat is recent.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(pttl(&mut redis, &config.node_key(node)).await > 0);
    let age = heartbeat.age(liveness::unix_ms()).expect("it has beaten");
    assert!(age < Duration::from_millis(1_000), "{age:?}");

    // Redis goes away: beats fail and their age grows past the timeout.
    server.kill();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(heartbeat.failures() > 0);
    let age = heartbeat.age(liveness::unix_ms()).unwrap();
    assert!(age >= Duration::from_millis(1_000), "{age:?}");

    // Redis comes back, but empty (no persistence here): the connection
    // recovers by itself, and the node finds it is no longer listed, so it
    // is fenced rather than quietly listed again.
    server.restart();
    let deadline = tokio::time::Instant::now() + switchboard_tests::WAIT;
    while !heartbeat.is_fenced() {
        assert!(tokio::time::Instant::now() < deadline, "never fenced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Fenced, it stops beating by itself.
    let stopped = tokio::time::timeout(switchboard_tests::WAIT, task).await;
    stopped.expect("the fenced heartbeat stops").unwrap();
    let mut redis = connect(&server).await;
    assert_eq!(pttl(&mut redis, &config.node_key(node)).await, -2);
    // It goes on as a new node.
    let node = register(&mut redis, &config).await;
    let (heartbeat, task) = Heartbeat::spawn(connect(&server).await, config.clone(), node);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(heartbeat.age(liveness::unix_ms()).is_some() && !heartbeat.is_fenced());
    assert!(pttl(&mut redis, &config.node_key(node)).await > 0);

    // A node whose beats stop (a crash) is gone from Redis within the
    // timeout.
    task.abort();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(pttl(&mut redis, &config.node_key(node)).await, -2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_beating_is_cleaned_up_once_by_one_of_the_live_ones() {
    let server = RedisServer::start();
    let mut redis = connect(&server).await;
    let config = liveness(1_000);
    let a = register(&mut redis, &config).await;
    let b = register(&mut redis, &config).await;
    let c = register(&mut redis, &config).await;
    // Every clean-up, as (by, of).
    let done: Arc<Mutex<Vec<(NodeId, NodeId)>>> = Arc::default();
    let cleanup_by = |me: NodeId| -> Cleanup {
        let done = done.clone();
        Arc::new(move |dead| {
            done.lock().unwrap().push((me, dead));
            Box::pin(async { Ok(()) })
        })
    };
    let mut tasks = Vec::new();
    for node in [a, c] {
        let (_, beats) = Heartbeat::spawn(connect(&server).await, config.clone(), node);
        let janitor = liveness::spawn_janitor(
            connect(&server).await,
            config.clone(),
            node,
            Duration::from_millis(200),
            cleanup_by(node),
        );
        tasks.extend([beats, janitor]);
    }
    // b beats once, then dies.
    let died = Instant::now();
    assert!(liveness::beat(&mut redis, &config, b, liveness::unix_ms())
        .await
        .unwrap());

    // Cleaned up within node_timeout + one sweep (plus slack for a busy box).
    let deadline = died + Duration::from_secs(5);
    while done.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "b was never cleaned up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = died.elapsed();
    assert!(
        took >= Duration::from_millis(1_000),
        "cleaned up while alive: {took:?}"
    );
    // A few more sweeps: nobody cleans it up again, and the live ones are
    // left alone.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let done = done.lock().unwrap().clone();
    assert_eq!(done.len(), 1, "{done:?}");
    let (by, of) = done[0];
    assert_eq!(of, b);
    assert!(by == a || by == c, "{by:?}");
    let silent = liveness::silent_nodes(&mut redis, &config, liveness::unix_ms())
        .await
        .unwrap();
    assert!(silent.is_empty(), "{silent:?}");
    for task in tasks {
        task.abort();
    }
}
