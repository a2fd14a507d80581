//! Which datagrams of a peer to accept: one live session at a time, a sliding window over its sequence numbers
//! (IPsec-style: reordering within the window is fine, a number seen before is a replay), and a short memory of
//! the sessions it replaced, so a replayed datagram from before a restart cannot switch the link back.
//!
//! A new session id (the peer restarted) is taken at once: no waiting for a timeout, and no sequence number a
//! forger sent earlier can lock the real peer out (its new session starts a fresh window).

use heapless::Deque;

/// How far behind the newest sequence number a datagram may arrive and still be accepted.
pub const WINDOW: u64 = 64;
/// Sessions remembered as retired.
const RETIRED: usize = 8;

/// What [`PeerTracker::check`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Accepted, and the peer is a new session (it restarted).
    NewSession,
    /// Seen before, or older than the window, or from a retired session.
    Replay,
}

/// Replay state of one peer. Fixed size; no allocation.
#[derive(Debug, Default)]
pub struct PeerTracker {
    session: u64,
    newest: u64,
    /// Bit i set: `newest - i` was seen.
    seen: u64,
    retired: Deque<u64, RETIRED>,
}

impl PeerTracker {
    /// The live session (0: none yet).
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Judge an authenticated datagram's (session, seq) and remember it when accepted.
    pub fn check(&mut self, session: u64, seq: u64) -> Verdict {
        if session != self.session {
            if session == 0 || self.retired.iter().any(|s| *s == session) {
                return Verdict::Replay;
            }
            if self.session != 0 {
                if self.retired.is_full() {
                    self.retired.pop_front();
                }
                let _ = self.retired.push_back(self.session);
            }
            self.session = session;
            self.newest = seq;
            self.seen = 1;
            return Verdict::NewSession;
        }
        if seq > self.newest {
            let shift = seq - self.newest;
            self.seen = if shift >= WINDOW { 1 } else { (self.seen << shift) | 1 };
            self.newest = seq;
            return Verdict::Accept;
        }
        let back = self.newest - seq;
        if back >= WINDOW || self.seen & (1 << back) != 0 {
            return Verdict::Replay;
        }
        self.seen |= 1 << back;
        Verdict::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_refused_reordering_is_not() {
        let mut t = PeerTracker::default();
        assert_eq!(t.check(7, 1), Verdict::NewSession);
        assert_eq!(t.check(7, 3), Verdict::Accept);
        assert_eq!(t.check(7, 2), Verdict::Accept, "late but within the window");
        assert_eq!(t.check(7, 2), Verdict::Replay);
        assert_eq!(t.check(7, 3), Verdict::Replay);
        assert_eq!(t.check(7, 3 + WINDOW), Verdict::Accept);
        assert_eq!(t.check(7, 3), Verdict::Replay, "behind the window");
    }

    #[test]
    fn a_restart_is_taken_at_once_and_old_sessions_stay_retired() {
        let mut t = PeerTracker::default();
        t.check(1, u64::MAX); // a forged or wrapped counter
        assert_eq!(t.check(2, 1), Verdict::NewSession, "the restarted peer is not locked out");
        assert_eq!(t.check(2, 2), Verdict::Accept);
        assert_eq!(t.check(1, u64::MAX - 5), Verdict::Replay, "the old session cannot come back");
        assert_eq!(t.check(0, 9), Verdict::Replay);
        for s in 3..20 {
            assert_eq!(t.check(s, 1), Verdict::NewSession);
        }
        assert_eq!(t.session(), 19);
    }
}
