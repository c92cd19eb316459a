//! Password hashing: bcrypt, as etcd (Go's `x/crypto/bcrypt`, `$2a$` hashes).
//! Hashes are computed on the member that receives the request, so only the
//! hash ever travels through Raft and reaches the backend.

/// etcd's `--bcrypt-cost` default (Go's `bcrypt.DefaultCost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// Go's `bcrypt.MinCost`.
const MIN_COST: u32 = 4;
/// Go's `bcrypt.MaxCost`.
const MAX_COST: u32 = 31;

/// The cost etcd would use for `--bcrypt-cost=cost`: an out-of-range cost
/// falls back to the default (etcd logs a warning and does the same).
pub fn valid_bcrypt_cost(cost: u32) -> Option<u32> {
    (MIN_COST..=MAX_COST).contains(&cost).then_some(cost)
}

/// The bcrypt hash of `password` at `cost`, in the `$2a$` form Go writes (so a
/// backend converted to etcd's format authenticates the same users).
pub fn hash_password(password: &str, cost: u32) -> Vec<u8> {
    let cost = valid_bcrypt_cost(cost).unwrap_or(DEFAULT_BCRYPT_COST);
    let parts = bcrypt::hash_with_result(password, cost)
        .expect("invariant: bcrypt hashing at a valid cost cannot fail");
    parts.format_for_version(bcrypt::Version::TwoA).into_bytes()
}

/// Whether `password` matches the stored bcrypt `hash` (any of the `$2a$`,
/// `$2b$`, `$2y$` forms). A malformed hash matches nothing.
pub fn check_password(hash: &[u8], password: &str) -> bool {
    let Ok(hash) = std::str::from_utf8(hash) else {
        return false;
    };
    bcrypt::verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("secret", 4);
        assert!(hash.starts_with(b"$2a$04$"));
        assert!(check_password(&hash, "secret"));
        assert!(!check_password(&hash, "Secret"));
        assert!(!check_password(b"not a hash", "secret"));
    }

    #[test]
    fn a_hash_made_by_go_verifies() {
        // bcrypt.GenerateFromPassword([]byte("pass"), 4) from Go's x/crypto,
        // the library etcd hashes with.
        let go = b"$2a$04$hgo/eN6Bp0z2nrqt1i5ameNW./iHyu.1yWkNmQeX9HkiuBrTe1/my";
        assert!(check_password(go, "pass"));
        assert!(!check_password(go, "wrong"));
    }

    #[test]
    fn an_invalid_cost_falls_back_to_the_default() {
        assert_eq!(valid_bcrypt_cost(3), None);
        assert_eq!(valid_bcrypt_cost(32), None);
        assert_eq!(valid_bcrypt_cost(10), Some(10));
    }
}
