//! The redb database handle and its two transaction kinds.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::error::{Result, StorageError, VersionFound};
use crate::schema::{self, AuthTable, KEY, LEASE, MEMBERS, MEMBERS_REMOVED, META};
use crate::writer::{Turn, Writer};

/// The memory redb may hold for caching pages and buffering a commit's writes.
/// redb's default is 1 GiB, which a big store fills and keeps; reads past the
/// cache go to the operating system's page cache, which the kernel can give
/// back under pressure, so a small cache costs little speed and bounds RSS.
pub const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// A redb builder with this backend's settings.
fn builder() -> redb::Builder {
    let mut builder = Database::builder();
    builder.set_cache_size(CACHE_BYTES);
    builder
}

/// The backend file: one redb database holding every table of [`crate::schema`].
///
/// `Backend` is `Send + Sync`. Any number of [`ReadTxn`]s may run while one
/// [`WriteTxn`] is open; a reader sees the state of the last commit that
/// finished before it began and never anything of an uncommitted write.
/// redb allows one write transaction at a time: `begin_write` blocks while
/// another writer holds one, and hands out the parked one if a writer left it
/// open ([`WriteTxn::park`], `writer.rs`).
pub struct Backend {
    /// Swapped whole when a snapshot from the leader is installed; transactions
    /// already running keep the database they started on.
    db: std::sync::RwLock<std::sync::Arc<Database>>,
    path: PathBuf,
    writer: std::sync::Arc<Writer>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("path", &self.path).finish()
    }
}

/// A write transaction: the writer's turn (see `writer.rs`). Nothing it writes
/// is visible to readers until [`WriteTxn::commit`]; [`WriteTxn::park`] leaves
/// it open for the next writer. Dropping it without either discards everything
/// it holds, parked writes it resumed included: only a writer that is about to
/// stop the member may do that.
pub struct WriteTxn {
    // Declared before `turn`: the transaction ends before the turn is given back.
    txn: redb::WriteTransaction,
    mark: i64,
    turn: Turn,
}

impl std::fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn").field("mark", &self.mark).finish()
    }
}

/// A read transaction: a consistent snapshot of the last committed state.
pub struct ReadTxn {
    txn: redb::ReadTransaction,
}

fn classify_open_error(path: &Path, existed: bool, e: redb::DatabaseError) -> StorageError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            StorageError::AlreadyOpen { path: path.to_path_buf() }
        }
        other if existed => {
            StorageError::NotADatabase { path: path.to_path_buf(), source: other.into() }
        }
        other => other.into(),
    }
}

impl Backend {
    /// Opens the backend file at `path`, creating it (with all tables and the
    /// schema version) if it does not exist or is empty. An existing file must be
    /// a redb database written by this schema version.
    pub fn open(path: &Path) -> Result<Backend> {
        let existed = std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false);
        let db = builder().create(path).map_err(|e| classify_open_error(path, existed, e))?;
        let backend = Backend {
            db: std::sync::RwLock::new(std::sync::Arc::new(db)),
            path: path.to_path_buf(),
            writer: Default::default(),
        };
        backend.init_or_check(existed)?;
        Ok(backend)
    }

    /// Opens (or initializes) a backend on any redb storage: the simulator's
    /// disks. `label` names it in errors; nothing is read from that path.
    pub fn open_on(storage: impl redb::StorageBackend, label: &Path) -> Result<Backend> {
        let existed = storage.len().map(|len| len > 0).unwrap_or(false);
        let db = builder()
            .create_with_backend(storage)
            .map_err(|e| classify_open_error(label, existed, e))?;
        let backend = Backend {
            db: std::sync::RwLock::new(std::sync::Arc::new(db)),
            path: label.to_path_buf(),
            writer: Default::default(),
        };
        backend.init_or_check(existed)?;
        Ok(backend)
    }

    /// Replaces this backend's contents with the backend on `storage` (a
    /// snapshot received from the leader, on the simulator's disks).
    pub fn replace_with_storage(&self, storage: impl redb::StorageBackend) -> Result<()> {
        let db = builder()
            .create_with_backend(storage)
            .map_err(|e| classify_open_error(&self.path, true, e))?;
        let _turn = self.writer.discard_parked();
        *self.db.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            std::sync::Arc::new(db);
        self.init_or_check(true)
    }

    fn db(&self) -> std::sync::Arc<Database> {
        self.db.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces this backend's contents with the backend file at `source` (a
    /// snapshot received from the leader): checks it, renames it over this
    /// backend's file, fsyncs the directory and switches new transactions to it.
    /// The caller must hold off writers while this runs.
    pub fn replace_with(&self, source: &Path) -> Result<()> {
        drop(Backend::open(source)?);
        let _turn = self.writer.discard_parked();
        let mut slot = self.db.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        std::fs::rename(source, &self.path).map_err(|e| StorageError::Io {
            context: format!("rename {} over {}", source.display(), self.path.display()),
            source: e,
        })?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::Io {
                context: format!("fsync {}", dir.display()),
                source: e,
            })?;
        }
        let db =
            builder().create(&self.path).map_err(|e| classify_open_error(&self.path, true, e))?;
        *slot = std::sync::Arc::new(db);
        Ok(())
    }

    fn init_or_check(&self, existed: bool) -> Result<()> {
        let version = {
            let r = self.db().begin_read()?;
            match r.open_table(META) {
                Ok(t) => match t.get(schema::META_SCHEMA_VERSION)? {
                    None => VersionFound::Missing,
                    Some(v) => match <[u8; 8]>::try_from(v.value()) {
                        Ok(b) => VersionFound::Version(u64::from_be_bytes(b)),
                        Err(_) => VersionFound::Malformed,
                    },
                },
                Err(redb::TableError::TableDoesNotExist(_)) => VersionFound::Missing,
                Err(e) if existed => {
                    return Err(StorageError::NotADatabase {
                        path: self.path.clone(),
                        source: e.into(),
                    })
                }
                Err(e) => return Err(e.into()),
            }
        };
        match version {
            VersionFound::Version(schema::SCHEMA_VERSION) => {}
            VersionFound::Missing if !existed => {
                let mut w = self.db().begin_write()?;
                w.set_durability(Durability::Immediate)?;
                {
                    w.open_table(KEY)?;
                    w.open_table(MEMBERS)?;
                    w.open_table(LEASE)?;
                    let mut meta = w.open_table(META)?;
                    meta.insert(
                        schema::META_SCHEMA_VERSION,
                        &schema::SCHEMA_VERSION.to_be_bytes()[..],
                    )?;
                }
                w.commit()?;
            }
            found => {
                return Err(StorageError::SchemaVersion {
                    path: self.path.clone(),
                    found,
                    supported: schema::SCHEMA_VERSION,
                })
            }
        }
        Ok(())
    }

    /// The path this backend was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a write transaction (blocks while another one is out), or
    /// resumes the parked one. Its commit is non-durable unless
    /// [`WriteTxn::commit`] is asked otherwise: the Raft WAL is the source of
    /// truth and replays lost commits.
    pub fn begin_write(&self) -> Result<WriteTxn> {
        let (turn, parked) = self.writer.acquire();
        let (txn, mark) = match parked {
            Some(parked) => parked,
            None => {
                let mut txn = self.db().begin_write()?;
                txn.set_durability(Durability::None)?;
                (txn, self.writer.committed_mark())
            }
        };
        Ok(WriteTxn { txn, mark, turn })
    }

    /// Commits the parked write transaction, if any (non-durably), waiting for
    /// a writer that holds it. Must not be called while holding anything the
    /// writer may wait for.
    pub fn flush(&self) -> Result<()> {
        let (turn, parked) = self.writer.acquire();
        match parked {
            Some((txn, mark)) => WriteTxn { txn, mark, turn }.commit(false),
            None => Ok(()),
        }
    }

    /// The newest mark a commit covered (see [`WriteTxn::park`]; 0 before any,
    /// and after the database was replaced).
    pub fn committed_mark(&self) -> i64 {
        self.writer.committed_mark()
    }

    /// Starts a read transaction that sees every write made so far: parked
    /// writes are committed first ([`Backend::flush`], with its caveat).
    pub fn begin_read(&self) -> Result<ReadTxn> {
        self.flush()?;
        self.read_committed()
    }

    /// Starts a read transaction on the last commit, without parked writes:
    /// for readers that get those from whoever parked them.
    pub fn read_committed(&self) -> Result<ReadTxn> {
        Ok(ReadTxn { txn: self.db().begin_read()? })
    }

    /// Size of the backend file in bytes (etcd's `dbSize`).
    pub fn size_bytes(&self) -> Result<u64> {
        std::fs::metadata(&self.path).map(|m| m.len()).map_err(|source| StorageError::Io {
            context: format!("stat {}", self.path.display()),
            source,
        })
    }

    /// Bytes of the backend's pages in use (etcd's `dbSizeInUse`: what the file
    /// would shrink to after a defragmentation). Walks every page, and takes the
    /// writer's turn for that long: callers cache it.
    pub fn size_in_use(&self) -> Result<u64> {
        let (turn, parked) = self.writer.acquire();
        let stats = match parked {
            // Parked writes stay parked.
            Some((txn, mark)) => {
                let stats = txn.stats();
                turn.park(txn, mark);
                stats?
            }
            None => {
                let txn = self.db().begin_write()?;
                let stats = txn.stats()?;
                txn.abort()?;
                stats
            }
        };
        Ok(stats.allocated_pages() * stats.page_size() as u64)
    }

    /// Writes a logical copy of every table into a new redb file at `dest`
    /// (which must not exist), committed durably. The copy reflects one
    /// consistent committed state of this backend.
    pub fn copy_to(&self, dest: &Path) -> Result<()> {
        if dest.exists() {
            return Err(StorageError::Io {
                context: format!("copy backend to {}", dest.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "destination already exists",
                ),
            });
        }
        self.copy_into(builder().create(dest)?)
    }

    /// [`Backend::copy_to`] onto any redb storage (the simulator's disks).
    pub fn copy_to_storage(&self, storage: impl redb::StorageBackend) -> Result<()> {
        self.copy_into(builder().create_with_backend(storage)?)
    }

    fn copy_into(&self, out: Database) -> Result<()> {
        let src = self.begin_read()?.txn;
        let mut w = out.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        {
            copy_table(&src, &w, KEY)?;
            copy_table(&src, &w, META)?;
            copy_table(&src, &w, MEMBERS)?;
            copy_table(&src, &w, LEASE)?;
            // Tables added after the first files were written may be missing.
            copy_table_if_present(&src, &w, MEMBERS_REMOVED)?;
            for table in [AuthTable::Meta, AuthTable::Users, AuthTable::Roles] {
                copy_table_if_present(&src, &w, table.definition())?;
            }
        }
        w.commit()?;
        Ok(())
    }
}

fn copy_table_if_present<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &redb::ReadTransaction,
    dst: &redb::WriteTransaction,
    def: redb::TableDefinition<'static, K, V>,
) -> Result<()> {
    match copy_table(src, dst, def) {
        Err(StorageError::Redb(redb::Error::TableDoesNotExist(_))) => Ok(()),
        other => other,
    }
}

fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &redb::ReadTransaction,
    dst: &redb::WriteTransaction,
    def: redb::TableDefinition<'static, K, V>,
) -> Result<()> {
    let from = src.open_table(def)?;
    let mut to = dst.open_table(def)?;
    for entry in from.iter()? {
        let (k, v) = entry?;
        to.insert(k.value(), v.value())?;
    }
    Ok(())
}

impl WriteTxn {
    /// Commits. `durable` waits until the data is on disk
    /// (`Durability::Immediate`); otherwise the commit is visible to readers
    /// at once but may be lost in a crash, together with every other
    /// non-durable commit since the last durable one.
    pub fn commit(self, durable: bool) -> Result<()> {
        let WriteTxn { mut txn, mark, turn } = self;
        if durable {
            txn.set_durability(Durability::Immediate)?;
        }
        txn.commit()?;
        turn.committed(mark);
        Ok(())
    }

    /// Leaves this transaction open for the next writer instead of committing:
    /// readers do not see its writes until one commits it. Its mark is recorded
    /// as committed then.
    pub fn park(self) {
        let WriteTxn { txn, mark, turn } = self;
        turn.park(txn, mark);
    }

    /// The mark [`Backend::committed_mark`] reports once this transaction
    /// commits; a resumed transaction keeps the one it was parked with.
    pub fn mark(&self) -> i64 {
        self.mark
    }

    /// Sets this transaction's mark (it only grows).
    pub fn set_mark(&mut self, mark: i64) {
        self.mark = self.mark.max(mark);
    }

    /// Discards every change of this transaction, parked writes it resumed included.
    pub fn abort(self) -> Result<()> {
        let WriteTxn { txn, turn, .. } = self;
        txn.abort()?;
        drop(turn);
        Ok(())
    }

    /// Sets meta entry `name` to `value`.
    pub fn meta_put(&self, name: &str, value: &[u8]) -> Result<()> {
        self.txn.open_table(META)?.insert(name, value)?;
        Ok(())
    }

    /// Removes meta entry `name`; returns whether it existed.
    pub fn meta_delete(&self, name: &str) -> Result<bool> {
        Ok(self.txn.open_table(META)?.remove(name)?.is_some())
    }

    /// Stores member `id`.
    pub fn members_put(&self, id: u64, value: &[u8]) -> Result<()> {
        self.txn.open_table(MEMBERS)?.insert(id, value)?;
        Ok(())
    }

    /// Removes member `id`; returns whether it existed.
    pub fn members_delete(&self, id: u64) -> Result<bool> {
        Ok(self.txn.open_table(MEMBERS)?.remove(id)?.is_some())
    }

    /// Records that member `id` was removed (for good).
    pub fn members_removed_put(&self, id: u64) -> Result<()> {
        self.txn.open_table(MEMBERS_REMOVED)?.insert(id, ())?;
        Ok(())
    }

    /// Forgets that member `id` was removed (a restore starts a new cluster).
    pub fn members_removed_delete(&self, id: u64) -> Result<bool> {
        match self.txn.open_table(MEMBERS_REMOVED) {
            Ok(mut t) => Ok(t.remove(id)?.is_some()),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores lease `id`.
    pub fn lease_put(&self, id: i64, value: &[u8]) -> Result<()> {
        self.txn.open_table(LEASE)?.insert(id, value)?;
        Ok(())
    }

    /// Removes lease `id`; returns whether it existed.
    pub fn lease_delete(&self, id: i64) -> Result<bool> {
        Ok(self.txn.open_table(LEASE)?.remove(id)?.is_some())
    }

    /// Sets `key` in auth table `table`.
    pub fn auth_put(&self, table: AuthTable, key: &[u8], value: &[u8]) -> Result<()> {
        self.txn.open_table(table.definition())?.insert(key, value)?;
        Ok(())
    }

    /// Removes `key` from auth table `table`; returns whether it existed.
    pub fn auth_delete(&self, table: AuthTable, key: &[u8]) -> Result<bool> {
        Ok(self.txn.open_table(table.definition())?.remove(key)?.is_some())
    }

    /// Inserts (or replaces) one entry of the `key` table.
    pub fn key_put(&self, rev_key: &[u8], value: &[u8]) -> Result<()> {
        self.txn.open_table(KEY)?.insert(rev_key, value)?;
        Ok(())
    }

    /// Removes one entry of the `key` table; returns whether it existed.
    pub fn key_delete(&self, rev_key: &[u8]) -> Result<bool> {
        Ok(self.txn.open_table(KEY)?.remove(rev_key)?.is_some())
    }

    /// Visits at most `limit` entries of the `key` table in `[start, end)`, in
    /// key order, and removes those for which `keep(key)` is false (one batch
    /// of a compaction).
    pub fn key_retain_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        keep: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<Retained> {
        let mut t = self.txn.open_table(KEY)?;
        let (mut doomed, mut visited, mut last) = (Vec::new(), 0, None);
        for entry in t.range(start..end)?.take(limit) {
            let (k, _) = entry?;
            visited += 1;
            if !keep(k.value()) {
                doomed.push(k.value().to_vec());
            }
            last = Some(k.value().to_vec());
        }
        for k in &doomed {
            t.remove(k.as_slice())?;
        }
        let resume_after = if visited == limit { last } else { None };
        Ok(Retained { removed: doomed.len() as u64, resume_after })
    }
}

/// What one [`WriteTxn::key_retain_range`] did.
#[derive(Debug, PartialEq)]
pub struct Retained {
    /// Entries removed.
    pub removed: u64,
    /// The last entry visited when the limit stopped the visit (entries after
    /// it in the range are still to visit); none when the range was done.
    pub resume_after: Option<Vec<u8>>,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::ReadTxn {}
    impl Sealed for super::WriteTxn {}
}

/// Reads available on both transaction kinds. A [`WriteTxn`] reads its own
/// uncommitted writes; a [`ReadTxn`] reads its snapshot.
pub trait ReadTables: sealed::Sealed {
    /// The value of meta entry `name`.
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Every member, ordered by id.
    fn members_list(&self) -> Result<Vec<(u64, Vec<u8>)>>;
    /// IDs of removed members, ascending.
    fn members_removed_list(&self) -> Result<Vec<u64>>;
    /// Every lease, ordered by id.
    fn leases_list(&self) -> Result<Vec<(i64, Vec<u8>)>>;
    /// One entry of the `key` table.
    fn key_get(&self, rev_key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Looks up each of `rev_keys` in the `key` table and hands `f` the
    /// stored bytes (none: absent) without copying them; stops when `f`
    /// returns false.
    fn key_get_each(
        &self,
        rev_keys: &mut dyn Iterator<Item = Vec<u8>>,
        f: &mut dyn FnMut(Option<&[u8]>) -> bool,
    ) -> Result<()>;
    /// Visits `key` table entries with `start <= key < end` (no upper bound if
    /// `end` is `None`) in key order until `f` returns false.
    fn key_scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;
    /// Number of entries in the `key` table.
    fn key_count(&self) -> Result<u64>;
    /// Every entry of auth table `table`, in key order (none if the file
    /// predates the auth tables).
    fn auth_list(&self, table: AuthTable) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
}

macro_rules! impl_read_tables {
    ($t:ty) => {
        impl ReadTables for $t {
            fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
                let t = self.txn.open_table(META)?;
                let v = t.get(name)?.map(|v| v.value().to_vec());
                Ok(v)
            }
            fn members_list(&self) -> Result<Vec<(u64, Vec<u8>)>> {
                let t = self.txn.open_table(MEMBERS)?;
                let mut out = Vec::new();
                for e in t.iter()? {
                    let (k, v) = e?;
                    out.push((k.value(), v.value().to_vec()));
                }
                Ok(out)
            }
            fn members_removed_list(&self) -> Result<Vec<u64>> {
                let t = match self.txn.open_table(MEMBERS_REMOVED) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                let mut out = Vec::new();
                for e in t.iter()? {
                    out.push(e?.0.value());
                }
                Ok(out)
            }
            fn leases_list(&self) -> Result<Vec<(i64, Vec<u8>)>> {
                let t = self.txn.open_table(LEASE)?;
                let mut out = Vec::new();
                for e in t.iter()? {
                    let (k, v) = e?;
                    out.push((k.value(), v.value().to_vec()));
                }
                Ok(out)
            }
            fn key_get(&self, rev_key: &[u8]) -> Result<Option<Vec<u8>>> {
                let t = self.txn.open_table(KEY)?;
                let v = t.get(rev_key)?.map(|v| v.value().to_vec());
                Ok(v)
            }
            fn key_get_each(
                &self,
                rev_keys: &mut dyn Iterator<Item = Vec<u8>>,
                f: &mut dyn FnMut(Option<&[u8]>) -> bool,
            ) -> Result<()> {
                let t = self.txn.open_table(KEY)?;
                for k in rev_keys {
                    let found = t.get(k.as_slice())?;
                    if !f(found.as_ref().map(|v| v.value())) {
                        break;
                    }
                }
                Ok(())
            }
            fn key_scan(
                &self,
                start: &[u8],
                end: Option<&[u8]>,
                f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
            ) -> Result<()> {
                let t = self.txn.open_table(KEY)?;
                let iter = match end {
                    Some(end) => t.range(start..end)?,
                    None => t.range(start..)?,
                };
                for e in iter {
                    let (k, v) = e?;
                    if !f(k.value(), v.value()) {
                        break;
                    }
                }
                Ok(())
            }
            fn key_count(&self) -> Result<u64> {
                Ok(self.txn.open_table(KEY)?.len()?)
            }
            fn auth_list(&self, table: AuthTable) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
                let t = match self.txn.open_table(table.definition()) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                let mut out = Vec::new();
                for e in t.iter()? {
                    let (k, v) = e?;
                    out.push((k.value().to_vec(), v.value().to_vec()));
                }
                Ok(out)
            }
        }
    };
}

impl_read_tables!(ReadTxn);
impl_read_tables!(WriteTxn);

/// The value of meta entry `name` (free-function form of [`ReadTables::meta_get`]).
pub fn meta_get(txn: &impl ReadTables, name: &str) -> Result<Option<Vec<u8>>> {
    txn.meta_get(name)
}

/// Sets meta entry `name`.
pub fn meta_put(txn: &WriteTxn, name: &str, value: &[u8]) -> Result<()> {
    txn.meta_put(name, value)
}

/// The last applied Raft `(index, term)`; `(0, 0)` if never written.
pub fn consistent_index(txn: &impl ReadTables) -> Result<(u64, u64)> {
    match txn.meta_get(schema::META_CONSISTENT_INDEX)? {
        None => Ok((0, 0)),
        Some(b) => schema::decode_consistent_index(&b).ok_or_else(|| StorageError::Corrupt {
            table: "meta",
            what: format!("{} has {} bytes, want 16", schema::META_CONSISTENT_INDEX, b.len()),
        }),
    }
}

/// Records the last applied Raft `(index, term)`.
pub fn set_consistent_index(txn: &WriteTxn, index: u64, term: u64) -> Result<()> {
    txn.meta_put(schema::META_CONSISTENT_INDEX, &schema::encode_consistent_index(index, term))
}

/// Stores member `id`.
pub fn members_put(txn: &WriteTxn, id: u64, value: &[u8]) -> Result<()> {
    txn.members_put(id, value)
}

/// Removes member `id`; returns whether it existed.
pub fn members_delete(txn: &WriteTxn, id: u64) -> Result<bool> {
    txn.members_delete(id)
}

/// Every member, ordered by id.
pub fn members_list(txn: &impl ReadTables) -> Result<Vec<(u64, Vec<u8>)>> {
    txn.members_list()
}
