//! The TLS flags of both ports (`--cert-file` ... `--auto-tls`, their
//! `--peer-` twins, `--client-crl-file`, `--cipher-suites`, the allowed CN and
//! hostname) turned into `etcd_tls::TlsSettings`, with etcd's precedence.

use std::path::{Path, PathBuf};

use crate::flags::Flags;

type TlsPaths<'a> = (&'a Option<PathBuf>, &'a Option<PathBuf>, &'a Option<PathBuf>);

/// One side's TLS (client or peer, by `prefix`), checked for completeness:
/// the files, or with `auto` (`--auto-tls`, `--peer-auto-tls`) and no files a
/// self-signed certificate for `hosts` kept in `fixtures`, as etcd makes it.
fn tls_settings(
    prefix: &'static str,
    (cert, key, ca): TlsPaths<'_>,
    client_cert_auth: bool,
    auto: Option<(&Path, &[String])>,
) -> Result<Option<etcd_tls::TlsSettings>, String> {
    match (cert, key, auto) {
        (Some(cert_file), Some(key_file), auto) => {
            if auto.is_some() {
                let side = if prefix.is_empty() { "client" } else { "peer" };
                tracing::warn!("ignoring {side} auto TLS since certs given");
            }
            Ok(Some(etcd_tls::TlsSettings {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                trusted_ca_file: ca.clone(),
                client_cert_auth,
                flag_prefix: prefix,
                ..etcd_tls::TlsSettings::default()
            }))
        }
        (None, None, Some((fixtures, hosts))) => {
            // etcd replaces the whole TLS setup with the self-signed one, so a
            // CA or certificate authentication given beside it has no effect.
            if client_cert_auth || ca.is_some() {
                tracing::warn!(
                    "--{prefix}client-cert-auth and --{prefix}trusted-ca-file have no effect with \
                     --{prefix}auto-tls (as with etcd): give --{prefix}cert-file and \
                     --{prefix}key-file to authenticate the other side"
                );
            }
            etcd_tls::TlsSettings::self_signed(fixtures, hosts, prefix).map(Some)
        }
        (None, None, None) if client_cert_auth => Err(format!(
            "--{prefix}client-cert-auth needs TLS: give --{prefix}cert-file and --{prefix}key-file too"
        )),
        (None, None, None) => Ok(None),
        _ => Err(format!(
            "--{prefix}cert-file and --{prefix}key-file go together: give both or neither"
        )),
    }
}

/// The `host:port`s of URLs, what an auto-TLS certificate is made for.
fn url_hosts(urls: &[String]) -> Vec<String> {
    urls.iter()
        .map(|url| {
            let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            rest.split('/').next().unwrap_or(rest).to_string()
        })
        .collect()
}

impl Flags {
    /// The client TLS files, when `--cert-file` and `--key-file` are both given.
    /// (Auto-TLS certificates are kept under `data_dir`'s `fixtures/client`.)
    pub fn client_tls(&self, data_dir: &Path) -> Result<Option<etcd_tls::TlsSettings>, String> {
        let hosts = url_hosts(&self.listen_client_urls());
        let fixtures = data_dir.join("fixtures").join("client");
        let checks =
            self.checks("", &self.client_crl_file, None, &self.client_cert_allowed_hostname)?;
        let settings = tls_settings(
            "",
            (&self.cert_file, &self.key_file, &self.trusted_ca_file),
            self.client_cert_auth,
            self.auto_tls.then_some((fixtures.as_path(), hosts.as_slice())),
        )?;
        Ok(Self::with_checks(settings, checks))
    }

    /// `--cipher-suites` (on every TLS port, as etcd) and one side's
    /// certificate checks, validated before any certificate is made.
    fn checks(
        &self,
        prefix: &'static str,
        crl_file: &Option<PathBuf>,
        allowed_cn: Option<&String>,
        allowed_hostname: &Option<String>,
    ) -> Result<etcd_tls::TlsSettings, String> {
        let checks = etcd_tls::TlsSettings {
            cipher_suites: etcd_daemon::config::comma_list(&self.cipher_suites),
            crl_file: crl_file.clone(),
            allowed_cn: allowed_cn.cloned(),
            allowed_hostname: allowed_hostname.clone(),
            flag_prefix: prefix,
            ..etcd_tls::TlsSettings::default()
        };
        checks.validate()?;
        Ok(checks)
    }

    /// `settings` with `checks` applied; an auto-TLS setup keeps only the
    /// cipher suites (etcd replaces the rest of its TLS settings).
    fn with_checks(
        settings: Option<etcd_tls::TlsSettings>,
        checks: etcd_tls::TlsSettings,
    ) -> Option<etcd_tls::TlsSettings> {
        let Some(mut settings) = settings else {
            if checks.crl_file.is_some()
                || checks.allowed_cn.is_some()
                || checks.allowed_hostname.is_some()
            {
                let p = checks.flag_prefix;
                tracing::warn!(
                    "--{p}crl-file and --{p}cert-allowed-* have no effect without TLS on this \
                     side: give --{p}cert-file and --{p}key-file"
                );
            }
            return None;
        };
        settings.cipher_suites = checks.cipher_suites;
        if !settings.self_signed {
            settings.crl_file = checks.crl_file;
            settings.allowed_cn = checks.allowed_cn;
            settings.allowed_hostname = checks.allowed_hostname;
        }
        Some(settings)
    }

    /// The peer TLS files, when `--peer-cert-file` and `--peer-key-file` are given.
    /// (Auto-TLS certificates are kept under `data_dir`'s `fixtures/peer`.)
    pub fn peer_tls(&self, data_dir: &Path) -> Result<Option<etcd_tls::TlsSettings>, String> {
        let hosts = url_hosts(&self.listen_peer_urls());
        let fixtures = data_dir.join("fixtures").join("peer");
        let checks = self.checks(
            "peer-",
            &self.peer_crl_file,
            self.peer_cert_allowed_cn.as_ref(),
            &self.peer_cert_allowed_hostname,
        )?;
        let settings = tls_settings(
            "peer-",
            (&self.peer_cert_file, &self.peer_key_file, &self.peer_trusted_ca_file),
            self.peer_client_cert_auth,
            self.peer_auto_tls.then_some((fixtures.as_path(), hosts.as_slice())),
        )?;
        Ok(Self::with_checks(settings, checks))
    }
}
