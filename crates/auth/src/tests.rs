//! The store's rules, applied to a real backend file and re-read from it.

use etcd_proto::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use etcd_proto::etcdserverpb::{
    compare, request_op, AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest,
    AuthUserAddRequest, AuthUserChangePasswordRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use etcd_storage::{Backend, WriteTxn};

use crate::*;

struct Env {
    _dir: tempfile::TempDir,
    backend: Backend,
    store: AuthStore,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(&dir.path().join("db")).unwrap();
    let store = AuthStore::load(&backend.begin_read().unwrap(), 0).unwrap();
    Env { _dir: dir, backend, store }
}

impl Env {
    /// Applies `f` in one committed write transaction; storage must not fail.
    fn apply<T>(
        &mut self,
        f: impl FnOnce(&mut AuthStore, &WriteTxn) -> Outcome<T>,
    ) -> Result<T, AuthError> {
        let txn = self.backend.begin_write().unwrap();
        let out = f(&mut self.store, &txn).unwrap();
        txn.commit(false).unwrap();
        out
    }

    fn add_user(&mut self, name: &str, password: &str) -> Result<(), AuthError> {
        let hashed = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            hash_password(password, 4),
        );
        let request =
            AuthUserAddRequest { name: name.into(), hashed_password: hashed, ..Default::default() };
        self.apply(|s, t| s.apply_user_add(t, &request))
    }

    fn grant(&mut self, user: &str, role: &str) -> Result<(), AuthError> {
        self.apply(|s, t| s.apply_user_grant_role(t, user, role))
    }

    fn grant_perm(
        &mut self,
        role: &str,
        kind: PermType,
        key: &str,
        end: &[u8],
    ) -> Result<(), AuthError> {
        let request = AuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: Some(Permission {
                perm_type: kind as i32,
                key: key.into(),
                range_end: end.into(),
            }),
        };
        self.apply(|s, t| s.apply_role_grant_permission(t, &request))
    }

    fn enable_with_root(&mut self) {
        self.add_user("root", "rootpw").unwrap();
        self.grant("root", "root").unwrap();
        self.apply(|s, t| s.apply_enable(t)).unwrap();
    }

    /// The store as a restarted member loads it.
    fn reloaded(&self) -> AuthStore {
        AuthStore::load(&self.backend.begin_read().unwrap(), 0).unwrap()
    }

    fn info(&self, user: &str) -> AuthInfo {
        AuthInfo { username: user.into(), revision: self.store.revision() }
    }
}

#[test]
fn a_fresh_store_is_disabled_at_revision_one_and_permits_everything() {
    let e = env();
    assert_eq!(e.store.status(), (false, 1));
    let nobody = AuthInfo::default();
    assert_eq!(e.store.check(&nobody, b"k", b"", Access::Write), Ok(()));
    assert_eq!(e.store.check_admin(&nobody), Ok(()));
}

#[test]
fn enable_needs_root_with_the_root_role_and_does_not_bump_the_revision() {
    let mut e = env();
    assert_eq!(e.apply(|s, t| s.apply_enable(t)), Err(AuthError::RootUserNotExist));
    e.add_user("root", "pw").unwrap();
    assert_eq!(e.apply(|s, t| s.apply_enable(t)), Err(AuthError::RootRoleNotExist));
    // The root role needs no role entry to be granted.
    e.grant("root", "root").unwrap();
    let before = e.store.revision();
    e.apply(|s, t| s.apply_enable(t)).unwrap();
    assert_eq!(e.store.status(), (true, before));
    e.apply(|s, t| s.apply_enable(t)).unwrap();
    assert_eq!(e.store.revision(), before);
    assert_eq!(e.reloaded().status(), (true, before));
    e.apply(|s, t| s.apply_disable(t)).unwrap();
    assert_eq!(e.store.status(), (false, before + 1));
    e.apply(|s, t| s.apply_disable(t)).unwrap();
    assert_eq!(e.reloaded().status(), (false, before + 1));
}

#[test]
fn every_change_bumps_the_revision_once_and_survives_a_reload() {
    let mut e = env();
    let mut expected = 1;
    e.add_user("alice", "pw").unwrap();
    expected += 1;
    assert_eq!(e.store.revision(), expected);
    e.apply(|s, t| s.apply_role_add(t, "r")).unwrap();
    expected += 1;
    e.grant("alice", "r").unwrap();
    expected += 1;
    // Granting a held role changes nothing.
    e.grant("alice", "r").unwrap();
    e.grant_perm("r", PermType::Read, "a", b"b").unwrap();
    expected += 1;
    assert_eq!(e.store.revision(), expected);
    // Failures change nothing.
    assert_eq!(e.add_user("alice", "x"), Err(AuthError::UserAlreadyExist));
    assert_eq!(e.add_user("", "x"), Err(AuthError::UserEmpty));
    assert_eq!(e.apply(|s, t| s.apply_role_add(t, "")), Err(AuthError::RoleEmpty));
    assert_eq!(e.apply(|s, t| s.apply_role_add(t, "r")), Err(AuthError::RoleAlreadyExist));
    assert_eq!(e.grant("bob", "r"), Err(AuthError::UserNotFound));
    assert_eq!(e.grant("alice", "nope"), Err(AuthError::RoleNotFound));
    assert_eq!(e.store.revision(), expected);
    let reloaded = e.reloaded();
    assert_eq!(reloaded.revision(), expected);
    assert_eq!(reloaded.user_roles("alice"), Ok(vec!["r".to_string()]));
    assert_eq!(reloaded.role_permissions("r").unwrap().len(), 1);
    assert_eq!(reloaded.user_names(), vec!["alice".to_string()]);
    assert_eq!(reloaded.role_names(), vec!["r".to_string()]);
}

#[test]
fn root_cannot_be_removed_while_auth_is_enabled() {
    let mut e = env();
    e.enable_with_root();
    assert_eq!(e.apply(|s, t| s.apply_user_delete(t, "root")), Err(AuthError::InvalidAuthMgmt));
    assert_eq!(e.apply(|s, t| s.apply_role_delete(t, "root")), Err(AuthError::InvalidAuthMgmt));
    assert_eq!(
        e.apply(|s, t| s.apply_user_revoke_role(t, "root", "root")),
        Err(AuthError::InvalidAuthMgmt)
    );
    e.apply(|s, t| s.apply_disable(t)).unwrap();
    e.apply(|s, t| s.apply_user_revoke_role(t, "root", "root")).unwrap();
    e.apply(|s, t| s.apply_user_delete(t, "root")).unwrap();
    assert_eq!(e.apply(|s, t| s.apply_user_delete(t, "root")), Err(AuthError::UserNotFound));
}

#[test]
fn deleting_a_role_revokes_it_from_every_user() {
    let mut e = env();
    e.apply(|s, t| s.apply_role_add(t, "r")).unwrap();
    e.apply(|s, t| s.apply_role_add(t, "s")).unwrap();
    for user in ["a", "b"] {
        e.add_user(user, "pw").unwrap();
        e.grant(user, "r").unwrap();
    }
    e.grant("b", "s").unwrap();
    e.apply(|s, t| s.apply_role_delete(t, "r")).unwrap();
    let reloaded = e.reloaded();
    assert_eq!(reloaded.user_roles("a"), Ok(vec![]));
    assert_eq!(reloaded.user_roles("b"), Ok(vec!["s".to_string()]));
    assert_eq!(reloaded.role_names(), vec!["s".to_string()]);
    assert_eq!(
        e.apply(|s, t| s.apply_user_revoke_role(t, "a", "r")),
        Err(AuthError::RoleNotGranted)
    );
}

#[test]
fn permissions_are_granted_updated_and_revoked_as_etcd_does() {
    let mut e = env();
    e.apply(|s, t| s.apply_role_add(t, "r")).unwrap();
    e.grant_perm("r", PermType::Read, "b", b"").unwrap();
    e.grant_perm("r", PermType::Read, "a", b"c").unwrap();
    // Same key and range end: the type is updated in place.
    e.grant_perm("r", PermType::Readwrite, "a", b"c").unwrap();
    let perms = e.store.role_permissions("r").unwrap();
    let keys: Vec<(&[u8], i32)> = perms.iter().map(|p| (p.key.as_slice(), p.perm_type)).collect();
    assert_eq!(
        keys,
        vec![(&b"a"[..], PermType::Readwrite as i32), (&b"b"[..], PermType::Read as i32)]
    );
    let request = AuthRoleGrantPermissionRequest { name: "r".into(), perm: None };
    assert_eq!(
        e.apply(|s, t| s.apply_role_grant_permission(t, &request)),
        Err(AuthError::PermissionNotGiven)
    );
    assert_eq!(e.grant_perm("r", PermType::Read, "b", b"a"), Err(AuthError::InvalidAuthMgmt));
    assert_eq!(e.grant_perm("nope", PermType::Read, "b", b""), Err(AuthError::RoleNotFound));
    let revoke = |key: &str, end: &[u8]| AuthRoleRevokePermissionRequest {
        role: "r".into(),
        key: key.into(),
        range_end: end.into(),
    };
    let r = revoke("a", b"");
    assert_eq!(
        e.apply(|s, t| s.apply_role_revoke_permission(t, &r)),
        Err(AuthError::PermissionNotGranted)
    );
    let r = revoke("a", b"c");
    e.apply(|s, t| s.apply_role_revoke_permission(t, &r)).unwrap();
    assert_eq!(e.reloaded().role_permissions("r").unwrap().len(), 1);
}

#[test]
fn requests_are_checked_against_the_users_roles() {
    let mut e = env();
    e.enable_with_root();
    e.add_user("alice", "pw").unwrap();
    e.apply(|s, t| s.apply_role_add(t, "reader")).unwrap();
    e.grant_perm("reader", PermType::Read, "foo", b"fop").unwrap();
    e.grant("alice", "reader").unwrap();
    let alice = e.info("alice");
    let root = e.info("root");
    assert_eq!(e.store.check(&alice, b"foo1", b"", Access::Read), Ok(()));
    assert_eq!(
        e.store.check(&alice, b"foo1", b"", Access::Write),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(e.store.check(&alice, b"bar", b"", Access::Read), Err(AuthError::PermissionDenied));
    assert_eq!(e.store.check(&root, b"bar", b"", Access::Write), Ok(()));
    assert_eq!(
        e.store.check(&AuthInfo::default(), b"foo", b"", Access::Read),
        Err(AuthError::UserEmpty)
    );
    let ghost = AuthInfo { username: "ghost".into(), revision: e.store.revision() };
    assert_eq!(e.store.check(&ghost, b"foo", b"", Access::Read), Err(AuthError::PermissionDenied));
    // Admin: root only.
    assert_eq!(e.store.check_admin(&root), Ok(()));
    assert_eq!(e.store.check_admin(&alice), Err(AuthError::PermissionDenied));
    assert_eq!(e.store.check_admin(&ghost), Err(AuthError::UserNotFound));
    assert_eq!(e.store.check_admin(&AuthInfo::default()), Err(AuthError::UserEmpty));
    // prev_kv needs read as well as write.
    e.grant_perm("reader", PermType::Write, "w", b"").unwrap();
    let alice = e.info("alice");
    let put = PutRequest { key: b"w".to_vec(), prev_kv: true, ..Default::default() };
    assert_eq!(e.store.check_put(&alice, &put), Err(AuthError::PermissionDenied));
    let put = PutRequest { key: b"w".to_vec(), ..Default::default() };
    assert_eq!(e.store.check_put(&alice, &put), Ok(()));
    let delete = DeleteRangeRequest {
        key: b"foo".to_vec(),
        range_end: b"fop".to_vec(),
        ..Default::default()
    };
    assert_eq!(e.store.check_delete_range(&alice, &delete), Err(AuthError::PermissionDenied));
}

#[test]
fn a_check_made_at_an_older_revision_is_refused() {
    let mut e = env();
    e.enable_with_root();
    let root = e.info("root");
    e.add_user("bob", "pw").unwrap();
    assert_eq!(e.store.check(&root, b"k", b"", Access::Write), Err(AuthError::OldRevision));
    assert_eq!(e.store.check(&e.info("root"), b"k", b"", Access::Write), Ok(()));
}

#[test]
fn txns_check_compares_both_branches_and_nested_txns() {
    let mut e = env();
    e.enable_with_root();
    e.add_user("alice", "pw").unwrap();
    e.apply(|s, t| s.apply_role_add(t, "r")).unwrap();
    e.grant_perm("r", PermType::Readwrite, "a", b"").unwrap();
    e.grant("alice", "r").unwrap();
    let alice = e.info("alice");
    let put = |key: &str| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            ..Default::default()
        })),
    };
    let range = |key: &str| RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.into(),
            ..Default::default()
        })),
    };
    let compare = |key: &str| Compare {
        key: key.into(),
        target: compare::CompareTarget::Version as i32,
        ..Default::default()
    };
    let ok = TxnRequest {
        compare: vec![compare("a")],
        success: vec![put("a")],
        failure: vec![range("a")],
    };
    assert_eq!(e.store.check_txn(&alice, &ok), Ok(()));
    let bad_compare = TxnRequest { compare: vec![compare("b")], ..ok.clone() };
    assert_eq!(e.store.check_txn(&alice, &bad_compare), Err(AuthError::PermissionDenied));
    let bad_failure = TxnRequest { failure: vec![put("b")], ..ok.clone() };
    assert_eq!(e.store.check_txn(&alice, &bad_failure), Err(AuthError::PermissionDenied));
    let nested = TxnRequest {
        success: vec![RequestOp { request: Some(request_op::Request::RequestTxn(bad_failure)) }],
        ..ok.clone()
    };
    assert_eq!(e.store.check_txn(&alice, &nested), Err(AuthError::PermissionDenied));
}

#[test]
fn authenticate_issues_tokens_that_name_the_user_until_invalidated() {
    let mut e = env();
    assert_eq!(e.store.password_hash("root"), Err(AuthError::AuthNotEnabled));
    e.enable_with_root();
    let (hash, revision) = e.store.password_hash("root").unwrap();
    assert!(check_password(&hash, "rootpw"));
    assert_eq!(revision, e.store.revision());
    assert_eq!(e.store.password_hash("ghost"), Err(AuthError::AuthFailed));
    let token = e.store.apply_authenticate("root", "abcdefghijklmnop", 42, 0).unwrap();
    assert_eq!(token, "abcdefghijklmnop.42");
    let info = e.store.auth_info_from_token(&token, 1).unwrap().unwrap();
    assert_eq!(info, e.info("root"));
    assert_eq!(e.store.auth_info_from_token("x.1", 1), Err(AuthError::InvalidAuthToken));
    // A new password drops the user's tokens.
    let change = AuthUserChangePasswordRequest {
        name: "root".into(),
        hashed_password: base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            hash_password("new", 4),
        ),
        ..Default::default()
    };
    e.apply(|s, t| s.apply_user_change_password(t, &change)).unwrap();
    assert_eq!(e.store.auth_info_from_token(&token, 2), Err(AuthError::InvalidAuthToken));
    let (hash, _) = e.store.password_hash("root").unwrap();
    assert!(check_password(&hash, "new"));
    // Disabled: tokens are not looked at.
    e.apply(|s, t| s.apply_disable(t)).unwrap();
    assert_eq!(e.store.auth_info_from_token("x.1", 3), Ok(None));
    assert_eq!(e.store.apply_authenticate("root", "p", 43, 3), Err(AuthError::AuthNotEnabled));
}

#[test]
fn a_user_without_password_cannot_authenticate_with_one() {
    let mut e = env();
    let request = AuthUserAddRequest {
        name: "cert-user".into(),
        options: Some(UserAddOptions { no_password: true }),
        ..Default::default()
    };
    e.apply(|s, t| s.apply_user_add(t, &request)).unwrap();
    e.enable_with_root();
    assert_eq!(e.store.password_hash("cert-user"), Err(AuthError::NoPasswordUser));
    assert_eq!(e.store.apply_authenticate("cert-user", "p", 9, 0), Err(AuthError::AuthFailed));
}
