//! Online backup of the SQLite ledger (`tai-autonomics backup --to FILE`): one consistent
//! snapshot of the whole file, taken while the service may be appending, written to a new file
//! that appears under its name only once it is complete and on disk.
//!
//! SQLite's `VACUUM INTO` reads the ledger in one read transaction. In WAL mode a reader
//! neither waits for the writer nor holds it up, and it sees the commits that ended before it
//! began, all of each or nothing of it. Checkpoints are passive here, so the WAL only grows
//! for the duration. The copy is a plain SQLite database that the service opens as its ledger.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// Why a backup was not written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// There is no ledger at the configured path (nothing is created).
    #[error("there is no ledger at {0}")]
    NoLedger(PathBuf),
    /// The target exists already; a backup never overwrites a file.
    #[error("{0} exists already; a backup is written to a new file")]
    Exists(PathBuf),
    /// The target cannot be written (its folder is missing or not writable, the disk is full).
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    /// The ledger cannot be read.
    #[error("cannot read the ledger at {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// The ledger file is damaged (SQLite found a page it cannot read): a copy would carry the
    /// damage or stop at it, so none is written.
    #[error(
        "the ledger at {path} is damaged ({reason}); no copy was written: restore the last \
         backup, or salvage what is readable (README, Backup and restore)"
    )]
    Damaged { path: PathBuf, reason: String },
}

/// Copies the ledger at `source` into a new file at `target` and returns the copy's size in
/// bytes (see [`copy_into`]).
pub fn backup(source: &Path, target: &Path) -> Result<u64, BackupError> {
    if !source.is_file() {
        return Err(BackupError::NoLedger(source.to_owned()));
    }
    if target.exists() {
        return Err(BackupError::Exists(target.to_owned()));
    }
    // Opened for reading, never created (a mistyped path is not a new empty ledger), as
    // `verify` opens it: from read-only media too. As `verify` does, it leaves the folder as
    // it found it once `conn` is closed.
    let _tidy = super::sqlite::Tidy::before_reading(source);
    let conn = super::sqlite::open_read_only(source).map_err(|e| BackupError::Read {
        path: source.to_owned(),
        reason: super::sqlite::reading_failed(source, &e),
    })?;
    copy_into(&conn, source, target)
}

/// Copies the database `conn` has open (the ledger at `source`, named in errors) into a new
/// file at `target` and returns the copy's size in bytes. The copy is written as
/// `<target>.partial` (an earlier attempt's leftover of that name is replaced), synced, renamed
/// to `target` and its folder synced, so `target` never holds half a copy, even when the
/// process dies on the way.
pub fn copy_into(conn: &Connection, source: &Path, target: &Path) -> Result<u64, BackupError> {
    if target.exists() {
        return Err(BackupError::Exists(target.to_owned()));
    }
    let write = |reason: String| BackupError::Write {
        path: target.to_owned(),
        reason,
    };
    let Some(target_text) = target.to_str() else {
        return Err(write("the path is not UTF-8".into()));
    };
    let partial = PathBuf::from(format!("{target_text}.partial"));
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(write(format!("removing {}: {e}", partial.display()))),
    }
    let read = |e: rusqlite::Error| BackupError::Read {
        path: source.to_owned(),
        reason: e.to_string(),
    };
    let into = conn.execute("VACUUM INTO ?1", [partial.to_string_lossy().as_ref()]);
    if let Err(e) = into {
        let _ = std::fs::remove_file(&partial);
        // SQLITE_CANTOPEN is the target's folder; anything else is the source or the disk.
        return Err(match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::DiskFull) => {
                write(e.to_string())
            }
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                BackupError::Damaged {
                    path: source.to_owned(),
                    reason: e.to_string(),
                }
            }
            _ => read(e),
        });
    }
    put_in_place(&partial, target).map_err(write)
}

/// Syncs the complete file `partial`, renames it to `target` and syncs their folder, so that
/// `target` appears only whole and on disk; returns its size. On a failure before the rename,
/// `partial` is removed.
pub(super) fn put_in_place(partial: &Path, target: &Path) -> Result<u64, String> {
    let synced = std::fs::File::open(partial)
        .and_then(|f| f.sync_all().and_then(|()| f.metadata()))
        .and_then(|meta| std::fs::rename(partial, target).map(|()| meta.len()));
    let bytes = synced.map_err(|e| {
        let _ = std::fs::remove_file(partial);
        e.to_string()
    })?;
    // The rename is durable once the folder's entry is.
    let folder = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(folder)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", folder.display()))?;
    Ok(bytes)
}
