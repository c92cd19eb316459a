//! Answers normalized for comparison (revisions relative to the sequence).

/// A kv with its revisions relative to the sequence.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Kv {
    pub(super) key: String,
    pub(super) create: i64,
    pub(super) modified: i64,
    pub(super) version: i64,
    pub(super) value: String,
    pub(super) lease: i64,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={} create={} mod={} ver={}",
            self.key, self.value, self.create, self.modified, self.version
        )?;
        if self.lease != 0 {
            write!(f, " lease={:#x}", self.lease)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ev {
    pub(super) kind: &'static str,
    pub(super) kv: Option<Kv>,
    pub(super) prev: Option<Kv>,
}

/// What a request answered, comparable across servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    Put {
        rev: Option<i64>,
        prev: Option<Kv>,
    },
    Range {
        rev: Option<i64>,
        kvs: Vec<Kv>,
        more: bool,
        count: i64,
    },
    Delete {
        rev: Option<i64>,
        deleted: i64,
        prev: Vec<Kv>,
    },
    Txn {
        rev: Option<i64>,
        succeeded: bool,
        responses: Vec<Reply>,
    },
    Grant {
        rev: Option<i64>,
        id: i64,
        ttl: i64,
        error: String,
    },
    Revoke {
        rev: Option<i64>,
    },
    /// `rev` only in single-member mode (a leader may lag behind the member that
    /// served the last write).
    TimeToLive {
        rev: Option<i64>,
        id: i64,
        missing: bool,
        granted_ttl: i64,
        keys: Vec<String>,
    },
    Compact {
        rev: Option<i64>,
    },
    Hash {
        rev: Option<i64>,
        hash: u32,
        compact_revision: i64,
    },
    /// A watch: its created response, every event in order, and the
    /// compaction response if it started below the compaction.
    Watch {
        created: Option<(i64, Option<i64>)>,
        events: Vec<Ev>,
        compacted: Option<(i64, bool)>,
        other: Vec<String>,
    },
    /// An empty response op (should not happen).
    Empty,
}

impl Reply {
    /// The top-level header revision.
    pub(super) fn revision(&self) -> Option<i64> {
        match self {
            Reply::Put { rev, .. }
            | Reply::Range { rev, .. }
            | Reply::Delete { rev, .. }
            | Reply::Txn { rev, .. }
            | Reply::Grant { rev, .. }
            | Reply::Revoke { rev }
            | Reply::TimeToLive { rev, .. }
            | Reply::Compact { rev }
            | Reply::Hash { rev, .. } => *rev,
            Reply::Watch { .. } | Reply::Empty => None,
        }
    }
}

/// A reply, or a gRPC error's code and message.
pub(super) type Answer = Result<Reply, (String, String)>;

pub(super) fn error_of(status: tonic::Status) -> (String, String) {
    (format!("{:?}", status.code()), status.message().to_string())
}
