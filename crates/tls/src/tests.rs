use super::*;

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

fn hosts() -> Vec<String> {
    vec!["127.0.0.1:2380".to_string(), "localhost:2380".to_string()]
}

/// Runs a handshake between `server` and `client` over an in-memory pipe;
/// the negotiated ALPN protocol, or the client's error.
async fn handshake(
    server: rustls::ServerConfig,
    client: Arc<rustls::ClientConfig>,
) -> Result<Option<Vec<u8>>, String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let served = tokio::spawn(async move { acceptor.accept(server_io).await.map(|_| ()) });
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let connected = TlsConnector::from(client).connect(name, client_io).await;
    let _ = served.await;
    connected
        .map(|tls| tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        .map_err(|e| e.to_string())
}

#[test]
fn a_self_signed_pair_is_made_once_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = dir.path().join("fixtures/peer");
    let first = TlsSettings::self_signed(&fixtures, &hosts(), "peer-").expect("made");
    let cert = std::fs::read(&first.cert_file).expect("cert");
    let again = TlsSettings::self_signed(&fixtures, &hosts(), "peer-").expect("reused");
    assert_eq!(std::fs::read(&again.cert_file).expect("cert"), cert, "a restart keeps the pair");
    assert!(again.self_signed);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first.key_file).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is readable by the owner only");
    }
}

#[tokio::test]
async fn auto_tls_members_talk_without_verifying_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = TlsSettings::self_signed(&dir.path().join("a"), &hosts(), "peer-").expect("a");
    let b = TlsSettings::self_signed(&dir.path().join("b"), &hosts(), "peer-").expect("b");
    let alpn = handshake(
        b.server_config(PEER_PORT_ALPN).expect("server"),
        a.client_config().expect("client"),
    )
    .await
    .expect("auto-TLS handshake");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn a_verifying_member_refuses_a_self_signed_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auto = TlsSettings::self_signed(&dir.path().join("a"), &hosts(), "peer-").expect("a");
    // Trusting some other certificate as the CA: the self-signed one is not
    // signed by it.
    let other = TlsSettings::self_signed(&dir.path().join("b"), &hosts(), "peer-").expect("b");
    let verifying = TlsSettings {
        trusted_ca_file: Some(other.cert_file.clone()),
        self_signed: false,
        ..other.clone()
    };
    let refused = handshake(
        auto.server_config(PEER_PORT_ALPN).expect("server"),
        verifying.client_config().expect("client"),
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn errors_name_the_flag_and_the_file() {
    let settings = TlsSettings {
        cert_file: "/nonexistent/cert.pem".into(),
        key_file: "/nonexistent/key.pem".into(),
        flag_prefix: "peer-",
        ..TlsSettings::default()
    };
    let err = settings.server_config(PEER_PORT_ALPN).expect_err("missing file");
    assert!(err.starts_with("cannot read --peer-cert-file /nonexistent/cert.pem"), "{err}");
    let no_ca = TlsSettings { client_cert_auth: true, ..settings };
    let dir = tempfile::tempdir().expect("tempdir");
    let auto = TlsSettings::self_signed(dir.path(), &hosts(), "").expect("auto");
    let no_ca = TlsSettings { cert_file: auto.cert_file, key_file: auto.key_file, ..no_ca };
    let err = no_ca.server_config(CLIENT_PORT_ALPN).expect_err("no CA");
    assert!(err.contains("--peer-client-cert-auth needs --peer-trusted-ca-file"), "{err}");
}

/// etcd's fixture `CommonName-root.crt`: one self-signed CA certificate is
/// the CA, the server's certificate and the client's. Go accepts it (a
/// certificate in the pool is trusted as a chain of one); so must we.
#[tokio::test]
async fn a_ca_certificate_trusted_as_itself_is_accepted_on_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "root");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("cert");
    let (cert_file, key_file) = (dir.path().join("root.crt"), dir.path().join("root.key"));
    std::fs::write(&cert_file, cert.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    let settings = TlsSettings {
        cert_file: cert_file.clone(),
        key_file,
        trusted_ca_file: Some(cert_file),
        client_cert_auth: true,
        ..TlsSettings::default()
    };
    let alpn = handshake(
        settings.server_config(PEER_PORT_ALPN).expect("server"),
        settings.client_config().expect("client"),
    )
    .await
    .expect("handshake with the CA certificate as leaf");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
}

/// `--peer-cert-allowed-cn`: a member whose certificate has another CN is
/// refused with a bad_certificate alert, which the dialing member reports in
/// Go's words (etcd's e2e suite waits for exactly that line).
#[tokio::test]
async fn a_certificate_with_another_cn_is_refused_with_bad_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key"))
            .expect("CA");
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write");
        path
    };
    let ca_file = write("ca.pem", ca.pem());
    let member = |cn: &str| {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("signed");
        TlsSettings {
            cert_file: write(&format!("{cn}.pem"), cert.pem()),
            key_file: write(&format!("{cn}-key.pem"), key.serialize_pem()),
            trusted_ca_file: Some(ca_file.clone()),
            client_cert_auth: true,
            allowed_cn: Some("example.com".to_string()),
            flag_prefix: "peer-",
            ..TlsSettings::default()
        }
    };
    let (good, other) = (member("example.com"), member("example2.com"));
    let server = good.server_config(PEER_PORT_ALPN).expect("server");
    assert!(handshake(server.clone(), good.client_config().expect("client")).await.is_ok());

    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let served = tokio::spawn(async move { acceptor.accept(server_io).await.map(|_| ()) });
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let connector = TlsConnector::from(other.client_config().expect("client"));
    let mut stream =
        connector.connect(name, client_io).await.expect("TLS 1.3: the client finishes first");
    // In TLS 1.3 the server's verdict on the client's certificate arrives after
    // the client's handshake completes: on the first read.
    let mut byte = [0u8; 1];
    let refused = tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await.expect_err("refused");
    assert!(served.await.expect("task").is_err(), "the server accepted CN example2.com");
    assert_eq!(describe_handshake_error(&refused), "remote error: tls: bad certificate");
}
