//! Auth on a member: the credentials of incoming requests, password hashing
//! and checking (off the async threads: bcrypt takes tens of milliseconds),
//! and `Authenticate`, which checks the password here and then proposes the
//! token through Raft so every member learns it.

use std::sync::RwLock;

use base64::Engine;
use etcd_auth::{Access, AuthError, AuthInfo, AuthStore, SimpleTokens, SIMPLE_TOKEN_PREFIX_LEN};
use etcd_proto::etcdrs::{InternalAuthenticateRequest, InternalRaftRequest};
use etcd_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use etcd_server::auth::AuthReply;
use etcd_server::{Applied, Response, ServerError};
use rand::Rng;

use crate::clock::monotonic_ms;
use crate::server::{read_error, EtcdServer};

/// The letters of a simple token's prefix (etcd's alphabet).
const TOKEN_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Seconds since the Unix epoch: JWT expiry is wall-clock time.
fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Who sent a request: its auth token, and the common name of its verified
/// client certificate (with `--client-cert-auth`). As in etcd, a token wins;
/// without one the certificate's CN is the user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// gRPC metadata `token` (or `authorization`).
    pub token: Option<String>,
    /// The CN of the client certificate the TLS handshake verified.
    pub common_name: Option<String>,
}

fn auth_error(err: AuthError) -> ServerError {
    ServerError::Auth(err)
}

impl EtcdServer {
    /// The auth store, shared with the applier (which alone changes it).
    pub fn auth(&self) -> &RwLock<AuthStore> {
        &self.auth
    }

    /// Whether auth is enabled now.
    pub fn auth_enabled(&self) -> bool {
        self.auth.read().expect("auth lock").is_enabled()
    }

    /// The credentials of a request from `caller`. Without a token or a
    /// certificate, or while auth is off, the request has none ([`AuthInfo::default`]); the permission checks
    /// then refuse it (`user name is empty`) if auth is on.
    pub async fn credentials(&self, caller: &Caller) -> Result<AuthInfo, ServerError> {
        if !self.auth_enabled() {
            return Ok(AuthInfo::default());
        }
        let Some(token) = caller.token.as_deref() else {
            // etcd's AuthInfoFromTLS: the certificate's CN at the current
            // auth revision (the user need not exist until it is checked).
            return Ok(match &caller.common_name {
                Some(name) => AuthInfo {
                    username: name.clone(),
                    revision: self.auth.read().expect("auth lock").revision(),
                },
                None => AuthInfo::default(),
            });
        };
        if let Some(jwt) = &self.cfg.jwt {
            // Stateless: the token names the user and the auth revision it
            // was issued at; the checks refuse it once the store moved on.
            return jwt.info(token, unix_now_s()).ok_or(auth_error(AuthError::InvalidAuthToken));
        }
        // A simple token exists on this member once the entry that issued it
        // is applied here; a member that lags waits for it (as etcd does, up
        // to the request timeout).
        if let Some(index) = SimpleTokens::index_of(token) {
            let mut applied = self.shared.applied_index.subscribe();
            let waited =
                tokio::time::timeout(self.cfg.request_timeout(), applied.wait_for(|a| *a >= index))
                    .await;
            if !matches!(waited, Ok(Ok(_))) {
                return Err(auth_error(AuthError::InvalidAuthToken));
            }
        }
        let store = self.auth.read().expect("auth lock");
        match store.auth_info_from_token(token, monotonic_ms()) {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Ok(AuthInfo::default()),
            Err(err) => Err(auth_error(err)),
        }
    }

    /// May `info` read `[key, range_end)` (`range_end` empty: the key)?
    pub fn check_read(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), ServerError> {
        let store = self.auth.read().expect("auth lock");
        store.check(info, key, range_end, Access::Read).map_err(auth_error)
    }

    /// Is root (by role) the user of `info`, or auth off?
    pub fn check_admin(&self, info: &AuthInfo) -> Result<(), ServerError> {
        self.auth.read().expect("auth lock").check_admin(info).map_err(auth_error)
    }

    /// etcd's `doSerialize` ending: a read whose credentials were checked at
    /// one auth revision and that was answered after the store moved on fails
    /// (the client re-authenticates and retries), so it cannot return what a
    /// permission revoked meanwhile no longer allows.
    pub fn check_still_current(&self, info: &AuthInfo) -> Result<(), ServerError> {
        let current = self.auth.read().expect("auth lock").revision();
        if info.revision != 0 && info.revision != current {
            return Err(auth_error(AuthError::OldRevision));
        }
        Ok(())
    }

    /// A Range for the client that sent `token`, as etcd serves it: the
    /// barrier (unless serializable), the permission check, the read.
    pub async fn range_as(
        &self,
        request: &RangeRequest,
        caller: &Caller,
    ) -> Result<RangeResponse, ServerError> {
        let info = self.before_range(request, caller).await?;
        let response = self.read_range(request)?;
        self.check_still_current(&info)?;
        Ok(response)
    }

    /// [`EtcdServer::range_as`] answering with the header and the encoding of
    /// the rest of the `RangeResponse` (see [`etcd_mvcc::KvStore::range_encoded`]).
    pub async fn range_encoded_as(
        &self,
        request: &RangeRequest,
        caller: &Caller,
    ) -> Result<(ResponseHeader, Vec<u8>), ServerError> {
        let info = self.before_range(request, caller).await?;
        let (body, revision) = self.kv.range_encoded(request).map_err(read_error)?;
        self.check_still_current(&info)?;
        Ok((self.header(revision), body))
    }

    /// What comes before a Range's read: the barrier (unless serializable)
    /// and the permission check; the credentials it was checked with.
    async fn before_range(
        &self,
        request: &RangeRequest,
        caller: &Caller,
    ) -> Result<AuthInfo, ServerError> {
        if !request.serializable {
            self.read_barrier().await?;
        }
        let info = self.credentials(caller).await?;
        self.check_read(&info, &request.key, &request.range_end)?;
        Ok(info)
    }

    /// The credentials the member itself acts with (revoking expired
    /// leases): root at the current auth revision.
    pub fn root_credentials(&self) -> AuthInfo {
        let revision = self.auth.read().expect("auth lock").revision();
        AuthInfo { username: etcd_auth::ROOT_USER.to_string(), revision }
    }

    /// etcd's `checkLeaseTimeToLive`, first half: the caller's credentials
    /// for listing a lease's keys (`None`: auth is off, nothing to check).
    pub async fn lease_keys_reader(
        &self,
        caller: &Caller,
    ) -> Result<Option<AuthInfo>, ServerError> {
        if !self.auth_enabled() {
            return Ok(None);
        }
        let info = self.credentials(caller).await?;
        if info.revision == 0 {
            return Err(auth_error(AuthError::UserEmpty));
        }
        Ok(Some(info))
    }

    /// etcd's `checkLeaseTimeToLive`, second half: read permission on every
    /// key the answer lists. The keys checked are the ones returned (by the
    /// leader's lessor), not this member's view, which may lag behind it.
    pub fn check_lease_keys_readable(
        &self,
        info: &AuthInfo,
        keys: &[Vec<u8>],
    ) -> Result<(), ServerError> {
        for key in keys {
            self.check_read(info, key, &[])?;
        }
        self.check_still_current(info)
    }

    /// Proposes `request` on behalf of `info`: the applier checks its
    /// permissions with these credentials at the auth revision they name.
    pub async fn propose_as(
        &self,
        mut request: InternalRaftRequest,
        info: &AuthInfo,
    ) -> Result<Applied, ServerError> {
        let header = request.header.get_or_insert_with(Default::default);
        header.username = info.username.clone();
        header.auth_revision = info.revision;
        self.propose(request).await
    }

    /// The base64 of the bcrypt hash of `password` at `--bcrypt-cost`: what
    /// `UserAdd` and `UserChangePassword` send through Raft instead of it.
    pub async fn hash_password(&self, password: String) -> Result<String, ServerError> {
        let cost = self.cfg.bcrypt_cost;
        let hash = tokio::task::spawn_blocking(move || etcd_auth::hash_password(&password, cost))
            .await
            .map_err(|_| ServerError::Stopped)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(hash))
    }

    /// `Authenticate`: after a read barrier (so the password is checked
    /// against every committed change), checks the password here, then
    /// proposes the token; if the auth store changed meanwhile, checks again
    /// (etcd's loop), so a token never outlives a password change it raced.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, ServerError> {
        self.read_barrier().await?;
        loop {
            let (hash, checked) =
                self.auth.read().expect("auth lock").password_hash(name).map_err(auth_error)?;
            let given = password.to_string();
            let matches =
                tokio::task::spawn_blocking(move || etcd_auth::check_password(&hash, &given))
                    .await
                    .map_err(|_| ServerError::Stopped)?;
            if !matches {
                tracing::info!(user = name, "invalid password");
                return Err(auth_error(AuthError::AuthFailed));
            }
            if let Some(jwt) = &self.cfg.jwt {
                // A JWT needs no shared state: this member signs it for the
                // auth revision the password was checked at.
                return jwt.assign(name, checked, unix_now_s()).map_err(|err| match err {
                    etcd_auth::JwtError::VerifyOnly => auth_error(AuthError::VerifyOnly),
                    other => {
                        tracing::error!(error = %other, "failed to sign a JWT token");
                        auth_error(AuthError::InvalidAuthToken)
                    }
                });
            }
            let prefix: String = {
                let mut rng = rand::thread_rng();
                (0..SIMPLE_TOKEN_PREFIX_LEN)
                    .map(|_| TOKEN_LETTERS[rng.gen_range(0..TOKEN_LETTERS.len())] as char)
                    .collect()
            };
            let request = InternalRaftRequest {
                authenticate: Some(InternalAuthenticateRequest {
                    name: name.to_string(),
                    password: String::new(),
                    simple_token: prefix,
                }),
                ..Default::default()
            };
            let applied = self.propose(request).await?;
            let token = match applied.result? {
                Response::Auth(AuthReply::Authenticate(response)) => response.token,
                other => {
                    tracing::error!(?other, "applied result does not match its request");
                    return Err(ServerError::NotCapable);
                }
            };
            if checked == self.auth.read().expect("auth lock").revision() {
                return Ok(token);
            }
            tracing::info!(user = name, "revision when password checked became stale; retrying");
        }
    }
}
