//! The sockets a member listens on: TCP for `http://` and `https://` URLs, Unix
//! domain sockets for etcd's `unix://` and `unixs://` (the socket's path is the
//! URL's host and path, `unix://etcd.unix:1` is the file `etcd.unix:1`).

use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A listen URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenUrl {
    /// `host:port` for TCP, the socket's path for Unix.
    pub address: String,
    /// `https://` or `unixs://`.
    pub tls: bool,
    /// `unix://` or `unixs://`.
    pub unix: bool,
}

impl ListenUrl {
    /// Parses `http://host:port`, `https://host:port`, `unix://path`, `unixs://path`.
    pub fn parse(url: &str) -> Result<ListenUrl, String> {
        let (rest, tls, unix) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, false, false)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, true, false)
        } else if let Some(rest) = url.strip_prefix("unix://") {
            (rest, false, true)
        } else if let Some(rest) = url.strip_prefix("unixs://") {
            (rest, true, true)
        } else {
            return Err(format!(
                "URL {url:?} is not supported: write it as http://host:port, https://host:port, \
                 unix://path or unixs://path"
            ));
        };
        if unix {
            if rest.is_empty() {
                return Err(format!("URL {url:?} names no socket file: write it as unix://path"));
            }
            return Ok(ListenUrl { address: rest.to_string(), tls, unix });
        }
        let host_port = rest.trim_end_matches('/');
        if !host_port.contains(':') {
            return Err(format!("URL {url:?} has no port: write it as http://host:port"));
        }
        Ok(ListenUrl { address: host_port.to_string(), tls, unix })
    }
}

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// `http://` or `https://`.
    Tcp(TcpListener),
    /// `unix://` or `unixs://`; the socket file is removed when dropped.
    Unix(UnixSocket),
}

/// A listening Unix socket and its file.
#[derive(Debug)]
pub struct UnixSocket {
    pub listener: UnixListener,
    path: PathBuf,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Listener {
    /// Binds `url` (already parsed). A stale socket file left by a previous run is
    /// replaced, as etcd does; any other file there is an error.
    pub async fn bind(url: &ListenUrl) -> std::io::Result<Listener> {
        if !url.unix {
            return TcpListener::bind(&url.address).await.map(Listener::Tcp);
        }
        let path = Path::new(&url.address);
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        Ok(Listener::Unix(UnixSocket { listener, path: path.to_path_buf() }))
    }
}

/// A listener whose connections can be served (see [`crate::incoming`]).
pub trait Accept: Send + 'static {
    /// One accepted connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection; the string names the peer for logs.
    fn accept_one(&self) -> impl Future<Output = std::io::Result<(Self::Stream, String)>> + Send;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    async fn accept_one(&self) -> std::io::Result<(TcpStream, String)> {
        let (stream, peer) = self.accept().await?;
        // Requests are small and a client waits on each: no Nagle delay (Go's
        // listeners, and so etcd's, set this by default).
        let _ = stream.set_nodelay(true);
        Ok((stream, peer.to_string()))
    }
}

impl Accept for UnixSocket {
    type Stream = UnixStream;
    async fn accept_one(&self) -> std::io::Result<(UnixStream, String)> {
        let (stream, _) = self.listener.accept().await?;
        Ok((stream, format!("unix:{}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_urls_parse_as_etcd_reads_them() {
        let url = |s| ListenUrl::parse(s).expect(s);
        assert_eq!(
            url("http://127.0.0.1:2379"),
            ListenUrl { address: "127.0.0.1:2379".into(), tls: false, unix: false }
        );
        assert_eq!(
            url("https://[::1]:2379/"),
            ListenUrl { address: "[::1]:2379".into(), tls: true, unix: false }
        );
        assert_eq!(
            url("unix://etcd.unix:1"),
            ListenUrl { address: "etcd.unix:1".into(), tls: false, unix: true }
        );
        assert_eq!(
            url("unixs:///run/etcd.sock"),
            ListenUrl { address: "/run/etcd.sock".into(), tls: true, unix: true }
        );
        assert!(ListenUrl::parse("tcp://1.2.3.4:5").is_err());
        assert!(ListenUrl::parse("http://1.2.3.4").unwrap_err().contains("no port"));
        assert!(ListenUrl::parse("unix://").is_err());
    }

    #[tokio::test]
    async fn a_unix_socket_replaces_a_stale_socket_and_refuses_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock").display().to_string();
        let url = ListenUrl { address: path.clone(), tls: false, unix: true };
        let first = Listener::bind(&url).await.expect("bind");
        std::mem::forget(first); // a crashed run leaves its socket file behind
        let second = Listener::bind(&url).await.expect("a stale socket is replaced");
        drop(second);
        assert!(!Path::new(&path).exists(), "the socket file is removed on drop");
        std::fs::write(&path, b"data").unwrap();
        assert!(Listener::bind(&url).await.is_err(), "a regular file is never removed");
    }
}
