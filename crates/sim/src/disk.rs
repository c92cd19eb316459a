//! Simulated disks: a backend file and a Raft log that keep what was fsynced
//! apart from what was only written, so a crash loses exactly the latter.

use std::sync::{Arc, Mutex};

use etcd_raftnode::{ConfState, Entry, HardState, RestoreState};

/// A redb file on the simulated disk. Writes land in `current`; `sync_data`
/// makes them durable; a crash puts `current` back to the durable bytes.
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

/// One record of the simulated Raft log.
#[derive(Debug, Clone)]
enum Record {
    Entries(Vec<Entry>),
    HardState(HardState),
    Snapshot { index: u64, term: u64, conf_state: ConfState },
}

/// The Raft log on the simulated disk: records, of which a prefix is durable.
#[derive(Debug, Clone, Default)]
pub struct SimLog {
    records: Vec<Record>,
    durable: usize,
    /// Injected bug `ack-before-fsync`: fsyncs do nothing.
    pub skip_fsync: bool,
}

impl SimLog {
    /// Appends entries and a hard state; durable when `sync`.
    pub fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>, sync: bool) {
        if !entries.is_empty() {
            self.records.push(Record::Entries(entries.to_vec()));
        }
        if let Some(hs) = hard_state {
            self.records.push(Record::HardState(hs.clone()));
        }
        if sync {
            self.sync();
        }
    }

    /// Records a snapshot, durably.
    pub fn save_snapshot(&mut self, index: u64, term: u64, conf_state: &ConfState) {
        self.records.push(Record::Snapshot { index, term, conf_state: conf_state.clone() });
        self.sync();
    }

    fn sync(&mut self) {
        if !self.skip_fsync {
            self.durable = self.records.len();
        }
    }

    /// Whether nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Drops what is not durable.
    pub fn crash(&mut self) {
        self.records.truncate(self.durable);
    }

    /// What a restarted member recovers: the newest snapshot, the newest hard
    /// state, and the entries after the snapshot (a later append at an index
    /// replaces everything from there on, as Raft overwrites a follower's log).
    pub fn replay(&self) -> RestoreState {
        let mut state = RestoreState::default();
        for record in &self.records {
            match record {
                Record::Entries(entries) => {
                    let Some(first) = entries.first() else { continue };
                    state.entries.retain(|e| e.index < first.index);
                    state
                        .entries
                        .extend(entries.iter().filter(|e| e.index > state.snapshot_index).cloned());
                }
                Record::HardState(hs) => state.hard_state = hs.clone(),
                Record::Snapshot { index, term, conf_state } => {
                    state.snapshot_index = *index;
                    state.snapshot_term = *term;
                    state.conf_state = conf_state.clone();
                    state.entries.retain(|e| e.index > *index);
                }
            }
        }
        state
    }

    /// Compacts records a durable snapshot at `index` covers (the WAL's
    /// segment release).
    pub fn release_to(&mut self, index: u64) {
        let _ = index;
    }
}
