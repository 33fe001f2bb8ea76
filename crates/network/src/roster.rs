//! The roster: which nodes are on the swarm and which gossip topics each one serves, kept as
//! soft state.
//!
//! Gossipsub tells a node the topics of the peers it is connected to, and in a large network
//! that is a few of them: a broadcast reaches everybody through the mesh, but its sender
//! cannot tell who should answer, so it cannot tell a finished round from a slow one. Every
//! node therefore announces its topics on [`ROSTER_TOPIC`] once it has a peer to tell, and
//! again every [`ANNOUNCE_EVERY`] (± 10 %); an entry not refreshed within [`ENTRY_TTL`] is
//! dropped. A node that joins pulls one peer's roster once over [`ROSTER_PROTOCOL`] (the
//! push-pull state exchange of gossip membership protocols), so it knows the network without
//! waiting a whole period, and nobody re-announces because a newcomer appeared.
//!
//! An entry is a hint for how long to wait for answers, never a permission: it says that a
//! peer signed an announcement (gossipsub's strict validation), or that a peer we pulled
//! from said so. A forged entry costs at most one round waiting for a silent peer, which the
//! caller then leaves out for a while (`Roster::quiet`).

use std::{collections::HashMap, time::Duration};

use libp2p::PeerId;
use rand::Rng;
use tokio::time::Instant;

/// Gossip topic of the announcements.
pub const ROSTER_TOPIC: &str = "/nunet/roster/1";
/// Stream protocol on which a node hands out its roster.
pub const ROSTER_PROTOCOL: &str = "/nunet/roster/1.0.0";
/// How often a node announces its topics.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(60);
/// How long an entry lives without a fresh announcement: two missed announcements and a half.
pub const ENTRY_TTL: Duration = Duration::from_secs(150);
/// How long a peer that stayed silent is left out of the peers serving a topic, announcements
/// or not (a peer that cannot reach us would otherwise slow one round per announcement).
pub const SILENT_QUARANTINE: Duration = Duration::from_secs(300);
/// Most entries kept; announcements from further peers are dropped until entries expire.
pub const MAX_ENTRIES: usize = 4096;
/// Most topics one announcement may list.
pub const MAX_TOPICS: usize = 8;
/// Longest topic name an announcement may carry.
pub const MAX_TOPIC_LEN: usize = 128;
/// Largest roster a pull accepts (a full [`MAX_ENTRIES`] roster fits).
pub const MAX_SNAPSHOT_BYTES: usize = 1024 * 1024;

const ANNOUNCE_MAGIC: &str = "nunet-roster/1";
const SNAPSHOT_MAGIC: &str = "nunet-roster-snapshot/1";
/// Retry delay of an announcement that found nobody to tell.
const RETRY_ANNOUNCE: Duration = Duration::from_secs(1);

/// Why roster bytes from a peer were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RosterError {
    /// Not a roster message of a version this node reads.
    #[error("not a roster message (expected first line {0:?})")]
    Magic(&'static str),
    /// A topic name that is empty, too long, or has whitespace, commas or control characters.
    #[error("bad topic name {0:?}")]
    Topic(String),
    /// More topics than [`MAX_TOPICS`].
    #[error("more than {MAX_TOPICS} topics")]
    TooManyTopics,
    /// A snapshot line that is not `<peer id> <age ms> <topic>[,<topic>…]`.
    #[error("bad roster line {0:?}")]
    Line(String),
    /// A snapshot with more than [`MAX_ENTRIES`] entries.
    #[error("more than {MAX_ENTRIES} roster entries")]
    TooManyEntries,
    /// Bytes that are not UTF-8, or a snapshot over [`MAX_SNAPSHOT_BYTES`].
    #[error("{0}")]
    Bytes(String),
}

struct Entry {
    topics: Vec<String>,
    seen: Instant,
    /// From the peer's own signed announcement, not from a roster pulled from another peer.
    signed: bool,
    /// Left out of `Roster::peers_on` until then (it stayed silent).
    quiet_until: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.seen) < ENTRY_TTL
    }

    fn quiet(&self, now: Instant) -> bool {
        self.quiet_until.is_some_and(|q| now < q)
    }
}

/// What the roster holds, for status output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterInfo {
    /// Peers with a live entry.
    pub peers: usize,
    /// Of those, peers left out for staying silent in a broadcast (the quarantine).
    pub quiet: usize,
    /// Per topic this node serves: peers known to serve it (live entries and connected
    /// subscribers together).
    pub topics: Vec<(String, usize)>,
}

/// The roster of one node. Owned by the swarm task.
pub(crate) struct Roster {
    entries: HashMap<PeerId, Entry>,
    own_topics: Vec<String>,
    next_announce: Instant,
}

impl Roster {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            entries: HashMap::new(),
            own_topics: Vec::new(),
            next_announce: now + RETRY_ANNOUNCE,
        }
    }

    /// This node now serves `topic`: the next announcement (soon) lists it.
    pub(crate) fn subscribed(&mut self, topic: &str, now: Instant) {
        if topic == ROSTER_TOPIC || self.own_topics.iter().any(|t| t == topic) {
            return;
        }
        if check_topic(topic).is_err() || self.own_topics.len() >= MAX_TOPICS {
            tracing::warn!(topic, "topic left out of the roster announcements");
            return;
        }
        self.own_topics.push(topic.to_string());
        self.next_announce = self.next_announce.min(now + Duration::from_millis(500));
    }

    /// The announcement to publish now, if one is due.
    pub(crate) fn due(&self, now: Instant) -> Option<Vec<u8>> {
        (now >= self.next_announce && !self.own_topics.is_empty()).then(|| {
            let mut s = String::from(ANNOUNCE_MAGIC);
            for t in &self.own_topics {
                s.push('\n');
                s.push_str(t);
            }
            s.into_bytes()
        })
    }

    /// Schedules the next announcement after a publish (`told`: it reached at least one peer).
    pub(crate) fn announced(&mut self, told: bool, now: Instant) {
        self.next_announce = now
            + if told {
                let jitter = rand::thread_rng().gen_range(0.9..1.1);
                ANNOUNCE_EVERY.mul_f64(jitter)
            } else {
                RETRY_ANNOUNCE
            };
    }

    /// An announcement from `from` arrived (gossip, signed by `from`).
    pub(crate) fn heard(&mut self, from: PeerId, bytes: &[u8], now: Instant) {
        match decode_announcement(bytes) {
            Ok(topics) => self.put(from, topics, now, true),
            Err(e) => tracing::debug!(peer = %from, "roster announcement refused: {e}"),
        }
    }

    /// Records what `peer` serves, as of `seen`. A pulled entry (`signed: false`) never
    /// changes one the peer announced itself, and when the roster is full a signed entry
    /// takes the place of a pulled one: a peer handing out a roster of made-up peers cannot
    /// push real ones out.
    fn put(&mut self, peer: PeerId, topics: Vec<String>, seen: Instant, signed: bool) {
        if let Some(e) = self.entries.get_mut(&peer) {
            if (signed || !e.signed) && seen > e.seen {
                e.topics = topics;
                e.seen = seen;
                e.signed |= signed;
            }
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            let hearsay = self
                .entries
                .iter()
                .find(|(_, e)| !e.signed && !e.quiet(seen))
                .map(|(p, _)| *p);
            match hearsay {
                Some(p) if signed => {
                    self.entries.remove(&p);
                }
                _ => {
                    tracing::debug!(%peer, "roster full; entry dropped");
                    return;
                }
            }
        }
        let quiet_until = None;
        self.entries.insert(
            peer,
            Entry {
                topics,
                seen,
                signed,
                quiet_until,
            },
        );
    }

    /// Merges a pulled snapshot (never our own entry, never older than what we hold).
    pub(crate) fn merge(
        &mut self,
        me: PeerId,
        bytes: &[u8],
        now: Instant,
    ) -> Result<usize, RosterError> {
        let entries = decode_snapshot(bytes)?;
        let n = entries.len();
        for (peer, age, topics) in entries {
            if peer != me && age < ENTRY_TTL {
                self.put(peer, topics, now.checked_sub(age).unwrap_or(now), false);
            }
        }
        Ok(n)
    }

    /// Our live entries as a snapshot, plus ourselves (age 0).
    pub(crate) fn snapshot(&self, me: PeerId, now: Instant) -> Vec<u8> {
        let mut s = String::from(SNAPSHOT_MAGIC);
        let own = (!self.own_topics.is_empty()).then_some((me, Duration::ZERO, &self.own_topics));
        let live = self
            .entries
            .iter()
            .filter(|(_, e)| e.live(now))
            .map(|(p, e)| (*p, now.saturating_duration_since(e.seen), &e.topics));
        for (peer, age, topics) in own.into_iter().chain(live) {
            s.push_str(&format!(
                "\n{peer} {} {}",
                age.as_millis(),
                topics.join(",")
            ));
        }
        s.into_bytes()
    }

    /// Drops entries past [`ENTRY_TTL`] (a quarantined one lives until its quarantine ends,
    /// so that a fresh announcement cannot lift it).
    pub(crate) fn prune(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.live(now) || e.quiet(now));
    }

    /// Peers with a live entry that serve `topic`.
    pub(crate) fn peers_on<'a>(
        &'a self,
        topic: &'a str,
        now: Instant,
    ) -> impl Iterator<Item = PeerId> + 'a {
        self.entries
            .iter()
            .filter(move |(_, e)| {
                e.live(now) && !e.quiet(now) && e.topics.iter().any(|t| t == topic)
            })
            .map(|(p, _)| *p)
    }

    /// Leaves `peers` (they stayed silent) out of [`Self::peers_on`] for
    /// [`SILENT_QUARANTINE`]. Peers without an entry are not added.
    pub(crate) fn quiet(&mut self, peers: &[PeerId], now: Instant) {
        for p in peers {
            if let Some(e) = self.entries.get_mut(p) {
                e.quiet_until = Some(now + SILENT_QUARANTINE);
            }
        }
    }

    pub(crate) fn own_topics(&self) -> &[String] {
        &self.own_topics
    }

    pub(crate) fn len(&self, now: Instant) -> usize {
        self.entries.values().filter(|e| e.live(now)).count()
    }

    /// Live entries in quarantine.
    pub(crate) fn quiet_len(&self, now: Instant) -> usize {
        self.entries
            .values()
            .filter(|e| e.live(now) && e.quiet(now))
            .count()
    }
}

fn check_topic(t: &str) -> Result<(), RosterError> {
    let ok = !t.is_empty()
        && t.len() <= MAX_TOPIC_LEN
        && t.chars().all(|c| c.is_ascii_graphic() && c != ',');
    if ok {
        Ok(())
    } else {
        Err(RosterError::Topic(t.chars().take(MAX_TOPIC_LEN).collect()))
    }
}

fn topics_of<'a>(it: impl Iterator<Item = &'a str>) -> Result<Vec<String>, RosterError> {
    let mut out: Vec<String> = Vec::new();
    for t in it {
        check_topic(t)?;
        if out.len() == MAX_TOPICS {
            return Err(RosterError::TooManyTopics);
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

/// The topics of an announcement (`nunet-roster/1`, then one topic per line).
pub fn decode_announcement(bytes: &[u8]) -> Result<Vec<String>, RosterError> {
    let s = std::str::from_utf8(bytes).map_err(|e| RosterError::Bytes(e.to_string()))?;
    let mut lines = s.split('\n');
    if lines.next() != Some(ANNOUNCE_MAGIC) {
        return Err(RosterError::Magic(ANNOUNCE_MAGIC));
    }
    topics_of(lines)
}

/// The entries of a snapshot (`nunet-roster-snapshot/1`, then one `<peer id> <age ms>
/// <topic>[,<topic>…]` line per entry): peer, age, topics.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Vec<(PeerId, Duration, Vec<String>)>, RosterError> {
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(RosterError::Bytes(format!(
            "roster of {} bytes, over {MAX_SNAPSHOT_BYTES}",
            bytes.len()
        )));
    }
    let s = std::str::from_utf8(bytes).map_err(|e| RosterError::Bytes(e.to_string()))?;
    let mut lines = s.split('\n');
    if lines.next() != Some(SNAPSHOT_MAGIC) {
        return Err(RosterError::Magic(SNAPSHOT_MAGIC));
    }
    let mut out = Vec::new();
    for line in lines {
        if out.len() == MAX_ENTRIES {
            return Err(RosterError::TooManyEntries);
        }
        let bad = || RosterError::Line(line.chars().take(200).collect());
        let mut f = line.split(' ');
        let (Some(peer), Some(age), Some(topics), None) = (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(bad());
        };
        let peer: PeerId = peer.parse().map_err(|_| bad())?;
        let age = Duration::from_millis(age.parse().map_err(|_| bad())?);
        out.push((peer, age, topics_of(topics.split(','))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: &str = "/nunet/deployment";

    #[test]
    fn announcements_round_trip_and_are_rescheduled() {
        let now = Instant::now();
        let mut me = Roster::new(now);
        assert!(me.due(now + RETRY_ANNOUNCE).is_none(), "nothing to say yet");
        me.subscribed(DEPLOY, now);
        me.subscribed(ROSTER_TOPIC, now);
        me.subscribed(DEPLOY, now);
        let bytes = me
            .due(now + Duration::from_millis(500))
            .expect("due soon after subscribing");
        assert_eq!(decode_announcement(&bytes), Ok(vec![DEPLOY.to_string()]));
        me.announced(false, now);
        assert!(me.due(now + Duration::from_millis(900)).is_none());
        assert!(
            me.due(now + RETRY_ANNOUNCE).is_some(),
            "retried when nobody heard it"
        );
        me.announced(true, now);
        assert!(me.due(now + ANNOUNCE_EVERY.mul_f64(0.89)).is_none());
        assert!(me.due(now + ANNOUNCE_EVERY.mul_f64(1.11)).is_some());
    }

    #[test]
    fn entries_expire_can_be_forgotten_and_never_go_back_in_time() {
        let now = Instant::now();
        let mut r = Roster::new(now);
        let (a, b) = (PeerId::random(), PeerId::random());
        r.heard(a, b"nunet-roster/1\n/nunet/deployment", now);
        r.heard(b, b"nunet-roster/1\n/other", now);
        assert_eq!(r.peers_on(DEPLOY, now).collect::<Vec<_>>(), vec![a]);
        // An older snapshot entry does not overwrite a fresher announcement.
        let later = now + Duration::from_secs(100);
        let snap = format!("{SNAPSHOT_MAGIC}\n{a} 120000 /other");
        assert_eq!(r.merge(PeerId::random(), snap.as_bytes(), later), Ok(1));
        assert_eq!(r.peers_on(DEPLOY, later).count(), 1);
        assert_eq!(r.peers_on(DEPLOY, now + ENTRY_TTL).count(), 0, "expired");
        r.prune(now + ENTRY_TTL);
        assert_eq!(r.len(now), 0);
        // A silent peer stays out for the quarantine, even when it announces itself again.
        r.heard(a, b"nunet-roster/1\n/nunet/deployment", now);
        r.quiet(&[a, b], now);
        let soon = now + Duration::from_secs(1);
        r.heard(a, b"nunet-roster/1\n/nunet/deployment", soon);
        assert_eq!(r.peers_on(DEPLOY, soon).count(), 0);
        let after = now + SILENT_QUARANTINE;
        r.heard(a, b"nunet-roster/1\n/nunet/deployment", after);
        assert_eq!(r.peers_on(DEPLOY, after).collect::<Vec<_>>(), vec![a]);
    }

    #[test]
    fn snapshots_round_trip_without_the_receiver() {
        let now = Instant::now();
        let (me, other, receiver) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut r = Roster::new(now);
        r.subscribed(DEPLOY, now);
        r.heard(other, b"nunet-roster/1\n/nunet/deployment\n/x", now);
        r.heard(receiver, b"nunet-roster/1\n/nunet/deployment", now);
        let snap = r.snapshot(me, now + Duration::from_secs(2));
        let mut got = Roster::new(now);
        assert_eq!(
            got.merge(receiver, &snap, now + Duration::from_secs(2)),
            Ok(3)
        );
        let mut peers: Vec<_> = got.peers_on(DEPLOY, now + Duration::from_secs(2)).collect();
        peers.sort();
        let mut want = vec![me, other];
        want.sort();
        assert_eq!(
            peers, want,
            "the sender and what it knew, not the receiver itself"
        );
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        assert_eq!(
            decode_announcement(b"hello"),
            Err(RosterError::Magic(ANNOUNCE_MAGIC))
        );
        assert!(matches!(
            decode_announcement(b"nunet-roster/1\nbad topic"),
            Err(RosterError::Topic(_))
        ));
        assert!(matches!(
            decode_announcement(b"nunet-roster/1\n"),
            Err(RosterError::Topic(_))
        ));
        let many: String = (0..9).map(|i| format!("\n/t{i}")).collect();
        assert_eq!(
            decode_announcement(format!("{ANNOUNCE_MAGIC}{many}").as_bytes()),
            Err(RosterError::TooManyTopics)
        );
        assert!(matches!(
            decode_announcement(&[0xff, 0xfe]),
            Err(RosterError::Bytes(_))
        ));
        for line in [
            "notapeer 1 /a",
            "{p} x /a",
            "{p} 1",
            "{p} 1 /a extra",
            "{p} 1 a,,b",
        ] {
            let line = line.replace("{p}", &PeerId::random().to_string());
            let snap = format!("{SNAPSHOT_MAGIC}\n{line}");
            assert!(decode_snapshot(snap.as_bytes()).is_err(), "{line}");
        }
        let line = format!("\n{} 1 /a", PeerId::random());
        let many = format!("{SNAPSHOT_MAGIC}{}", line.repeat(MAX_ENTRIES + 1));
        assert_eq!(
            decode_snapshot(many.as_bytes()),
            Err(RosterError::TooManyEntries)
        );
        let big = vec![b'a'; MAX_SNAPSHOT_BYTES + 1];
        assert!(matches!(decode_snapshot(&big), Err(RosterError::Bytes(_))));
    }

    #[test]
    fn the_roster_stops_growing_at_its_bound() {
        let now = Instant::now();
        let mut r = Roster::new(now);
        for _ in 0..MAX_ENTRIES + 10 {
            r.heard(PeerId::random(), b"nunet-roster/1\n/nunet/deployment", now);
        }
        assert_eq!(r.len(now), MAX_ENTRIES);
    }

    #[test]
    fn a_pulled_roster_of_made_up_peers_cannot_push_real_ones_out() {
        let now = Instant::now();
        let mut r = Roster::new(now);
        let fake: String = (0..MAX_ENTRIES)
            .map(|_| format!("\n{} 0 {DEPLOY}", PeerId::random()))
            .collect();
        let snap = format!("{SNAPSHOT_MAGIC}{fake}");
        assert_eq!(
            r.merge(PeerId::random(), snap.as_bytes(), now),
            Ok(MAX_ENTRIES)
        );
        assert_eq!(r.len(now), MAX_ENTRIES, "full of hearsay");
        // A real peer's own announcement still gets in, in place of a pulled entry.
        let real = PeerId::random();
        r.heard(real, b"nunet-roster/1\n/nunet/deployment", now);
        assert_eq!(r.len(now), MAX_ENTRIES);
        assert!(r.peers_on(DEPLOY, now).any(|p| p == real));
        // Hearsay about it does not change what it announced.
        let later = now + Duration::from_secs(1);
        let lie = format!("{SNAPSHOT_MAGIC}\n{real} 0 /other");
        assert_eq!(r.merge(PeerId::random(), lie.as_bytes(), later), Ok(1));
        assert!(r.peers_on(DEPLOY, later).any(|p| p == real));
        // Quarantined peers are counted as such.
        r.quiet(&[real], later);
        assert_eq!(r.quiet_len(later), 1);
        assert!(!r.peers_on(DEPLOY, later).any(|p| p == real));
    }
}
