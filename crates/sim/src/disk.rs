//! Simulated disks: the backend's redb file ([`SimFile`]) and the WAL's
//! filesystem ([`SimFs`]) keep what was fsynced apart from what was only
//! written, and a crash decides what of the latter reached the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A redb file on the simulated disk. Writes land in `current`; `sync_data`
/// makes them durable; a crash keeps the durable bytes plus any subset of the
/// later writes, some torn.
#[derive(Debug, Clone, Default)]
pub struct SimFile(Arc<Mutex<FileState>>);

#[derive(Debug, Default)]
struct FileState {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last fsync, in order: at a crash, any of them may have
    /// reached the disk, whole or torn.
    unsynced: Vec<(usize, Vec<u8>)>,
    /// Between a crash and the restart: the dying process's writes are lost.
    frozen: bool,
    /// The next reads that fail (a bad sector, a flaky controller).
    failing_reads: u32,
}

impl SimFile {
    /// A file holding `bytes`, all of them durable (a received snapshot).
    pub fn with_bytes(bytes: Vec<u8>) -> SimFile {
        SimFile(Arc::new(Mutex::new(FileState {
            current: bytes.clone(),
            durable: bytes,
            unsynced: Vec::new(),
            frozen: false,
            failing_reads: 0,
        })))
    }

    /// The durable bytes.
    pub fn durable_bytes(&self) -> Vec<u8> {
        self.lock().durable.clone()
    }

    /// The power goes out: of the writes since the last fsync, each reached the
    /// disk or not, and one that did may be torn at a 512-byte sector (chosen by
    /// `seed`); writes from the process that is being torn down are ignored until
    /// [`SimFile::revive`].
    pub fn crash(&self, seed: u64) {
        let mut rng = etcd_raftnode::SplitMix64::new(seed);
        let mut state = self.lock();
        state.frozen = true;
        let mut disk = state.durable.clone();
        for (offset, data) in std::mem::take(&mut state.unsynced) {
            let kept = match rng.below(0, 4) {
                0 | 1 => continue,
                2 => data.len(),
                _ => (rng.below(0, data.len() as u64 / 512 + 1) * 512) as usize,
            };
            let kept = kept.min(data.len());
            if disk.len() < offset + kept {
                disk.resize(offset + kept, 0);
            }
            disk[offset..offset + kept].copy_from_slice(&data[..kept]);
        }
        state.durable = disk.clone();
        state.current = disk;
    }

    /// The power fails now: nothing this process writes from here on reaches
    /// the disk (see [`SimFile::crash`] for what the writes before it keep).
    pub fn freeze(&self) {
        self.lock().frozen = true;
    }

    /// The next `n` reads fail with an I/O error.
    pub fn fail_reads(&self, n: u32) {
        self.lock().failing_reads = n;
    }

    /// The member starts again on what the disk kept.
    pub fn revive(&self) {
        let mut state = self.lock();
        state.failing_reads = 0;
        state.current = state.durable.clone();
        state.frozen = false;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FileState> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A handle redb writes through (its own type: redb takes ownership).
#[derive(Debug)]
pub struct SimStorage(pub SimFile);

impl redb::StorageBackend for SimStorage {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.lock().current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let mut state = self.0.lock();
        if state.failing_reads > 0 && !state.frozen {
            state.failing_reads -= 1;
            return Err(std::io::Error::other("simulated read error"));
        }
        let start = offset as usize;
        let end = start + out.len();
        if end > state.current.len() {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        out.copy_from_slice(&state.current[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut state = self.0.lock();
        if !state.frozen {
            state.current.resize(len as usize, 0);
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut state = self.0.lock();
        if !state.frozen {
            state.durable = state.current.clone();
            state.unsynced.clear();
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut state = self.0.lock();
        if state.frozen {
            return Ok(());
        }
        let start = offset as usize;
        let end = start + data.len();
        if end > state.current.len() {
            state.current.resize(end, 0);
        }
        state.current[start..end].copy_from_slice(data);
        state.unsynced.push((start, data.to_vec()));
        Ok(())
    }
}

/// The contents of one simulated file.
#[derive(Debug, Default)]
struct FsFile {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last fsync of this file, in order.
    unsynced: Vec<(usize, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct FsState {
    /// The namespace as the process sees it.
    names: BTreeMap<PathBuf, Arc<Mutex<FsFile>>>,
    /// The namespace as the disk has it: creations, renames and removals are
    /// durable once their directory is fsynced.
    durable_names: BTreeMap<PathBuf, Arc<Mutex<FsFile>>>,
    dirs: BTreeSet<PathBuf>,
    /// Injected bug `ack-before-fsync`: fsyncs do nothing.
    skip_fsync: bool,
    /// The power fails at the next fsync, taking this backend file down too.
    fail_at_next_fsync: Option<SimFile>,
    /// The power failed: nothing more reaches the disk until the crash.
    dead: bool,
    /// The next reads (of a file, or of a directory's listing) fail.
    failing_reads: u32,
}

/// A simulated filesystem for the real WAL code (`etcd_wal::Fs`): what a
/// crash keeps is what was fsynced (file data by `sync_data`/`sync_all`, names
/// by `sync_dir`), plus any subset of later writes, some torn at a sector.
#[derive(Debug, Clone, Default)]
pub struct SimFs(Arc<Mutex<FsState>>);

/// An open file of a [`SimFs`].
#[derive(Debug)]
pub struct SimFsFile {
    data: Arc<Mutex<FsFile>>,
    fs: SimFs,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn not_found(path: &Path) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, path.display().to_string())
}

impl SimFs {
    /// A filesystem whose fsyncs do nothing (the injected bug).
    pub fn set_skip_fsync(&self, skip: bool) {
        lock(&self.0).skip_fsync = skip;
    }

    /// The power goes out: the namespace goes back to its durable state, and
    /// each file to its fsynced bytes plus, usually, the first of its later
    /// writes in order, the last of them possibly torn at a sector boundary
    /// (`seed` decides how many); one time in four, any subset of the sectors
    /// those writes touched instead, as a page cache flushing out of order
    /// leaves them (the WAL must take a hole in its unsynced tail for the end
    /// of the log, as etcd's does, and not for corruption).
    pub fn crash(&self, seed: u64) {
        let mut rng = etcd_raftnode::SplitMix64::new(seed);
        let mut state = lock(&self.0);
        state.dead = false;
        state.fail_at_next_fsync = None;
        state.names = state.durable_names.clone();
        let files: Vec<Arc<Mutex<FsFile>>> = state.names.values().cloned().collect();
        drop(state);
        for file in files {
            let mut file = lock(&file);
            let mut disk = file.durable.clone();
            let unsynced = std::mem::take(&mut file.unsynced);
            if rng.below(0, 4) == 0 {
                // The page cache flushed whole sectors in any order: each
                // sector the writes since the fsync touched holds its new
                // bytes or its old ones (zeros, in preallocated space).
                flush_sectors_in_any_order(&mut rng, &mut disk, &unsynced);
                file.durable = disk.clone();
                file.current = disk;
                continue;
            }
            let reached = rng.below(0, unsynced.len() as u64 + 1) as usize;
            for (n, (offset, data)) in unsynced.into_iter().take(reached).enumerate() {
                let kept = if n + 1 == reached && rng.below(0, 2) == 0 {
                    torn_at(&mut rng, offset, data.len())
                } else {
                    data.len()
                };
                if disk.len() < offset + kept {
                    disk.resize(offset + kept, 0);
                }
                disk[offset..offset + kept].copy_from_slice(&data[..kept]);
            }
            file.durable = disk.clone();
            file.current = disk;
        }
    }
}

impl SimFs {
    /// The power fails at this member's next fsync (of its WAL, or of a
    /// directory): that fsync and every later write of the process are lost,
    /// `backend` too; what was written before it is kept in part (see
    /// [`SimFs::crash`]).
    pub fn fail_at_next_fsync(&self, backend: SimFile) {
        lock(&self.0).fail_at_next_fsync = Some(backend);
    }

    /// The power will not fail after all (the world heals).
    pub fn disarm(&self) {
        lock(&self.0).fail_at_next_fsync = None;
    }

    /// Whether the power failed (the member must crash now).
    pub fn is_dead(&self) -> bool {
        lock(&self.0).dead
    }

    /// An fsync is issued: false when the power fails instead.
    fn fsync_happens(&self) -> bool {
        let mut state = lock(&self.0);
        if state.dead {
            return false;
        }
        if let Some(backend) = state.fail_at_next_fsync.take() {
            backend.freeze();
            state.dead = true;
            return false;
        }
        !state.skip_fsync
    }

    /// A read is issued: an error while reads are set to fail.
    fn read_happens(&self) -> std::io::Result<()> {
        let mut state = lock(&self.0);
        if state.failing_reads > 0 {
            state.failing_reads -= 1;
            return Err(std::io::Error::other("simulated read error"));
        }
        Ok(())
    }

    /// The next `n` reads of the WAL's files or directory fail with an I/O error.
    pub fn fail_reads(&self, n: u32) {
        lock(&self.0).failing_reads = n;
    }

    fn alive(&self) -> bool {
        !lock(&self.0).dead
    }
}

impl etcd_wal::Fs for SimFs {
    type File = SimFsFile;

    fn exists(&self, path: &Path) -> bool {
        let state = lock(&self.0);
        state.names.contains_key(path) || state.dirs.contains(path)
    }

    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        lock(&self.0).dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
        self.read_happens()?;
        let state = lock(&self.0);
        Ok(state
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .map(|p| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), p.clone()))
            .collect())
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.read_happens()?;
        let state = lock(&self.0);
        let file = state.names.get(path).ok_or_else(|| not_found(path))?;
        let contents = lock(file).current.clone();
        Ok(contents)
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        lock(&self.0).names.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let mut state = lock(&self.0);
        let file = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> std::io::Result<()> {
        if self.fsync_happens() {
            let mut state = lock(&self.0);
            state.durable_names = state.names.clone();
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> std::io::Result<SimFsFile> {
        let data = Arc::new(Mutex::new(FsFile::default()));
        lock(&self.0).names.insert(path.to_path_buf(), data.clone());
        Ok(SimFsFile { data, fs: self.clone() })
    }

    fn open_write(&self, path: &Path) -> std::io::Result<SimFsFile> {
        let state = lock(&self.0);
        let data = state.names.get(path).ok_or_else(|| not_found(path))?.clone();
        Ok(SimFsFile { data, fs: self.clone() })
    }
}

impl SimFsFile {
    fn sync(&self) {
        if self.fs.fsync_happens() {
            let mut file = lock(&self.data);
            file.durable = file.current.clone();
            file.unsynced.clear();
        }
    }
}

impl etcd_wal::SegmentFile for SimFsFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        // After the power failed, the process still sees its writes, but none
        // can reach the disk (names are durable only through `sync_dir`).
        let reaches_disk = self.fs.alive();
        let mut file = lock(&self.data);
        let (start, end) = (offset as usize, offset as usize + buf.len());
        if file.current.len() < end {
            file.current.resize(end, 0);
        }
        file.current[start..end].copy_from_slice(buf);
        if reaches_disk {
            file.unsynced.push((start, buf.to_vec()));
        }
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.sync();
        Ok(())
    }

    fn sync_all(&self) -> std::io::Result<()> {
        self.sync();
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        lock(&self.data).current.resize(len as usize, 0);
        Ok(())
    }

    fn preallocate(&self, len: u64) -> std::io::Result<()> {
        let mut file = lock(&self.data);
        if (file.current.len() as u64) < len {
            file.current.resize(len as usize, 0);
        }
        Ok(())
    }
}

/// Applies to `disk` a random subset of the 512-byte sectors `writes` touched,
/// each with its bytes after every write.
fn flush_sectors_in_any_order(
    rng: &mut etcd_raftnode::SplitMix64,
    disk: &mut Vec<u8>,
    writes: &[(usize, Vec<u8>)],
) {
    const SECTOR: usize = 512;
    let mut target = disk.clone();
    let mut dirty = BTreeSet::new();
    for (offset, data) in writes.iter().filter(|(_, data)| !data.is_empty()) {
        let end = offset + data.len();
        if target.len() < end {
            target.resize(end, 0);
        }
        target[*offset..end].copy_from_slice(data);
        dirty.extend(offset / SECTOR..=(end - 1) / SECTOR);
    }
    for sector in dirty {
        if rng.below(0, 2) == 0 {
            continue;
        }
        let (start, end) = (sector * SECTOR, ((sector + 1) * SECTOR).min(target.len()));
        if disk.len() < end {
            disk.resize(end, 0);
        }
        disk[start..end].copy_from_slice(&target[start..end]);
    }
}

/// How much of a write of `len` bytes at `offset` reached the disk when it was
/// torn: up to one of the 512-byte sector boundaries it crosses (all or
/// nothing when it crosses none).
fn torn_at(rng: &mut etcd_raftnode::SplitMix64, offset: usize, len: usize) -> usize {
    const SECTOR: usize = 512;
    let first = offset / SECTOR * SECTOR + SECTOR;
    let boundaries: Vec<usize> = (first..offset + len).step_by(SECTOR).collect();
    if boundaries.is_empty() {
        return if rng.below(0, 2) == 0 { 0 } else { len };
    }
    boundaries[rng.below(0, boundaries.len() as u64) as usize] - offset
}
