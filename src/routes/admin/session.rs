//! Admin sessions, kept in memory: a random id in the cookie, and on the server its
//! expiry and its CSRF token. In memory rather than a signed cookie so that logging out
//! really ends the session (a signed cookie stays valid until it expires, wherever a
//! copy of it is); the cost is that a restart logs everyone out, and that each replica
//! has its own sessions — fine for an internal listener an operator reaches directly.

use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "koogate_admin";

/// A live session, as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The token every POST of this session must carry.
    pub csrf: String,
    pub expires_ms: i64,
}

impl Session {
    /// Whether `presented` is this session's CSRF token, compared in constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The sessions of this process, by the SHA-256 of their id: the map's lookup then
/// takes no time that depends on how much of a guessed id is right.
#[derive(Debug)]
pub struct Sessions {
    lifetime: Duration,
    live: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes, as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts from its login.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session at `now_ms`; returns its id (for the cookie). Expired sessions
    /// are forgotten here, so the map never outgrows the logins of one lifetime.
    pub fn start(&self, now_ms: i64) -> String {
        let id = random_token();
        let expires_ms =
            now_ms.saturating_add(i64::try_from(self.lifetime.as_millis()).unwrap_or(i64::MAX));
        let mut live = self.live();
        live.retain(|_, s| s.expires_ms > now_ms);
        live.insert(
            key(&id),
            Session {
                csrf: random_token(),
                expires_ms,
            },
        );
        id
    }

    /// The session with this id, if it is live at `now_ms`.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        self.live()
            .get(&key(id))
            .filter(|s| s.expires_ms > now_ms)
            .cloned()
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.live().remove(&key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_it_expires_or_ends() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let id = sessions.start(1_000);
        let session = sessions.get(&id, 1_000).expect("live");
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches("wrong"));
        assert!(sessions.get(&id, 61_000).is_none(), "expired");
        assert!(sessions.get("not-an-id", 1_000).is_none());
        sessions.end(&id);
        assert!(sessions.get(&id, 2_000).is_none(), "logged out");
    }

    #[test]
    fn ids_and_tokens_are_distinct_and_long() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (a, b) = (sessions.start(0), sessions.start(0));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(sessions.get(&a, 0).unwrap().csrf, a);
    }
}
