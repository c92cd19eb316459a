//! TLS on the client port with etcd's flags, driven by the real etcdctl: an
//! `https://` listen URL with `--cert-file`/`--key-file` serves TLS, and
//! `--client-cert-auth` with `--trusted-ca-file` refuses clients without a
//! certificate from that CA.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{etcdctl_path, Flavor, Server};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A CA, a member certificate for 127.0.0.1 and a client certificate, as PEM
/// files in `dir`: (ca, server cert, server key, client cert, client key, and a
/// second client's cert and key, CN `alice`).
fn certificates(dir: &Path) -> [PathBuf; 7] {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "etcd-rs test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key"))
        .expect("CA certificate");
    let leaf = |name: &str, purposes: Vec<ExtendedKeyUsagePurpose>| {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = purposes;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    // Members present their certificate both as servers and as clients of each other.
    let (server_cert, server_key) = leaf(
        "server",
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    );
    let (client_cert, client_key) = leaf("root", vec![ExtendedKeyUsagePurpose::ClientAuth]);
    let (alice_cert, alice_key) = leaf("alice", vec![ExtendedKeyUsagePurpose::ClientAuth]);
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert),
        ("server-key.pem", server_key),
        ("client.pem", client_cert),
        ("client-key.pem", client_key),
        ("alice.pem", alice_cert),
        ("alice-key.pem", alice_key),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    })
}

fn etcdctl_tls(endpoint: &str, tls_args: &[String], args: &[&str]) -> std::process::Output {
    Command::new(etcdctl_path())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{endpoint}"))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=5s")
        .args(tls_args)
        .args(args)
        .output()
        .expect("etcdctl")
}

/// A server whose client URL is https:// with `extra` TLS flags.
fn tls_server(extra: &[String]) -> Server {
    tls_server_of(Flavor::Ours, extra)
}

fn tls_server_of(flavor: Flavor, extra: &[String]) -> Server {
    let temp = tempfile::tempdir().expect("tempdir");
    let mut server = Server::new(flavor, "node1", temp, &[]);
    let url = format!("https://127.0.0.1:{}", server.client_port);
    server.extra_args =
        vec![format!("--listen-client-urls={url}"), format!("--advertise-client-urls={url}")];
    server.extra_args.extend(extra.iter().cloned());
    server.restart();
    server
}

#[test]
fn https_client_urls_serve_tls_and_client_cert_auth_requires_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, cert, key, client_cert, client_key, _, _] = certificates(dir.path());
    let flag = |name: &str, path: &PathBuf| format!("--{name}={}", path.display());

    // Server TLS only.
    let server = tls_server(&[flag("cert-file", &cert), flag("key-file", &key)]);
    let trust = vec![flag("cacert", &ca)];
    let put = etcdctl_tls(&server.endpoint(), &trust, &["put", "k", "v"]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let get = etcdctl_tls(&server.endpoint(), &trust, &["get", "k", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "v\n");
    let untrusted = etcdctl_tls(&server.endpoint(), &[], &["get", "k"]);
    assert!(!untrusted.status.success(), "a client that does not trust the CA connected");
    // HTTP/1.1 clients (the JSON gateway's usual ones) negotiate TLS too, as with Go.
    for version in ["--http1.1", "--http2"] {
        let out = Command::new("curl")
            .args(["-s", version, "-w", "\n%{http_code}", "--cacert"])
            .arg(&ca)
            .arg(format!("https://{}/health", server.endpoint()))
            .output()
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "{\"health\":\"true\",\"reason\":\"\"}\n200",
            "curl {version}"
        );
    }
    drop(server);

    // Client certificates required.
    let server = tls_server(&[
        flag("cert-file", &cert),
        flag("key-file", &key),
        flag("trusted-ca-file", &ca),
        "--client-cert-auth".to_string(),
    ]);
    let without_cert = etcdctl_tls(&server.endpoint(), &trust, &["put", "k", "v"]);
    assert!(!without_cert.status.success(), "a client without a certificate was served");
    let with_cert = vec![flag("cacert", &ca), flag("cert", &client_cert), flag("key", &client_key)];
    let put = etcdctl_tls(&server.endpoint(), &with_cert, &["put", "k", "v2"]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let health = etcdctl_tls(&server.endpoint(), &with_cert, &["endpoint", "health"]);
    assert!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));
}

#[test]
fn tls_flags_are_checked_before_serving() {
    let half = Command::new(env!("CARGO_BIN_EXE_etcd"))
        .args(["--cert-file=/nonexistent.pem", "--data-dir=/nonexistent-dir/x"])
        .output()
        .expect("etcd");
    assert!(!half.status.success());
    assert!(
        String::from_utf8_lossy(&half.stderr).contains("--cert-file and --key-file go together"),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );
}

#[test]
fn members_replicate_over_mutually_authenticated_peer_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, cert, key, ..] = certificates(dir.path());
    let flag = |name: &str, path: &PathBuf| format!("--{name}={}", path.display());
    let mut members: Vec<Server> = (0..3)
        .map(|i| {
            let temp = tempfile::tempdir().expect("tempdir");
            let mut member = Server::new(Flavor::Ours, &format!("m{i}"), temp, &[]);
            let url = format!("https://127.0.0.1:{}", member.peer_port);
            member.extra_args = vec![
                format!("--listen-peer-urls={url}"),
                format!("--initial-advertise-peer-urls={url}"),
                flag("peer-cert-file", &cert),
                flag("peer-key-file", &key),
                flag("peer-trusted-ca-file", &ca),
                "--peer-client-cert-auth".to_string(),
            ];
            member
        })
        .collect();
    let initial: Vec<String> =
        members.iter().map(|m| format!("{}=https://127.0.0.1:{}", m.name, m.peer_port)).collect();
    for member in &mut members {
        member.initial_cluster = Some(initial.join(","));
        member.spawn();
    }
    for member in &mut members {
        member.wait_ready();
    }
    let put = common::etcdctl(&members[0].endpoint(), &["put", "over-tls", "1"], None);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    for member in &members {
        let got = common::must_etcdctl(
            &member.endpoint(),
            &["get", "over-tls", "--print-value-only"],
            None,
        );
        assert_eq!(got, "1\n", "{} reads the write linearizably", member.name);
    }
}

/// With `--client-cert-auth` and auth enabled, a client without a token is
/// the user its certificate names (CN); a token, when given, wins.
fn common_name_transcript(flavor: Flavor, files: &[PathBuf; 7]) -> Vec<String> {
    let [ca, cert, key, root_cert, root_key, alice_cert, alice_key] = files;
    let flag = |name: &str, path: &PathBuf| format!("--{name}={}", path.display());
    let server = tls_server_of(
        flavor,
        &[
            flag("cert-file", cert),
            flag("key-file", key),
            flag("trusted-ca-file", ca),
            "--client-cert-auth".to_string(),
        ],
    );
    let ep = server.endpoint();
    let root = vec![flag("cacert", ca), flag("cert", root_cert), flag("key", root_key)];
    let alice = vec![flag("cacert", ca), flag("cert", alice_cert), flag("key", alice_key)];
    let steps: Vec<(&Vec<String>, Vec<&str>)> = vec![
        (&root, vec!["user", "add", "root:rootpw"]),
        (&root, vec!["user", "grant-role", "root", "root"]),
        (&root, vec!["user", "add", "alice:alicepw"]),
        (&root, vec!["role", "add", "app"]),
        (&root, vec!["role", "grant-permission", "app", "readwrite", "a/", "--prefix"]),
        (&root, vec!["user", "grant-role", "alice", "app"]),
        (&root, vec!["auth", "enable"]),
        (&alice, vec!["put", "a/1", "v"]),
        (&alice, vec!["get", "a/1"]),
        (&alice, vec!["put", "b", "v"]),
        (&alice, vec!["user", "list"]),
        (&root, vec!["user", "list"]),
        (&alice, vec!["--user=root:rootpw", "put", "b", "v"]),
        (&root, vec!["--user=alice:alicepw", "put", "b", "v"]),
        (&root, vec!["auth", "disable"]),
    ];
    steps
        .into_iter()
        .map(|(tls, args)| {
            let out = etcdctl_tls(&ep, tls, &args);
            let stderr: String = String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|line| !line.starts_with("{\"level\""))
                .collect();
            format!(
                "{} {}: {}{}",
                if std::ptr::eq(tls, &alice) { "alice-cert" } else { "root-cert" },
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                stderr
            )
        })
        .collect()
}

#[test]
fn a_client_certificate_names_the_user_as_in_real_etcd() {
    assert!(common::real_etcd().is_some(), "real etcd is required: apt-get install etcd-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let files = certificates(dir.path());
    let got = common_name_transcript(Flavor::Ours, &files);
    let want = common_name_transcript(Flavor::RealEtcd, &files);
    eprintln!("{got:#?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "differs from real etcd");
    }
    assert_eq!(got.len(), want.len());
    assert!(got[7].contains("OK"), "alice's certificate lets her write a/: {}", got[7]);
}

/// `size` members of `flavor` with https:// client and peer URLs and
/// `--auto-tls --peer-auto-tls`: they make their own certificates under the
/// data dir's `fixtures/`, replicate over TLS without verifying each other,
/// and keep their certificates across a restart.
fn auto_tls_cluster_replicates(flavor: Flavor, size: usize) {
    let mut members: Vec<Server> = (0..size)
        .map(|i| {
            let temp = tempfile::tempdir().expect("tempdir");
            let mut member = Server::new(flavor, &format!("m{i}"), temp, &[]);
            let client = format!("https://127.0.0.1:{}", member.client_port);
            let peer = format!("https://127.0.0.1:{}", member.peer_port);
            member.extra_args = vec![
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                "--auto-tls".to_string(),
                "--peer-auto-tls".to_string(),
            ];
            member
        })
        .collect();
    let initial: Vec<String> =
        members.iter().map(|m| format!("{}=https://127.0.0.1:{}", m.name, m.peer_port)).collect();
    for member in &mut members {
        member.initial_cluster = Some(initial.join(","));
        member.spawn();
    }
    for member in &mut members {
        member.wait_ready();
    }
    // etcdctl's flags for a server whose certificate nobody signed, as etcd's e2e suite uses.
    let insecure = ["--insecure-transport=false".to_string(), "--insecure-skip-tls-verify".into()];
    let put = etcdctl_tls(&members[0].endpoint(), &insecure, &["put", "over-auto-tls", "1"]);
    assert!(put.status.success(), "{flavor:?}: {}", String::from_utf8_lossy(&put.stderr));
    for member in &members {
        let get = etcdctl_tls(
            &member.endpoint(),
            &insecure,
            &["get", "over-auto-tls", "--print-value-only"],
        );
        assert_eq!(String::from_utf8_lossy(&get.stdout), "1\n", "{flavor:?} {}", member.name);
    }
    // A client that verifies the server's certificate refuses the self-signed one.
    let verifying = etcdctl_tls(&members[0].endpoint(), &[], &["get", "over-auto-tls"]);
    assert!(!verifying.status.success(), "{flavor:?}: a verifying client accepted auto-TLS");
    let fixtures = |m: &Server, side: &str| m.data_dir.join("fixtures").join(side);
    for member in &members {
        for side in ["client", "peer"] {
            for file in ["cert.pem", "key.pem"] {
                let path = fixtures(member, side).join(file);
                assert!(path.is_file(), "{flavor:?}: {} has no {}", member.name, path.display());
            }
        }
    }
    let last = members.last_mut().expect("a member");
    let cert = std::fs::read(fixtures(last, "peer").join("cert.pem")).expect("cert");
    last.kill9();
    last.restart();
    assert_eq!(
        std::fs::read(fixtures(last, "peer").join("cert.pem")).expect("cert"),
        cert,
        "{flavor:?}: a restarted member made a new certificate"
    );
    let put = etcdctl_tls(&last.endpoint(), &insecure, &["put", "after-restart", "2"]);
    assert!(put.status.success(), "{flavor:?}: {}", String::from_utf8_lossy(&put.stderr));
}

#[test]
fn auto_tls_members_replicate_and_keep_their_certificates() {
    auto_tls_cluster_replicates(Flavor::Ours, 1);
    auto_tls_cluster_replicates(Flavor::Ours, 3);
}

#[test]
fn auto_tls_test_holds_for_real_etcd() {
    if common::real_etcd().is_none() {
        eprintln!("real etcd is not installed; skipping the oracle run");
        return;
    }
    auto_tls_cluster_replicates(Flavor::RealEtcd, 3);
}

/// A CA, a server certificate, a client certificate (CN `root`) and a second
/// one (CN `revoked`) that the CA's CRL revokes: (ca, server cert, server key,
/// good cert, good key, revoked cert, revoked key, crl).
fn certificates_with_crl(dir: &Path) -> [PathBuf; 8] {
    use rcgen::{
        CertificateRevocationListParams, KeyIdMethod, KeyUsagePurpose, RevocationReason,
        RevokedCertParams, SerialNumber,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name.push(DnType::CommonName, "etcd-rs CRL test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key"))
        .expect("CA certificate");
    let leaf = |name: &str, serial: u64, purposes: Vec<ExtendedKeyUsagePurpose>| {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = purposes;
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        "server",
        0x1001,
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    );
    let (good_cert, good_key) = leaf("root", 0x1002, vec![ExtendedKeyUsagePurpose::ClientAuth]);
    let (revoked_cert, revoked_key) =
        leaf("revoked", 0x0bad_c0de, vec![ExtendedKeyUsagePurpose::ClientAuth]);
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(0x0bad_c0deu64),
            revocation_time: rcgen::date_time_ymd(2024, 1, 1),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca)
    .expect("CRL");
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert),
        ("server-key.pem", server_key),
        ("good.pem", good_cert),
        ("good-key.pem", good_key),
        ("revoked.pem", revoked_cert),
        ("revoked-key.pem", revoked_key),
        ("revoke.crl", crl.pem().expect("CRL PEM")),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    })
}

/// `--client-crl-file`: a client whose certificate the CRL lists is refused,
/// one whose certificate it does not list is served; the same with real etcd.
fn revoked_client_is_refused(flavor: Flavor) {
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, cert, key, good, good_key, revoked, revoked_key, crl] =
        certificates_with_crl(dir.path());
    let flag = |name: &str, path: &PathBuf| format!("--{name}={}", path.display());
    let server = tls_server_of(
        flavor,
        &[
            flag("cert-file", &cert),
            flag("key-file", &key),
            flag("trusted-ca-file", &ca),
            "--client-cert-auth".to_string(),
            flag("client-crl-file", &crl),
        ],
    );
    let good = [flag("cacert", &ca), flag("cert", &good), flag("key", &good_key)];
    let put = etcdctl_tls(&server.endpoint(), &good, &["put", "k", "v"]);
    assert!(put.status.success(), "{flavor:?}: {}", String::from_utf8_lossy(&put.stderr));
    let revoked = [flag("cacert", &ca), flag("cert", &revoked), flag("key", &revoked_key)];
    let refused = etcdctl_tls(&server.endpoint(), &revoked, &["put", "k", "v2"]);
    assert!(!refused.status.success(), "{flavor:?}: a revoked certificate was served");
    let get = etcdctl_tls(&server.endpoint(), &good, &["get", "k", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "v\n", "{flavor:?}: the refused put landed");
}

#[test]
fn a_revoked_client_certificate_is_refused() {
    revoked_client_is_refused(Flavor::Ours);
    if common::real_etcd().is_some() {
        revoked_client_is_refused(Flavor::RealEtcd);
    }
}

/// `--cipher-suites` restricts TLS 1.2: a client offering only another suite
/// fails the handshake, one offering a listed suite connects (curl with
/// OpenSSL's names); the same with real etcd.
fn cipher_suites_restrict_tls12(flavor: Flavor) {
    let dir = tempfile::tempdir().expect("tempdir");
    let [ca, cert, key, ..] = certificates(dir.path());
    let flag = |name: &str, path: &PathBuf| format!("--{name}={}", path.display());
    // rcgen's default keys are ECDSA P-256, so the ECDSA suites apply.
    let server = tls_server_of(
        flavor,
        &[
            flag("cert-file", &cert),
            flag("key-file", &key),
            "--cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_string(),
        ],
    );
    let curl = |cipher: &str| {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--tls-max", "1.2", "--ciphers"])
            .arg(cipher)
            .arg("--cacert")
            .arg(&ca)
            .arg(format!("https://{}/health", server.endpoint()))
            .output()
            .expect("curl")
    };
    let listed = curl("ECDHE-ECDSA-AES128-GCM-SHA256");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "200", "{flavor:?}: listed suite");
    let other = curl("ECDHE-ECDSA-AES256-GCM-SHA384");
    assert!(!other.status.success(), "{flavor:?}: a suite not listed was negotiated");
    assert_eq!(String::from_utf8_lossy(&other.stdout), "000", "{flavor:?}: no HTTP answer");
}

#[test]
fn cipher_suites_refuse_clients_offering_none_of_them() {
    cipher_suites_restrict_tls12(Flavor::Ours);
    if common::real_etcd().is_some() {
        cipher_suites_restrict_tls12(Flavor::RealEtcd);
    }
}

#[test]
fn an_unknown_cipher_suite_stops_the_member_before_it_writes_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [_, cert, key, ..] = certificates(dir.path());
    let data_dir = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_etcd"))
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--cert-file={}", cert.display()))
        .arg(format!("--key-file={}", key.display()))
        .args(["--cipher-suites=TLS_BOGUS", "--listen-client-urls=https://127.0.0.1:0"])
        .args([
            "--advertise-client-urls=https://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:0",
        ])
        .output()
        .expect("etcd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unexpected TLS cipher suite \"TLS_BOGUS\""), "{stderr}");
    assert!(!data_dir.exists(), "the data dir was written: {stderr}");
}
