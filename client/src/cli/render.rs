//! How `switchboard-cli` shows what happens: [`event_text`] and
//! [`event_json`] for pushed events, [`send_outcome`] and [`room_outcome`]
//! for answers, [`error_words`] for the protocol's error codes. Text is for
//! people (no wire details); JSON keeps every field for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_client::{
    ErrorCode, Event, ReceiptKind, RoomResult, SendResult, SignalKind, Status,
};

/// An error code in words: `ERROR_CODE_INVALID_USER_ID` reads "invalid user id".
pub(crate) fn error_words(code: i32) -> String {
    match ErrorCode::try_from(code) {
        Ok(code) => code
            .as_str_name()
            .trim_start_matches("ERROR_CODE_")
            .replace('_', " ")
            .to_lowercase(),
        Err(_) => format!("error {code} (unknown to this CLI)"),
    }
}

/// A [`SendResult`] as a line: `Ok` when the message was stored.
pub(crate) fn send_outcome(result: &SendResult, peer: &str) -> Result<String, String> {
    if result.error != ErrorCode::None as i32 {
        return Err(format!("not sent to {peer}: {}", error_words(result.error)));
    }
    let reach = if peer.starts_with("room ") {
        format!("stored for {} other member(s)", result.devices)
    } else if result.devices == 0 {
        "no device online, it waits in the inbox".to_owned()
    } else {
        format!("delivered to {} device(s) now", result.devices)
    };
    Ok(format!(
        "sent message {} to {peer}: {reach}",
        result.message_id
    ))
}

/// A [`RoomResult`] as a line, with what was asked (`joined`, `created`...).
pub(crate) fn room_outcome(result: &RoomResult, done: &str) -> Result<String, String> {
    if result.error != ErrorCode::None as i32 {
        return Err(format!(
            "room {}: {}",
            result.room,
            error_words(result.error)
        ));
    }
    Ok(format!(
        "room {}: {done}; {} member(s)",
        result.room, result.members
    ))
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
    match ReceiptKind::try_from(kind) {
        Ok(ReceiptKind::Delivered) => "received",
        Ok(ReceiptKind::Read) => "read",
        _ => "sent an unknown receipt for",
    }
}

fn signal_name(kind: i32) -> &'static str {
    match SignalKind::try_from(kind) {
        Ok(SignalKind::Typing) => "is typing",
        Ok(SignalKind::StoppedTyping) => "stopped typing",
        _ => "sent an unknown signal",
    }
}

/// How long ago a Unix time in milliseconds was, to the second: `3m 12s ago`.
fn ago(unix_ms: u64, now: SystemTime) -> String {
    let then = UNIX_EPOCH + Duration::from_millis(unix_ms);
    match now.duration_since(then) {
        Ok(elapsed) if elapsed.as_secs() > 0 => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
        ),
        _ => "just now".to_owned(),
    }
}

/// An event as a line for people; `None` for what needs no line (the
/// inbox position a session starts at, when nothing waits in it).
pub(crate) fn event_text(event: &Event) -> Option<String> {
    Some(match event {
        Event::InboxOpened(o) if o.epoch_changed => format!(
            "the server's inbox for you was reset since this device's last visit; {} message(s) waiting",
            o.last_seq - o.resume_after
        ),
        Event::InboxOpened(o) if o.last_seq > o.resume_after => {
            format!("{} message(s) waiting", o.last_seq - o.resume_after)
        }
        Event::InboxOpened(_) => return None,
        Event::Message(d) => {
            let m = d.message.clone().unwrap_or_default();
            let from = format!("{}/{}", m.from_user, m.from_device);
            match &m.receipt {
                Some(r) => format!("{from} {} message {}", receipt_name(r.kind), r.message_id),
                None if m.room.is_empty() => format!(
                    "[{from} -> {}] {}",
                    m.to_user,
                    String::from_utf8_lossy(&m.payload)
                ),
                None => format!(
                    "[{from} in room {}] {}",
                    m.room,
                    String::from_utf8_lossy(&m.payload)
                ),
            }
        }
        Event::Gap(g) => format!(
            "messages #{}..=#{} were dropped before this device read them (inbox limits)",
            g.from_seq, g.to_seq
        ),
        Event::Signal { signal, .. } => {
            let place = if signal.room.is_empty() {
                String::new()
            } else {
                format!(" in room {}", signal.room)
            };
            format!(
                "{}/{} {}{place}",
                signal.from_user,
                signal.from_device,
                signal_name(signal.kind)
            )
        }
        Event::Presence(p) => {
            let mut line = format!("{} is {}", p.user_id, status_name(p.status));
            if !p.text.is_empty() {
                line.push_str(&format!(" \"{}\"", p.text));
            }
            if p.status == Status::Offline as i32 && p.last_seen_ms > 0 {
                line.push_str(&format!(
                    ", last seen {}",
                    ago(p.last_seen_ms, SystemTime::now())
                ));
            }
            line
        }
        Event::Error(e) => format!("refused: {}: {}", error_words(e.code), e.message),
        Event::GoAway(g) => format!("the server is shutting down: {}", g.reason),
        Event::Closed(Some(info)) => format!("the server closed the session: {info}"),
        Event::Closed(None) => "the connection was lost".into(),
    })
}

/// An event as one JSON object, every field kept.
pub(crate) fn event_json(event: &Event) -> String {
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
        Event::Error(e) => serde_json::json!({
            "type": "error",
            "ref": e.r#ref,
            "code": error_words(e.code),
            "message": e.message,
        }),
        Event::GoAway(g) => serde_json::json!({"type": "go_away", "reason": g.reason}),
        Event::Closed(info) => serde_json::json!({
            "type": "closed",
            "code": info.as_ref().map(|i| i.code),
            "reason": info.as_ref().map(|i| i.reason.clone()),
        }),
    };
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_client::{InboxOpened, Presence};

    #[test]
    fn error_codes_read_as_words() {
        assert_eq!(
            error_words(ErrorCode::InvalidUserId as i32),
            "invalid user id"
        );
        assert_eq!(error_words(999), "error 999 (unknown to this CLI)");
    }

    #[test]
    fn presence_reads_as_a_sentence_with_a_relative_last_seen() {
        let now = SystemTime::now();
        let five_minutes_ago = now - Duration::from_secs(302);
        let unix_ms = five_minutes_ago
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert_eq!(ago(unix_ms, now), "5m 2s ago");
        let online = Event::Presence(Presence {
            user_id: "alice".into(),
            status: Status::Away as i32,
            text: "at lunch".into(),
            version: 7,
            last_seen_ms: unix_ms,
        });
        assert_eq!(event_text(&online).unwrap(), "alice is away \"at lunch\"");
    }

    #[test]
    fn an_empty_inbox_needs_no_line() {
        let opened = |resume_after, last_seq| {
            Event::InboxOpened(InboxOpened {
                epoch: 1,
                resume_after,
                last_seq,
                epoch_changed: false,
            })
        };
        assert_eq!(event_text(&opened(4, 4)), None);
        assert_eq!(
            event_text(&opened(4, 6)).as_deref(),
            Some("2 message(s) waiting")
        );
    }

    #[test]
    fn results_say_where_the_message_went() {
        let stored = SendResult {
            message_id: 12,
            devices: 0,
            ..SendResult::default()
        };
        assert_eq!(
            send_outcome(&stored, "bob").unwrap(),
            "sent message 12 to bob: no device online, it waits in the inbox"
        );
        let refused = SendResult {
            error: ErrorCode::NotAMember as i32,
            ..SendResult::default()
        };
        assert_eq!(
            send_outcome(&refused, "room general").unwrap_err(),
            "not sent to room general: not a member"
        );
    }
}
