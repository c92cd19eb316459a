//! The file operations the WAL makes, behind a trait: the operating system's
//! files in the server ([`OsFs`]), a simulated disk in the simulator (which
//! decides what a crash keeps). Nothing else in the crate touches files.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A directory tree of segment files.
pub trait Fs: std::fmt::Debug + Send + 'static {
    /// An open segment file.
    type File: SegmentFile;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The entries of `dir`: file name and path.
    fn list(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file (atomically replacing `to`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates (or truncates) a file for writing.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for writing.
    fn open_write(&self, path: &Path) -> io::Result<Self::File>;
}

/// An open segment file.
pub trait SegmentFile: std::fmt::Debug + Send + 'static {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the written data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the data and the metadata durable (fsync).
    fn sync_all(&self) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Allocates disk blocks for the first `len` bytes, extending the file (with
    /// zeros) if it is shorter. A filesystem that cannot leaves it as it is.
    fn preallocate(&self, len: u64) -> io::Result<()>;
}

/// The operating system's files.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

impl Fs for OsFs {
    type File = File;

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_owned(), entry.path()));
            }
        }
        Ok(out)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        File::open(dir).and_then(|d| d.sync_all())
    }

    fn create(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).create(true).truncate(true).open(path)
    }

    fn open_write(&self, path: &Path) -> io::Result<File> {
        // Not `O_APPEND`: a segment is preallocated, so writes go at the
        // logical end of its data, not at the end of the file.
        OpenOptions::new().write(true).open(path)
    }
}

impl SegmentFile for File {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    /// Real allocation (`fallocate` with an empty mode), not a sparse
    /// `set_len`, so later writes in that range do not change the file size
    /// and `fdatasync` need not journal one; nothing is written. A filesystem
    /// that cannot preallocate (`EOPNOTSUPP`, `EINVAL`, `ENOSYS`) leaves the
    /// file as it is: writes then extend it, which is only slower.
    fn preallocate(&self, len: u64) -> io::Result<()> {
        use rustix::fs::{fallocate, FallocateFlags};
        use rustix::io::Errno;
        if len == 0 {
            return Ok(());
        }
        match fallocate(self, FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(e) if e == Errno::OPNOTSUPP || e == Errno::INVAL || e == Errno::NOSYS => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
