//! The verifier of auto-TLS peers: etcd dials a member whose certificate is
//! self-signed with Go's `InsecureSkipVerify`, which accepts any certificate
//! but still checks that the handshake was signed by its key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug)]
pub(crate) struct AnyServerCert(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What etcd checks of the other side's certificate beyond the chain:
/// `--{client,peer}-crl-file` (no certificate of the chain is revoked, the
/// file re-read on every handshake as etcd does, so an updated list acts
/// without a restart), `--peer-cert-allowed-cn` (the leaf's CN is exactly
/// this) and `--{client,peer}-cert-allowed-hostname` (the leaf's SANs name
/// this host).
#[derive(Debug, Clone, Default)]
pub(crate) struct Extra {
    pub(crate) crl_file: Option<std::path::PathBuf>,
    pub(crate) allowed_cn: Option<String>,
    pub(crate) allowed_hostname: Option<String>,
}

impl Extra {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if let Some(crl_file) = &self.crl_file {
            let revoked = crate::x509::revoked_serials(crl_file)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            for cert in std::iter::once(end_entity).chain(intermediates) {
                let serial = crate::x509::serial_of(cert)
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
                if revoked.contains(&serial) {
                    tracing::warn!(
                        serial = %crate::x509::hex(&serial),
                        "rejected a revoked certificate"
                    );
                    return Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::Revoked,
                    ));
                }
            }
        }
        if self.allowed_cn.is_some() || self.allowed_hostname.is_some() {
            let names = crate::x509::names_of(end_entity)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            let allowed = match (&self.allowed_cn, &self.allowed_hostname) {
                (Some(cn), _) => names.common_name.as_deref() == Some(cn.as_str()),
                (None, Some(host)) => names.matches_host(host),
                (None, None) => true,
            };
            if !allowed {
                tracing::warn!(
                    common_name = ?names.common_name,
                    allowed_cn = ?self.allowed_cn,
                    allowed_hostname = ?self.allowed_hostname,
                    "client certificate authentication failed"
                );
                // NotValidForName is rustls' bad_certificate alert, the one Go
                // sends when VerifyPeerCertificate refuses.
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ));
            }
        }
        Ok(())
    }
}

/// The standard chain verification (of client certificates against
/// `--trusted-ca-file`), then [`Extra`].
#[derive(Debug)]
pub(crate) struct CheckedClientCert {
    pub(crate) inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    pub(crate) extra: Extra,
    pub(crate) anchors: Anchors,
}

/// The certificates of the trusted-CA file. Go trusts a certificate that is
/// itself in the pool (a chain of one), even a CA certificate used as a
/// leaf, which webpki refuses; etcd's own fixtures (and operators' self-signed
/// setups) present such certificates, so they are accepted here too when the
/// standard verification refused them, if they are within their validity.
#[derive(Debug, Clone, Default)]
pub(crate) struct Anchors(pub(crate) Vec<CertificateDer<'static>>);

impl Anchors {
    fn trusts_directly(&self, end_entity: &CertificateDer<'_>, now: UnixTime) -> bool {
        self.0.iter().any(|anchor| anchor.as_ref() == end_entity.as_ref())
            && crate::x509::valid_at(end_entity, now.as_secs())
    }
}

impl rustls::server::danger::ClientCertVerifier for CheckedClientCert {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = match self.inner.verify_client_cert(end_entity, intermediates, now) {
            Ok(verified) => verified,
            Err(_) if self.anchors.trusts_directly(end_entity, now) => {
                rustls::server::danger::ClientCertVerified::assertion()
            }
            Err(e) => return Err(e),
        };
        self.extra.check(end_entity, intermediates)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The standard verification of a server's certificate (against
/// `--peer-trusted-ca-file`, or none for auto-TLS), then [`Extra`]: etcd
/// applies its CN and hostname rules to the members it dials too.
#[derive(Debug)]
pub(crate) struct CheckedServerCert {
    pub(crate) inner: Arc<dyn ServerCertVerifier>,
    pub(crate) extra: Extra,
    pub(crate) anchors: Anchors,
}

impl ServerCertVerifier for CheckedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => verified,
            Err(_) if self.anchors.trusts_directly(end_entity, now) => {
                ServerCertVerified::assertion()
            }
            Err(e) => return Err(e),
        };
        self.extra.check(end_entity, intermediates)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
