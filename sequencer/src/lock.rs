//! One process per data folder: an exclusive advisory lock on `<dir>/LOCK`, holding the
//! owner's process id.
//!
//! Two nodes writing one log would each append their own blocks and leave a log that
//! recovery refuses, so a node takes this lock before it reads or writes anything in its
//! folder, and tools that change the log (`nexus wal truncate`) take it too. The lock is
//! `flock(2)`: the kernel drops it when the process exits, however it exits (SIGKILL
//! included), so a stale `LOCK` file never blocks a restart.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a data folder.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Why a data folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the folder.
    #[error(
        "data folder {} is in use by another process (pid {}); stop it first, or use another folder",
        .dir.display(),
        .holder.map_or_else(|| "unknown".to_string(), |pid| pid.to_string())
    )]
    Held {
        /// The folder.
        dir: PathBuf,
        /// The holder's process id, as it wrote it into the lock file (if readable).
        holder: Option<u32>,
    },
    /// The folder or its lock file could not be created or locked.
    #[error("cannot lock data folder {}: {source}", .dir.display())]
    Io {
        /// The folder.
        dir: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a data folder, held until dropped (or the process exits).
#[derive(Debug)]
pub struct DataDirLock {
    /// Kept open: closing the file releases the lock.
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it for this process, writing this process's id into
    /// the lock file. Fails with [`LockError::Held`] (naming the holder's pid) when another
    /// process holds it; nothing else in the folder is touched either way.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE_NAME))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: read_pid(&mut file),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DataDirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_folder_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        match DataDirLock::acquire(dir.path()) {
            Err(LockError::Held { holder, dir: held }) => {
                assert_eq!(holder, Some(std::process::id()));
                assert_eq!(held, dir.path());
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once the first is dropped");
    }

    #[test]
    fn the_folder_is_created_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let lock = DataDirLock::acquire(&nested).unwrap();
        assert_eq!(lock.dir(), nested);
        assert!(nested.join(LOCK_FILE_NAME).exists());
    }
}
