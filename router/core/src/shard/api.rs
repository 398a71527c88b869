//! Server API requests: sends in a user's name, presence and session
//! queries, disconnects and room management, each answered with an
//! `Output::ApiReply` carrying the request's token.

use switchboard_proto::close::CloseCode;
use switchboard_proto::v1::Send;

use super::{Now, Output, Recipient, Shard};
use crate::api::{ApiReply, ApiRequest, ApiToken};
use crate::ids::UserId;
use crate::presence::PresenceView;

impl Shard {
    pub(super) fn api(&mut self, now: Now, token: ApiToken, request: ApiRequest) {
        match request {
            ApiRequest::Send {
                from,
                to,
                payload,
                client_msg_id,
                want_receipts,
            } => {
                // The Send a session would have sent.
                let (to, room) = match to {
                    Recipient::User(user) => (user.as_str().to_owned(), String::new()),
                    Recipient::Room(room) => (String::new(), room.as_str().to_owned()),
                };
                let send = Send {
                    to,
                    payload,
                    client_msg_id,
                    room,
                    want_receipts,
                };
                self.api_send(now, token, from, send)
            }
            ApiRequest::Presence { user } => {
                let reply = self.presence_and_sessions(&user);
                self.reply_api(token, reply);
            }
            ApiRequest::Sharing { user, sharing } => {
                let watchers = self.set_sharing(&user, sharing);
                self.reply_api(token, ApiReply::SharingSet { watchers });
            }
            ApiRequest::Disconnect { user, device } => {
                let sessions: Vec<_> = self
                    .users
                    .get(&user)
                    .map(|r| r.sessions.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| {
                        device
                            .as_ref()
                            .is_none_or(|d| self.sessions.get(s).is_some_and(|r| r.device == *d))
                    })
                    .collect();
                for session in &sessions {
                    self.outputs.push_back(Output::Close {
                        session: *session,
                        code: CloseCode::Disconnected,
                        reason: "disconnected by the app backend".into(),
                    });
                    self.closed(now, *session);
                }
                let sessions = sessions.len() as u32;
                self.reply_api(token, ApiReply::Disconnected { sessions });
            }
            ApiRequest::Room {
                room,
                actor,
                request,
            } => {
                let result = self.rooms.apply(&actor, &room, request);
                self.dispatch_memberships();
                self.reply_api(token, ApiReply::Room(result));
            }
        }
    }

    fn presence_and_sessions(&self, user: &UserId) -> ApiReply {
        let record = self.users.get(user);
        ApiReply::Presence {
            view: record.map_or_else(PresenceView::never_seen, |r| r.view.clone()),
            sessions: record
                .into_iter()
                .flat_map(|r| &r.sessions)
                .filter_map(|s| Some((*s, self.sessions.get(s)?.device.clone())))
                .collect(),
        }
    }

    fn reply_api(&mut self, token: ApiToken, reply: ApiReply) {
        self.outputs.push_back(Output::ApiReply { token, reply });
    }
}
