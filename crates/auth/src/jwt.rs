//! JWT tokens (etcd's `--auth-token jwt,...`): stateless, signed tokens.
//!
//! A token is a JWS in compact form, `base64url(header).base64url(claims).
//! base64url(signature)`, with the claims etcd puts in it: `username`,
//! `revision` (the auth revision when it was issued: a token issued before
//! any later auth change fails with `revision of auth store is old`, and the
//! client authenticates again) and `exp` (Unix seconds). Any member with the
//! key verifies it; a member given only the public key verifies but cannot
//! issue. Sign methods are those of etcd's JWT library: HS256/384/512 (the
//! private key file's bytes are the secret), RS256/384/512, PS256/384/512 and
//! ES256/384/512. Keys are PEM: RSA as PKCS#1 or PKCS#8, EC as SEC1 or
//! PKCS#8, public keys as SubjectPublicKeyInfo or inside a certificate.
//!
//! No I/O and no clock here: the caller reads the key files and passes the
//! time.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::ecdsa::signature::{Signer, Verifier};
use ring::rand::SystemRandom;
use ring::signature::{self as rsig, RsaKeyPair};

use crate::AuthInfo;

/// etcd's default JWT `ttl`: 5 minutes.
pub const DEFAULT_JWT_TTL_S: u64 = 300;

/// Why JWT options were refused at startup (etcd's messages).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// `sign-method` names no method etcd knows.
    #[error("auth: invalid auth signature method")]
    InvalidMethod,
    /// No key for the method.
    #[error("auth: missing key data")]
    MissingKey,
    /// A key file that does not hold a key of the method's kind.
    #[error("auth: invalid key: {0}")]
    InvalidKey(String),
    /// Issuing a token with only the public key.
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    RsaPss,
    Ecdsa,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// The signing key, or the verifying key of a verify-only member.
enum Key {
    Hmac(ring::hmac::Key),
    RsaPrivate(Box<RsaKeyPair>),
    /// DER RSAPublicKey.
    RsaPublic(Vec<u8>),
    P256(Option<p256::ecdsa::SigningKey>, p256::ecdsa::VerifyingKey),
    P384(Option<p384::ecdsa::SigningKey>, p384::ecdsa::VerifyingKey),
    P521(Option<p521::ecdsa::SigningKey>, p521::ecdsa::VerifyingKey),
}

/// JWT issuing and verification with one key.
pub struct JwtTokens {
    alg: &'static str,
    family: Family,
    hash: Hash,
    key: Key,
    ttl_s: u64,
    rng: SystemRandom,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens").field("alg", &self.alg).field("ttl_s", &self.ttl_s).finish()
    }
}

fn method(name: &str) -> Option<(&'static str, Family, Hash)> {
    use Family::*;
    use Hash::*;
    Some(match name {
        "HS256" => ("HS256", Hmac, Sha256),
        "HS384" => ("HS384", Hmac, Sha384),
        "HS512" => ("HS512", Hmac, Sha512),
        "RS256" => ("RS256", Rsa, Sha256),
        "RS384" => ("RS384", Rsa, Sha384),
        "RS512" => ("RS512", Rsa, Sha512),
        "PS256" => ("PS256", RsaPss, Sha256),
        "PS384" => ("PS384", RsaPss, Sha384),
        "PS512" => ("PS512", RsaPss, Sha512),
        "ES256" => ("ES256", Ecdsa, Sha256),
        "ES384" => ("ES384", Ecdsa, Sha384),
        "ES512" => ("ES512", Ecdsa, Sha512),
        _ => return None,
    })
}

/// The first PEM block of `data`: (label, DER).
fn pem_block(data: &[u8]) -> Result<(String, Vec<u8>), JwtError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(data)
        .map_err(|e| JwtError::InvalidKey(format!("not a PEM file: {e}")))?;
    Ok((pem.label, pem.contents))
}

/// The raw public key bits of a SubjectPublicKeyInfo or certificate PEM.
fn public_key_bits(data: &[u8]) -> Result<Vec<u8>, JwtError> {
    use x509_parser::prelude::FromDer;
    let (label, der) = pem_block(data)?;
    let bad = |e: String| JwtError::InvalidKey(e);
    match label.as_str() {
        "CERTIFICATE" => {
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
                .map_err(|e| bad(e.to_string()))?;
            Ok(cert.tbs_certificate.subject_pki.subject_public_key.data.to_vec())
        }
        "PUBLIC KEY" => {
            let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der)
                .map_err(|e| bad(e.to_string()))?;
            Ok(spki.subject_public_key.data.to_vec())
        }
        "RSA PUBLIC KEY" => Ok(der),
        other => Err(bad(format!("unexpected PEM block {other:?} for a public key"))),
    }
}

macro_rules! ec_key {
    ($curve:ident, $variant:ident, $private:expr, $public:expr) => {{
        use $curve::ecdsa::{SigningKey, VerifyingKey};
        use $curve::pkcs8::DecodePrivateKey;
        let invalid = || JwtError::InvalidKey(format!("not a {} key", stringify!($curve)));
        let signing = match $private {
            Some(data) => {
                let (label, der) = pem_block(data)?;
                let secret = match label.as_str() {
                    "EC PRIVATE KEY" => $curve::SecretKey::from_sec1_der(&der).ok(),
                    _ => $curve::SecretKey::from_pkcs8_der(&der).ok(),
                }
                .ok_or_else(invalid)?;
                Some(SigningKey::from_bytes(&secret.to_bytes()).map_err(|_| invalid())?)
            }
            None => None,
        };
        let verifying = match (&signing, $public) {
            (Some(signing), _) => VerifyingKey::from(signing),
            (None, Some(data)) => {
                VerifyingKey::from_sec1_bytes(&public_key_bits(data)?).map_err(|_| invalid())?
            }
            (None, None) => return Err(JwtError::MissingKey),
        };
        Key::$variant(signing, verifying)
    }};
}

impl JwtTokens {
    /// Tokens signed with `sign_method`; keys are PEM file contents (HMAC:
    /// the private key file is the secret). Without a private key the member
    /// verifies only. `ttl_s` 0: etcd's 5 minutes.
    pub fn new(
        sign_method: &str,
        private_key: Option<&[u8]>,
        public_key: Option<&[u8]>,
        ttl_s: u64,
    ) -> Result<JwtTokens, JwtError> {
        let (alg, family, hash) = method(sign_method).ok_or(JwtError::InvalidMethod)?;
        let key = match family {
            Family::Hmac => {
                let secret = private_key.ok_or(JwtError::MissingKey)?;
                let algorithm = match hash {
                    Hash::Sha256 => ring::hmac::HMAC_SHA256,
                    Hash::Sha384 => ring::hmac::HMAC_SHA384,
                    Hash::Sha512 => ring::hmac::HMAC_SHA512,
                };
                Key::Hmac(ring::hmac::Key::new(algorithm, secret))
            }
            Family::Rsa | Family::RsaPss => match (private_key, public_key) {
                (Some(data), _) => {
                    let (label, der) = pem_block(data)?;
                    let pair = match label.as_str() {
                        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
                        _ => RsaKeyPair::from_pkcs8(&der),
                    }
                    .map_err(|e| JwtError::InvalidKey(format!("not an RSA private key: {e}")))?;
                    Key::RsaPrivate(Box::new(pair))
                }
                (None, Some(data)) => Key::RsaPublic(public_key_bits(data)?),
                (None, None) => return Err(JwtError::MissingKey),
            },
            Family::Ecdsa => match hash {
                Hash::Sha256 => ec_key!(p256, P256, private_key, public_key),
                Hash::Sha384 => ec_key!(p384, P384, private_key, public_key),
                Hash::Sha512 => ec_key!(p521, P521, private_key, public_key),
            },
        };
        let ttl_s = if ttl_s == 0 { DEFAULT_JWT_TTL_S } else { ttl_s };
        Ok(JwtTokens { alg, family, hash, key, ttl_s, rng: SystemRandom::new() })
    }

    /// Whether this member only verifies (it was given no private key).
    pub fn verify_only(&self) -> bool {
        match &self.key {
            Key::Hmac(_) | Key::RsaPrivate(_) => false,
            Key::RsaPublic(_) => true,
            Key::P256(s, _) => s.is_none(),
            Key::P384(s, _) => s.is_none(),
            Key::P521(s, _) => s.is_none(),
        }
    }

    /// A token for `username` at auth `revision`, expiring `ttl` after
    /// `now_unix_s`.
    pub fn assign(
        &self,
        username: &str,
        revision: u64,
        now_unix_s: u64,
    ) -> Result<String, JwtError> {
        if self.verify_only() {
            return Err(JwtError::VerifyOnly);
        }
        // Keys in the order Go's JSON encoder writes a map: sorted.
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, self.alg);
        let claims = format!(
            r#"{{"exp":{},"revision":{revision},"username":{}}}"#,
            now_unix_s + self.ttl_s,
            serde_json::to_string(username).expect("a string encodes"),
        );
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let signature = self.sign(signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwtError> {
        let failed = |e: String| JwtError::InvalidKey(format!("signing failed: {e}"));
        Ok(match &self.key {
            Key::Hmac(key) => ring::hmac::sign(key, message).as_ref().to_vec(),
            Key::RsaPrivate(pair) => {
                let padding: &'static dyn rsig::RsaEncoding = match (self.family, self.hash) {
                    (Family::Rsa, Hash::Sha256) => &rsig::RSA_PKCS1_SHA256,
                    (Family::Rsa, Hash::Sha384) => &rsig::RSA_PKCS1_SHA384,
                    (Family::Rsa, Hash::Sha512) => &rsig::RSA_PKCS1_SHA512,
                    (_, Hash::Sha256) => &rsig::RSA_PSS_SHA256,
                    (_, Hash::Sha384) => &rsig::RSA_PSS_SHA384,
                    (_, Hash::Sha512) => &rsig::RSA_PSS_SHA512,
                };
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &self.rng, message, &mut signature)
                    .map_err(|e| failed(e.to_string()))?;
                signature
            }
            Key::P256(Some(key), _) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            Key::P384(Some(key), _) => {
                let signature: p384::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            Key::P521(Some(key), _) => {
                let signature: p521::ecdsa::Signature = key.sign(message);
                signature.to_bytes().to_vec()
            }
            Key::RsaPublic(_) | Key::P256(None, _) | Key::P384(None, _) | Key::P521(None, _) => {
                return Err(JwtError::VerifyOnly)
            }
        })
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let rsa = |public: &[u8]| {
            let algorithm: &'static dyn rsig::VerificationAlgorithm = match (self.family, self.hash)
            {
                (Family::Rsa, Hash::Sha256) => &rsig::RSA_PKCS1_2048_8192_SHA256,
                (Family::Rsa, Hash::Sha384) => &rsig::RSA_PKCS1_2048_8192_SHA384,
                (Family::Rsa, Hash::Sha512) => &rsig::RSA_PKCS1_2048_8192_SHA512,
                (_, Hash::Sha256) => &rsig::RSA_PSS_2048_8192_SHA256,
                (_, Hash::Sha384) => &rsig::RSA_PSS_2048_8192_SHA384,
                (_, Hash::Sha512) => &rsig::RSA_PSS_2048_8192_SHA512,
            };
            rsig::UnparsedPublicKey::new(algorithm, public).verify(message, signature).is_ok()
        };
        match &self.key {
            Key::Hmac(key) => ring::hmac::verify(key, message, signature).is_ok(),
            Key::RsaPrivate(pair) => rsa(pair.public().as_ref()),
            Key::RsaPublic(public) => rsa(public),
            Key::P256(_, key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
            Key::P384(_, key) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
            Key::P521(_, key) => p521::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify(message, &s).is_ok()),
        }
    }

    /// Who `token` names and at which auth revision, if it is a token signed
    /// with this key and method that has not expired (`exp`, and `nbf`/`iat`
    /// when present, as etcd's JWT library checks them).
    pub fn info(&self, token: &str, now_unix_s: u64) -> Option<AuthInfo> {
        let mut parts = token.split('.');
        let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let decode =
            |part: &str| URL_SAFE_NO_PAD.decode(part).or_else(|_| URL_SAFE.decode(part)).ok();
        let head: serde_json::Value = serde_json::from_slice(&decode(header)?).ok()?;
        if head.get("alg")?.as_str()? != self.alg {
            return None;
        }
        let signing_input = &token[..header.len() + 1 + claims.len()];
        if !self.verify(signing_input.as_bytes(), &decode(signature)?) {
            return None;
        }
        let claims: serde_json::Value = serde_json::from_slice(&decode(claims)?).ok()?;
        let now = now_unix_s as f64;
        let number = |name: &str| claims.get(name).map(serde_json::Value::as_f64);
        match number("exp") {
            Some(Some(exp)) if now > exp => return None,
            Some(None) => return None,
            _ => {}
        }
        for not_before in ["nbf", "iat"] {
            match number(not_before) {
                Some(Some(t)) if now < t => return None,
                Some(None) => return None,
                _ => {}
            }
        }
        let username = claims.get("username")?.as_str()?.to_string();
        let revision = claims.get("revision")?.as_f64()?;
        if revision < 0.0 {
            return None;
        }
        Some(AuthInfo { username, revision: revision as u64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const NOW: u64 = 1_700_000_000;

    fn round_trip(method: &str, private: &str, public: &str) {
        let signer = JwtTokens::new(method, Some(&key(private)), None, 60).expect(method);
        let token = signer.assign("alice", 7, NOW).expect("sign");
        let info = signer.info(&token, NOW + 60).expect("valid until exp");
        assert_eq!((info.username.as_str(), info.revision), ("alice", 7), "{method}");
        assert_eq!(signer.info(&token, NOW + 61), None, "{method}: expired");
        let verifier = JwtTokens::new(method, None, Some(&key(public)), 60).expect(method);
        assert!(verifier.verify_only());
        assert_eq!(verifier.assign("alice", 7, NOW), Err(JwtError::VerifyOnly));
        assert_eq!(verifier.info(&token, NOW).map(|i| i.revision), Some(7), "{method}");
        // Any change to the claims breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let claims = r#"{"exp":1800000000,"revision":7,"username":"root"}"#;
        parts[1] = URL_SAFE_NO_PAD.encode(claims);
        assert_eq!(verifier.info(&parts.join("."), NOW), None, "{method}: forged claims");
    }

    #[test]
    fn every_sign_method_signs_and_verifies() {
        for method in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
            round_trip(method, "rsa.key", "rsa.pub");
            round_trip(method, "rsa.key", "rsa.crt");
        }
        round_trip("ES256", "p256.key", "p256.pub");
        round_trip("ES384", "p384.key", "p384.pub");
        round_trip("ES512", "p521.key", "p521.pub");
        let hmac = JwtTokens::new("HS256", Some(b"secret"), None, 0).expect("hmac");
        let token = hmac.assign("bob", 1, NOW).expect("sign");
        assert_eq!(
            hmac.info(&token, NOW + DEFAULT_JWT_TTL_S).map(|i| i.username),
            Some("bob".into())
        );
    }

    #[test]
    fn tokens_of_another_key_or_method_are_refused() {
        let ours = JwtTokens::new("RS256", Some(&key("rsa.key")), None, 60).expect("rsa");
        let theirs = JwtTokens::new("RS256", Some(&key("other.key")), None, 60).expect("pkcs8");
        let token = theirs.assign("root", 1, NOW).expect("sign");
        assert_eq!(ours.info(&token, NOW), None);
        let ps = JwtTokens::new("PS256", Some(&key("rsa.key")), None, 60).expect("rsa");
        assert_eq!(ours.info(&ps.assign("root", 1, NOW).expect("sign"), NOW), None);
        // "alg": "none" and garbage.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"revision":1,"username":"root"}"#)
        );
        assert_eq!(ours.info(&none, NOW), None);
        assert_eq!(ours.info("abc.def", NOW), None);
        assert_eq!(ours.info("abcdefghijklmnop.12", NOW), None);
    }

    #[test]
    fn bad_options_get_etcds_errors() {
        assert_eq!(JwtTokens::new("XX256", None, None, 0).unwrap_err(), JwtError::InvalidMethod);
        assert_eq!(JwtTokens::new("RS256", None, None, 0).unwrap_err(), JwtError::MissingKey);
        assert_eq!(JwtTokens::new("HS256", None, Some(b"x"), 0).unwrap_err(), JwtError::MissingKey);
        assert!(matches!(
            JwtTokens::new("ES256", Some(&key("rsa.key")), None, 0),
            Err(JwtError::InvalidKey(_))
        ));
    }

    #[test]
    fn claims_are_written_as_etcd_writes_them() {
        let hmac = JwtTokens::new("HS256", Some(b"k"), None, 300).expect("hmac");
        let token = hmac.assign("alice", 3, NOW).expect("sign");
        let mut parts = token.split('.');
        let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        let claims = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
        assert_eq!(claims, br#"{"exp":1700000300,"revision":3,"username":"alice"}"#);
    }
}
