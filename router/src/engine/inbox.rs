//! Inboxes in Redis: [`InboxStore`] runs each inbox operation (append,
//! attach, fetch, ack, detach) as one Lua script, atomic in Redis, that
//! applies the rules of the in-memory [`Mailbox`](switchboard_core::mailbox::Mailbox)
//! (count, bytes and age limits; device cursors; a device's own sends
//! skipped; the share rule; where a new device starts). The scripts live
//! in `inbox/*.lua`; the entry format is [`switchboard_core::remote_inbox`].
//!
//! Layout (bucket `K` = the user's bucket, one hash slot, so each script's
//! keys sit on one Redis Cluster node):
//! - `<prefix>:{K}:ib`, a hash: user -> the inbox's row (last and released
//!   sequence numbers, bytes held, device cursors), MessagePack;
//! - `<prefix>:{K}:il:<user>`, a list: the entries held, oldest first.
//!
//! Age expiry is lazy: each operation first drops what has aged out, so
//! what any operation sees is what the in-memory inbox, whose timers fire
//! on time, would hold at that moment. The parity test in
//! `tests/tests/e2e/engine_inbox.rs` runs both over the same random
//! operations and compares every answer.

use bytes::Bytes;
use redis::aio::ConnectionLike;
use redis::{Cmd, Value};
use switchboard_core::engine::EngineReply;
use switchboard_core::mailbox::MailboxLimits;
use switchboard_core::placement::shard_of;
use switchboard_core::remote_inbox::{EntryHeader, InboxWindow};
use switchboard_core::UserId;

use super::EngineError;

macro_rules! inbox_script {
    ($name:literal) => {
        concat!(
            include_str!("inbox/common.lua"),
            include_str!(concat!("inbox/", $name, ".lua"))
        )
    };
}

/// Inboxes in Redis under one key prefix; see the module docs.
#[derive(Debug)]
pub struct InboxStore {
    key_prefix: String,
    buckets: u32,
    limits: MailboxLimits,
    append: redis::Script,
    deliver: redis::Script,
    attach: redis::Script,
    fetch: redis::Script,
    ack: redis::Script,
    detach: redis::Script,
}

impl InboxStore {
    /// Inboxes under `key_prefix`, users spread over `buckets`, kept
    /// within `limits`.
    pub fn new(key_prefix: &str, buckets: u32, limits: MailboxLimits) -> Self {
        Self {
            key_prefix: key_prefix.to_owned(),
            buckets: buckets.max(1),
            limits,
            append: redis::Script::new(inbox_script!("append")),
            deliver: redis::Script::new(inbox_script!("deliver")),
            attach: redis::Script::new(inbox_script!("attach")),
            fetch: redis::Script::new(inbox_script!("fetch")),
            ack: redis::Script::new(inbox_script!("ack")),
            detach: redis::Script::new(inbox_script!("detach")),
        }
    }

    /// The bucket `user` belongs to.
    pub fn bucket_of(&self, user: &UserId) -> u32 {
        shard_of(user, self.buckets).0
    }

    /// The hash of inbox rows of `user`'s bucket.
    pub fn rows_key(&self, user: &UserId) -> String {
        format!("{}:{{{}}}:ib", self.key_prefix, self.bucket_of(user))
    }

    /// The list of `user`'s entries.
    pub fn list_key(&self, user: &UserId) -> String {
        format!(
            "{}:{{{}}}:il:{}",
            self.key_prefix,
            self.bucket_of(user),
            user.as_str()
        )
    }

    /// `EVALSHA` of `script` on `user`'s inbox at `now_ms`, with the
    /// arguments every operation takes; the caller adds the operation's own.
    fn command(&self, script: &redis::Script, user: &UserId, now_ms: u64) -> Cmd {
        self.command_with(script, &[user], now_ms)
    }

    /// [`InboxStore::command`] over the inboxes of `users` (the first is
    /// the operation's user): their row hash and entry list each, in order.
    fn command_with(&self, script: &redis::Script, users: &[&UserId], now_ms: u64) -> Cmd {
        let limits = &self.limits;
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(users.len() * 2);
        for user in users {
            cmd.arg(self.rows_key(user)).arg(self.list_key(user));
        }
        cmd.arg(users[0].as_str())
            .arg(now_ms)
            .arg(limits.max_messages)
            .arg(limits.max_bytes)
            .arg(u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX))
            .arg(limits.sender_share_percent);
        cmd
    }

    /// Loads every script into Redis (again after a restart emptied its
    /// script cache: `EVALSHA` then answers `NOSCRIPT`).
    pub async fn load_scripts(&self, redis: &mut impl ConnectionLike) -> Result<(), EngineError> {
        for script in [
            &self.append,
            &self.deliver,
            &self.attach,
            &self.fetch,
            &self.ack,
            &self.detach,
        ] {
            script.prepare_invoke().load_async(redis).await?;
        }
        Ok(())
    }

    /// Runs `cmd` (one of this store's `*_cmd`s) on its own, loading the
    /// scripts once if Redis lost them; its answer goes to the matching
    /// `parse_*`. (The engine's writers send theirs in pipelines.)
    pub async fn run(
        &self,
        redis: &mut impl ConnectionLike,
        cmd: &Cmd,
    ) -> Result<Value, EngineError> {
        match cmd.query_async(redis).await {
            Err(error) if is_no_script(&error) => {
                self.load_scripts(redis).await?;
                Ok(cmd.query_async(redis).await?)
            }
            other => Ok(other?),
        }
    }

    /// The channel node `node` subscribes to for entries appended to the
    /// inboxes of users with a device attached there.
    pub fn node_channel(&self, node: u64) -> String {
        format!("{}{node}", self.node_channels())
    }

    fn node_channels(&self) -> String {
        format!("{}:n:", self.key_prefix)
    }

    /// Appends `entry` (an [`EntryHeader`] and the encoded message) to
    /// `user`'s inbox for node `node`; `own` for a copy of the user's own
    /// send, `check_share` to apply the share rule (a direct message from
    /// someone else). The entry is published to the other nodes with a
    /// device of the user attached ([`parse_published`]). Its answer:
    /// [`parse_appended`].
    pub fn append_cmd(
        &self,
        user: &UserId,
        entry: &[u8],
        own: bool,
        check_share: bool,
        now_ms: u64,
        node: u64,
    ) -> Cmd {
        let mut cmd = self.command(&self.append, user, now_ms);
        cmd.arg(entry)
            .arg(u8::from(own))
            .arg(u8::from(check_share))
            .arg(node)
            .arg(self.node_channels());
        cmd
    }

    /// Appends `entry` (its header's own flag clear) to `to`'s inbox and,
    /// unless refused, the same entry as `from`'s own copy to `from`'s, in
    /// one step: both users' keys go to one script, so this needs one
    /// Redis (not a Redis Cluster, where the buckets may sit apart). Its
    /// answer: [`parse_delivered`].
    pub fn deliver_cmd(
        &self,
        to: &UserId,
        from: &UserId,
        entry: &[u8],
        now_ms: u64,
        node: u64,
    ) -> Cmd {
        let mut cmd = self.command_with(&self.deliver, &[to, from], now_ms);
        cmd.arg(entry)
            .arg(1)
            .arg(node)
            .arg(self.node_channels())
            .arg(from.as_str());
        cmd
    }

    /// A session of device `device` (its key) opened on node `node`:
    /// where its delivery continues (`resume`, else its cursor, else where
    /// a new device starts) and up to `count` entries from there. Its
    /// answer: [`parse_attached`].
    pub fn attach_cmd(
        &self,
        user: &UserId,
        device: u64,
        resume: Option<u64>,
        count: usize,
        now_ms: u64,
        node: u64,
    ) -> Cmd {
        let mut cmd = self.command(&self.attach, user, now_ms);
        let resume = resume.map_or(-1, |seq| i64::try_from(seq).unwrap_or(i64::MAX));
        cmd.arg(device).arg(resume).arg(count).arg(node);
        cmd
    }

    /// Up to `count` entries of `user`'s inbox for `device` after `after`.
    /// Its answer: [`parse_window`].
    pub fn fetch_cmd(
        &self,
        user: &UserId,
        device: u64,
        after: u64,
        count: usize,
        now_ms: u64,
    ) -> Cmd {
        let mut cmd = self.command(&self.fetch, user, now_ms);
        cmd.arg(device).arg(after).arg(count);
        cmd
    }

    /// `device` processed everything up to `seq`. Its answer: the inbox's
    /// first and last sequence numbers.
    pub fn ack_cmd(&self, user: &UserId, device: u64, seq: u64, now_ms: u64) -> Cmd {
        let mut cmd = self.command(&self.ack, user, now_ms);
        cmd.arg(device).arg(seq);
        cmd
    }

    /// The last session of `device` closed at `now_ms`. Its answer: the
    /// inbox's first and last sequence numbers.
    pub fn detach_cmd(&self, user: &UserId, device: u64, now_ms: u64) -> Cmd {
        let mut cmd = self.command(&self.detach, user, now_ms);
        cmd.arg(device);
        cmd
    }
}

/// True when Redis lost the scripts (it restarted, or `SCRIPT FLUSH`).
pub fn is_no_script(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

/// The answer to [`InboxStore::append_cmd`]: `Appended` or `ShareRefused`.
pub fn parse_appended(value: Value) -> Result<EngineReply, EngineError> {
    let reply: Vec<u64> = redis::from_redis_value(value)?;
    match reply[..] {
        [1, seq, first_seq, devices] => Ok(EngineReply::Appended {
            seq,
            first_seq,
            devices: count(devices),
        }),
        [0, _, _, _] => Ok(EngineReply::ShareRefused),
        _ => Err(EngineError::Unexpected(format!(
            "append answered {reply:?}"
        ))),
    }
}

/// The answer to [`InboxStore::deliver_cmd`]: `Delivered` (the recipient's
/// append, then the sender's copy) or `ShareRefused`.
pub fn parse_delivered(value: Value) -> Result<EngineReply, EngineError> {
    let reply: Vec<u64> = redis::from_redis_value(value)?;
    match reply[..] {
        [1, seq, first_seq, devices, 1, own_seq, own_first_seq, own_devices] => {
            Ok(EngineReply::Delivered {
                seq,
                first_seq,
                devices: count(devices),
                own_seq,
                own_first_seq,
                own_devices: count(own_devices),
            })
        }
        [0, _, _, _, 0, _, _, _] => Ok(EngineReply::ShareRefused),
        _ => Err(EngineError::Unexpected(format!(
            "deliver answered {reply:?}"
        ))),
    }
}

fn count(devices: u64) -> u32 {
    u32::try_from(devices).unwrap_or(u32::MAX)
}

/// An entry another node appended, as published to this node's channel:
/// the user, its seq, the inbox's first seq after it, and the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The inbox's user.
    pub user: UserId,
    /// The entry's sequence number.
    pub seq: u64,
    /// The lowest sequence number the inbox held after it.
    pub first_seq: u64,
    /// The entry's header.
    pub header: EntryHeader,
    /// The encoded `Message`.
    pub message: Bytes,
}

/// Decodes a message of a node channel (see `append.lua`).
pub fn parse_published(payload: &[u8]) -> Result<Published, EngineError> {
    let bad = || EngineError::Unexpected("a node channel message that does not parse".into());
    let u48 = |bytes: &[u8]| {
        let mut wide = [0u8; 8];
        wide[2..].copy_from_slice(bytes);
        u64::from_be_bytes(wide)
    };
    if payload.len() < 13 {
        return Err(bad());
    }
    let (seq, first_seq) = (u48(&payload[..6]), u48(&payload[6..12]));
    let user_len = usize::from(payload[12]);
    let user = payload.get(13..13 + user_len).ok_or_else(bad)?;
    let user = std::str::from_utf8(user)
        .ok()
        .and_then(UserId::parse)
        .ok_or_else(bad)?;
    let entry = Bytes::copy_from_slice(&payload[13 + user_len..]);
    let (header, message) = EntryHeader::split(&entry).ok_or_else(bad)?;
    Ok(Published {
        user,
        seq,
        first_seq,
        header,
        message,
    })
}

/// The answer to [`InboxStore::attach_cmd`]: `Attached`.
pub fn parse_attached(value: Value) -> Result<EngineReply, EngineError> {
    let mut reply: Vec<Value> = redis::from_redis_value(value)?;
    if reply.is_empty() {
        return Err(EngineError::Unexpected("attach answered nothing".into()));
    }
    let after = integer(&reply.remove(0))?;
    Ok(EngineReply::Attached {
        after,
        window: parse_window_values(reply)?,
    })
}

/// The answer to [`InboxStore::fetch_cmd`].
pub fn parse_window(value: Value) -> Result<InboxWindow, EngineError> {
    parse_window_values(redis::from_redis_value(value)?)
}

/// The answer to [`InboxStore::ack_cmd`] and [`InboxStore::detach_cmd`]:
/// the inbox's first and last sequence numbers.
pub fn parse_bounds(value: Value) -> Result<(u64, u64), EngineError> {
    Ok(redis::from_redis_value(value)?)
}

fn integer(value: &Value) -> Result<u64, EngineError> {
    match value {
        Value::Int(n) => {
            u64::try_from(*n).map_err(|_| EngineError::Unexpected(format!("a negative number {n}")))
        }
        other => Err(EngineError::Unexpected(format!(
            "expected a number, got {other:?}"
        ))),
    }
}

/// `{ first_seq, last_seq, acked, start, entries... }` as a window.
fn parse_window_values(values: Vec<Value>) -> Result<InboxWindow, EngineError> {
    if values.len() < 4 {
        return Err(EngineError::Unexpected(format!(
            "an inbox window of {} values",
            values.len()
        )));
    }
    let mut values = values.into_iter();
    let mut next = || integer(&values.next().expect("checked above"));
    let (first_seq, last_seq, acked, start) = (next()?, next()?, next()?, next()?);
    let entries = values
        .map(|value| match value {
            Value::BulkString(bytes) => EntryHeader::split(&Bytes::from(bytes))
                .ok_or_else(|| EngineError::Unexpected("an inbox entry without header".into())),
            other => Err(EngineError::Unexpected(format!(
                "expected an inbox entry, got {other:?}"
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok(InboxWindow {
        first_seq,
        last_seq,
        acked,
        start,
        entries,
    })
}
