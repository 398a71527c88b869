//! [`Rooms`]: the rooms (groups) one shard owns, their membership rule, and
//! the member lists a room message fans out to.
//!
//! The rule: the creator owns the room and is its first member. Anyone may
//! join an open room; only the owner adds others, or anyone to a closed
//! room (a member "joining" again changes nothing). Members leave by
//! themselves; the owner may remove anyone (an owner who leaves leaves the
//! room without one). Only members post; members of closed rooms, and
//! anyone for open rooms, may list the members. The app
//! backend ([`Actor::Admin`], through the server API) may do anything; a
//! room it creates starts with no owner and no member.
//!
//! A room is deleted when its last member leaves, or when it has had no
//! message, signal or change for the shard's idle limit
//! ([`Rooms::reclaim_idle`]); its id is then free. Every membership change
//! is reported ([`Rooms::take_changes`]) so each member's shard can count
//! the rooms of its users.
//!
//! A room's shard orders its messages: each goes out to the members grouped
//! by the shard that owns them, one forward per shard, and that grouping is
//! cached until the membership changes, so a message to 10,000 members costs
//! the room's shard one step per shard, not per member.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_proto::v1::ErrorCode;

use super::api::Actor;
use super::ids::{IdMap, RoomId, ShardId, UserId};
use super::placement::shard_of;

/// A room management request, from `actor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomRequest {
    /// Create the room, owned by the actor.
    Create {
        /// Whether anyone may join.
        open: bool,
    },
    /// Add `member` (the actor themselves, or anyone if the actor owns it).
    Join {
        /// Who joins.
        member: UserId,
    },
    /// Remove `member` (the actor themselves, or anyone if the actor owns it).
    Leave {
        /// Who leaves.
        member: UserId,
    },
    /// List the members.
    List,
}

/// What a successful [`RoomRequest`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomReply {
    /// Created, joined or left: the member count after it.
    Changed {
        /// Members now.
        members: u32,
    },
    /// The member list.
    Members {
        /// The owner, unless they left.
        owner: Option<UserId>,
        /// Whether anyone may join.
        open: bool,
        /// Members, sorted.
        members: Vec<UserId>,
    },
}

/// Members grouped by the shard that owns them.
pub type MembersByShard = Arc<[(ShardId, Arc<[UserId]>)]>;

#[derive(Debug)]
struct Room {
    owner: Option<UserId>,
    open: bool,
    members: BTreeSet<UserId>,
    /// Cached fan-out groups; `None` after a membership change.
    by_shard: Option<MembersByShard>,
    /// The last message, signal or change; a room idle long enough is
    /// deleted.
    active_at: Instant,
}

/// A user joined or left a room: the user's shard counts their rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    /// The member.
    pub user: UserId,
    /// Joined (true) or left (false).
    pub joined: bool,
}

/// The rooms owned by one shard.
#[derive(Debug)]
pub struct Rooms {
    rooms: IdMap<RoomId, Room>,
    shard_count: u32,
    max_members: usize,
    /// The time of the input being handled (set by the shard).
    now: Instant,
    /// Memberships changed since the shard last took them.
    changes: Vec<MembershipChange>,
}

impl Rooms {
    /// No rooms yet; members are grouped over `shard_count` shards and a
    /// room holds at most `max_members`.
    pub fn new(shard_count: u32, max_members: usize) -> Self {
        Self {
            rooms: IdMap::default(),
            shard_count,
            max_members,
            now: Instant::now(),
            changes: Vec::new(),
        }
    }

    /// Sets the time that requests and messages mark rooms active at.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// The memberships changed since the last call.
    pub fn take_changes(&mut self) -> Vec<MembershipChange> {
        std::mem::take(&mut self.changes)
    }

    /// Rooms held.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// True when no room is held.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Deletes every room with no message, signal or change for `idle`;
    /// their members leave. Returns how many were deleted.
    pub fn reclaim_idle(&mut self, idle: Duration) -> usize {
        let now = self.now;
        let before = self.rooms.len();
        let changes = &mut self.changes;
        self.rooms.retain(|_, room| {
            let keep = room.active_at + idle > now;
            if !keep {
                changes.extend(room.members.iter().map(|user| MembershipChange {
                    user: user.clone(),
                    joined: false,
                }));
            }
            keep
        });
        before - self.rooms.len()
    }

    /// Applies `request` by `actor` to `room` under the rule in the module
    /// docs.
    pub fn apply(
        &mut self,
        actor: &Actor,
        room: &RoomId,
        request: RoomRequest,
    ) -> Result<RoomReply, ErrorCode> {
        let user = match actor {
            Actor::User(user) => Some(user),
            Actor::Admin => None,
        };
        if let RoomRequest::Create { open } = request {
            if self.rooms.contains_key(room) {
                return Err(ErrorCode::RoomExists);
            }
            let members: BTreeSet<UserId> = user.into_iter().cloned().collect();
            let count = members.len() as u32;
            self.changes
                .extend(members.iter().map(|user| MembershipChange {
                    user: user.clone(),
                    joined: true,
                }));
            self.rooms.insert(
                room.clone(),
                Room {
                    owner: user.cloned(),
                    open,
                    members,
                    by_shard: None,
                    active_at: self.now,
                },
            );
            return Ok(RoomReply::Changed { members: count });
        }
        let state = self.rooms.get_mut(room).ok_or(ErrorCode::UnknownRoom)?;
        // The owner, or the backend.
        let in_charge = user.is_none() || state.owner.as_ref() == user;
        let is_self = |member: &UserId| user == Some(member);
        match request {
            RoomRequest::Create { .. } => unreachable!("handled above"),
            RoomRequest::Join { member } => {
                // Members may "join" again: nothing changes.
                let allowed = in_charge
                    || (is_self(&member) && (state.open || state.members.contains(&member)));
                if !allowed {
                    return Err(ErrorCode::NotAllowed);
                }
                if !state.members.contains(&member) {
                    if state.members.len() >= self.max_members {
                        return Err(ErrorCode::RoomFull);
                    }
                    state.members.insert(member.clone());
                    state.by_shard = None;
                    state.active_at = self.now;
                    self.changes.push(MembershipChange {
                        user: member,
                        joined: true,
                    });
                }
            }
            RoomRequest::Leave { member } => {
                if !in_charge && !is_self(&member) {
                    return Err(ErrorCode::NotAllowed);
                }
                if state.members.remove(&member) {
                    state.by_shard = None;
                    state.active_at = self.now;
                    if state.owner.as_ref() == Some(&member) {
                        state.owner = None;
                    }
                    self.changes.push(MembershipChange {
                        user: member,
                        joined: false,
                    });
                    if state.members.is_empty() {
                        // The last member left: the room and its id go.
                        self.rooms.remove(room);
                        return Ok(RoomReply::Changed { members: 0 });
                    }
                }
            }
            RoomRequest::List => {
                let member = user.is_some_and(|u| state.members.contains(u));
                if !state.open && !in_charge && !member {
                    return Err(ErrorCode::NotAllowed);
                }
                return Ok(RoomReply::Members {
                    owner: state.owner.clone(),
                    open: state.open,
                    members: state.members.iter().cloned().collect(),
                });
            }
        }
        Ok(RoomReply::Changed {
            members: state.members.len() as u32,
        })
    }

    /// Who a message from `sender` to `room` goes to, grouped by shard
    /// (the sender included); an error if the room is unknown or the sender
    /// is not a member.
    pub fn fan_out(&mut self, room: &RoomId, sender: &UserId) -> Result<MembersByShard, ErrorCode> {
        let state = self.rooms.get_mut(room).ok_or(ErrorCode::UnknownRoom)?;
        if !state.members.contains(sender) {
            return Err(ErrorCode::NotAMember);
        }
        state.active_at = self.now;
        let shard_count = self.shard_count;
        Ok(state
            .by_shard
            .get_or_insert_with(|| group_by_shard(&state.members, shard_count))
            .clone())
    }
}

fn group_by_shard(members: &BTreeSet<UserId>, shard_count: u32) -> MembersByShard {
    let mut groups: Vec<Vec<UserId>> = vec![Vec::new(); shard_count.max(1) as usize];
    for member in members {
        groups[shard_of(member, shard_count).0 as usize].push(member.clone());
    }
    groups
        .into_iter()
        .enumerate()
        .filter(|(_, members)| !members.is_empty())
        .map(|(shard, members)| (ShardId(shard as u32), Arc::from(members)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    /// Acting as user `name`.
    fn by(name: &str) -> Actor {
        Actor::User(user(name))
    }

    fn room() -> RoomId {
        RoomId::parse("room").unwrap()
    }

    fn create(open: bool) -> RoomRequest {
        RoomRequest::Create { open }
    }

    fn join(member: &str) -> RoomRequest {
        RoomRequest::Join {
            member: user(member),
        }
    }

    fn leave(member: &str) -> RoomRequest {
        RoomRequest::Leave {
            member: user(member),
        }
    }

    fn changed(members: u32) -> Result<RoomReply, ErrorCode> {
        Ok(RoomReply::Changed { members })
    }

    /// Applies each request to `room()` in turn, checking its reply.
    fn script<const N: usize>(
        rooms: &mut Rooms,
        steps: [(Actor, RoomRequest, Result<RoomReply, ErrorCode>); N],
    ) {
        for (step, (actor, request, expected)) in steps.into_iter().enumerate() {
            let case = format!("step {step}: {actor:?} {request:?}");
            assert_eq!(rooms.apply(&actor, &room(), request), expected, "{case}");
        }
    }

    #[test]
    fn a_room_goes_when_its_last_member_leaves_or_when_it_is_idle() {
        let mut rooms = Rooms::new(2, 10);
        let start = Instant::now();
        rooms.set_now(start);
        script(
            &mut rooms,
            [
                (by("owner"), create(true), changed(1)),
                (by("bob"), join("bob"), changed(2)),
                (by("owner"), leave("owner"), changed(1)),
                (by("bob"), leave("bob"), changed(0)),
                (by("bob"), join("bob"), Err(ErrorCode::UnknownRoom)),
                (by("carl"), create(true), changed(1)),
            ],
        );
        assert_eq!(rooms.len(), 1);
        let changes = rooms.take_changes();
        let changes: Vec<(&str, bool)> = changes
            .iter()
            .map(|c| (c.user.as_str(), c.joined))
            .collect();
        assert_eq!(
            changes,
            [
                ("owner", true),
                ("bob", true),
                ("owner", false),
                ("bob", false),
                ("carl", true)
            ]
        );
        // A message keeps it active; idle for the limit, it goes.
        let idle = Duration::from_secs(60);
        rooms.set_now(start + Duration::from_secs(50));
        rooms.fan_out(&room(), &user("carl")).unwrap();
        rooms.set_now(start + Duration::from_secs(100));
        assert_eq!(rooms.reclaim_idle(idle), 0);
        rooms.set_now(start + Duration::from_secs(110));
        assert_eq!(rooms.reclaim_idle(idle), 1);
        assert!(rooms.is_empty());
        let left = MembershipChange {
            user: user("carl"),
            joined: false,
        };
        assert_eq!(rooms.take_changes(), [left]);
    }

    #[test]
    fn the_owner_adds_anyone_others_join_only_open_rooms() {
        let mut rooms = Rooms::new(2, 3);
        let (owner, bob) = (user("owner"), user("bob"));
        let listed = Ok(RoomReply::Members {
            owner: Some(owner.clone()),
            open: false,
            members: vec![bob, user("carl"), owner],
        });
        script(
            &mut rooms,
            [
                (by("owner"), create(false), changed(1)),
                (by("owner"), create(true), Err(ErrorCode::RoomExists)),
                (by("bob"), join("bob"), Err(ErrorCode::NotAllowed)), // closed room
                (by("owner"), join("bob"), changed(2)),
                (by("bob"), join("bob"), changed(2)), // a member again: no change
                (by("bob"), join("carl"), Err(ErrorCode::NotAllowed)), // owner only
                (by("owner"), join("carl"), changed(3)),
                (by("owner"), join("dave"), Err(ErrorCode::RoomFull)),
                (by("eve"), RoomRequest::List, Err(ErrorCode::NotAllowed)), // members only
                (by("bob"), RoomRequest::List, listed),
            ],
        );
    }

    #[test]
    fn members_leave_the_owner_removes_and_only_members_post() {
        let mut rooms = Rooms::new(3, 100);
        let (owner, bob) = (user("owner"), user("bob"));
        rooms.apply(&by("owner"), &room(), create(true)).unwrap();
        rooms.apply(&by("bob"), &room(), join("bob")).unwrap();
        rooms.apply(&by("carl"), &room(), join("carl")).unwrap();
        assert_eq!(
            rooms.apply(&by("bob"), &room(), leave("carl")),
            Err(ErrorCode::NotAllowed)
        );
        rooms.apply(&by("owner"), &room(), leave("carl")).unwrap();
        assert_eq!(
            rooms.fan_out(&room(), &user("carl")).unwrap_err(),
            ErrorCode::NotAMember
        );
        let groups = rooms.fan_out(&room(), &bob).unwrap();
        let mut everyone: Vec<UserId> =
            groups.iter().flat_map(|(_, m)| m.iter().cloned()).collect();
        everyone.sort();
        assert_eq!(everyone, vec![bob.clone(), owner]);
        for (shard, members) in groups.iter() {
            assert!(members.iter().all(|m| shard_of(m, 3) == *shard));
        }
        rooms.apply(&by("owner"), &room(), leave("owner")).unwrap();
        assert!(matches!(
            rooms.apply(&by("bob"), &room(), RoomRequest::List),
            Ok(RoomReply::Members { owner: None, .. })
        ));
        let nope = RoomId::parse("nope").unwrap();
        assert_eq!(
            rooms.fan_out(&nope, &bob).unwrap_err(),
            ErrorCode::UnknownRoom
        );
    }

    #[test]
    fn the_backend_may_do_anything_and_creates_rooms_without_an_owner() {
        let mut rooms = Rooms::new(2, 100);
        let listed = Ok(RoomReply::Members {
            owner: None,
            open: false,
            members: vec![user("bob")],
        });
        script(
            &mut rooms,
            [
                (Actor::Admin, create(false), changed(0)),
                (Actor::Admin, join("bob"), changed(1)),
                (by("bob"), join("carl"), Err(ErrorCode::NotAllowed)), // no owner
                (Actor::Admin, RoomRequest::List, listed),
                (Actor::Admin, leave("bob"), changed(0)),
            ],
        );
    }
}
