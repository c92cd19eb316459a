//! Simple tokens (etcd's `--auth-token simple`, the default).
//!
//! A simple token is `<prefix>.<index>`: 16 random letters chosen by the
//! member that received the `Authenticate` request, and the Raft index of the
//! entry that authenticated. Every member applies that entry and records the
//! token for the user, so any member accepts it once it has applied the index
//! (the API waits for that before looking a token up). A token lives for the
//! TTL (`--auth-token-ttl`, 300 s) after its last use; changing a user's
//! password or deleting the user drops the user's tokens, disabling auth
//! drops all of them. Tokens live in memory only, as in etcd: after a restart
//! a member knows the tokens of the entries it replays, and clients
//! re-authenticate on `invalid auth token`.

use std::collections::HashMap;

/// etcd's default `--auth-token-ttl`: 300 s.
pub const DEFAULT_TOKEN_TTL_MS: u64 = 300_000;
/// Length of the random prefix (etcd's `defaultSimpleTokenLength`).
pub const SIMPLE_TOKEN_PREFIX_LEN: usize = 16;

/// The tokens this member knows.
#[derive(Debug)]
pub struct SimpleTokens {
    ttl_ms: u64,
    enabled: bool,
    /// token -> (user, expiry deadline in ms of the caller's clock).
    tokens: HashMap<String, (String, u64)>,
}

impl SimpleTokens {
    /// No tokens, disabled; `ttl_ms` 0 means the default.
    pub fn new(ttl_ms: u64) -> SimpleTokens {
        let ttl_ms = if ttl_ms == 0 { DEFAULT_TOKEN_TTL_MS } else { ttl_ms };
        SimpleTokens { ttl_ms, enabled: false, tokens: HashMap::new() }
    }

    /// Starts accepting assignments (auth was enabled).
    pub fn enable(&mut self) {
        self.enabled = true;
    }

    /// Drops every token and stops accepting assignments (auth was disabled).
    pub fn disable(&mut self) {
        self.enabled = false;
        self.tokens.clear();
    }

    /// Records the token `prefix.index` for `user`; returns it.
    ///
    /// # Panics
    /// If that token exists already: a Raft index authenticates once, so
    /// this would mean the same entry was applied twice.
    pub fn assign(&mut self, prefix: &str, index: u64, user: &str, now_ms: u64) -> String {
        let token = format!("{prefix}.{index}");
        if self.enabled {
            let previous =
                self.tokens.insert(token.clone(), (user.to_string(), now_ms + self.ttl_ms));
            assert!(previous.is_none(), "invariant: simple token {token} assigned twice");
        }
        token
    }

    /// The user `token` names, if it is known and alive; using a token
    /// restarts its TTL.
    pub fn user(&mut self, token: &str, now_ms: u64) -> Option<String> {
        self.expire(now_ms);
        let ttl = self.ttl_ms;
        let (user, deadline) = self.tokens.get_mut(token)?;
        *deadline = now_ms + ttl;
        Some(user.clone())
    }

    /// Drops every token of `user`.
    pub fn invalidate_user(&mut self, user: &str) {
        self.tokens.retain(|_, (name, _)| name != user);
    }

    fn expire(&mut self, now_ms: u64) {
        self.tokens.retain(|_, (_, deadline)| *deadline > now_ms);
    }

    /// The Raft index a well-formed simple token was assigned at (`None`: not
    /// a simple token, so no member can know it).
    pub fn index_of(token: &str) -> Option<u64> {
        let (prefix, index) = token.split_once('.')?;
        if prefix.contains('.') || index.contains('.') {
            return None;
        }
        index.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_user_until_it_expires_unused() {
        let mut t = SimpleTokens::new(1000);
        t.enable();
        let token = t.assign("abcdefghijklmnop", 7, "alice", 0);
        assert_eq!(token, "abcdefghijklmnop.7");
        assert_eq!(t.user(&token, 900).as_deref(), Some("alice"));
        // The use at 900 restarted the TTL.
        assert_eq!(t.user(&token, 1800).as_deref(), Some("alice"));
        assert_eq!(t.user(&token, 2800), None);
        assert_eq!(t.user("other.7", 0), None);
    }

    #[test]
    fn tokens_are_dropped_per_user_and_on_disable() {
        let mut t = SimpleTokens::new(0);
        t.enable();
        let a = t.assign("p", 1, "alice", 0);
        let b = t.assign("p", 2, "bob", 0);
        t.invalidate_user("alice");
        assert_eq!(t.user(&a, 1), None);
        assert_eq!(t.user(&b, 1).as_deref(), Some("bob"));
        t.disable();
        assert_eq!(t.user(&b, 1), None);
        // While disabled nothing is recorded.
        let c = t.assign("p", 3, "bob", 0);
        assert_eq!(t.user(&c, 1), None);
    }

    #[test]
    fn the_index_is_parsed_from_well_formed_tokens_only() {
        assert_eq!(SimpleTokens::index_of("abc.12"), Some(12));
        assert_eq!(SimpleTokens::index_of("abc"), None);
        assert_eq!(SimpleTokens::index_of("a.b.12"), None);
        assert_eq!(SimpleTokens::index_of("abc.x"), None);
        assert_eq!(SimpleTokens::index_of("eyJhbGciOi.eyJ1c2Vy.sig"), None);
    }
}
