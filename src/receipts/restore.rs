//! Restore of the SQLite ledger from a backup (`tai-autonomics restore --from FILE`): the
//! ledger's pages replaced by the backup's in one write transaction, under an exclusive lock on
//! the ledger file that no other process may hold a connection beside, after the ledger being
//! replaced has been copied aside whole.
//!
//! Invariants: the ledger at the path is, at every moment, either the old one or the backup's
//! copy, never a mix (SQLite's backup API writes every page in one transaction of the
//! write-ahead log, which a crash rolls back); nothing is written while another process has the
//! file open (a service, `mcp-stdio`, `verify`, `backup`: each holds a shared lock on it, so the
//! exclusive one is refused and the restore stops before writing anything); and the old ledger,
//! every receipt it held, is on disk under `<ledger>.replaced-<unix ms>` before its first page
//! is overwritten. Nothing is deleted but a killed process's stale `-shm` index and the
//! emptied log.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::sqlite::beside;

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The old ledger's copy (`<ledger>.replaced-<unix ms>`), or `None` where there was none.
    pub replaced: Option<PathBuf>,
    /// The restored ledger's size in bytes.
    pub bytes: u64,
}

/// Why the ledger was not restored. The ledger at the path is as it was (where there was none,
/// a failure after the lock was taken may leave a new, empty one, as a service would make).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// There is no backup at the path given.
    #[error("there is no backup at {0}")]
    NoBackup(PathBuf),
    /// The backup given is the ledger file itself.
    #[error("{0} is the ledger itself: restore from a backup")]
    SameFile(PathBuf),
    /// Another process has the ledger open (a running service, `mcp-stdio`, `verify`, `backup`).
    #[error(
        "the ledger at {0} is open in another process (a running service, mcp-stdio, verify or \
         backup): stop it, then restore"
    )]
    InUse(PathBuf),
    /// The file at the ledger's path is not a SQLite database at all (its first page is lost,
    /// or it is another kind of file), so it cannot be locked and replaced as one.
    #[error(
        "the file at {path} is not a SQLite database ({reason}): move it away (keep it for \
         inspection), then restore again"
    )]
    NotADatabase { path: PathBuf, reason: String },
    /// The backup cannot be read.
    #[error("cannot read the backup at {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// The ledger, or the old ledger's copy beside it, cannot be written.
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Replaces the ledger at `ledger` (made, with its folder, where there is none) with the
/// database in `backup`, which the caller has verified. See the module's invariants.
pub fn restore(backup: &Path, ledger: &Path) -> Result<Restored, RestoreError> {
    if !backup.is_file() {
        return Err(RestoreError::NoBackup(backup.to_owned()));
    }
    if ledger.exists() && same_file(backup, ledger) {
        return Err(RestoreError::SameFile(backup.to_owned()));
    }
    let write = |path: &Path, reason: String| RestoreError::Write {
        path: path.to_owned(),
        reason,
    };
    let _tidy = super::sqlite::Tidy::before_reading(backup);
    let source = super::sqlite::open_read_only(backup).map_err(|e| RestoreError::Read {
        path: backup.to_owned(),
        reason: super::sqlite::reading_failed(backup, &e),
    })?;
    if let Some(dir) = ledger.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| write(dir, e.to_string()))?;
    }
    // Pages in the file or in its log: either is a ledger to keep.
    let had_pages = [ledger.to_owned(), beside(ledger, "-wal")]
        .iter()
        .any(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0));
    let mut dest = lock(ledger)?;
    let sql = |e: rusqlite::Error| write(ledger, e.to_string());
    let replaced = if had_pages {
        Some(copy_aside(&dest, ledger)?)
    } else {
        None
    };
    {
        let pages = rusqlite::backup::Backup::new(&source, &mut dest).map_err(sql)?;
        match pages.step(-1) {
            Ok(rusqlite::backup::StepResult::Done) => {}
            Ok(other) => return Err(write(ledger, format!("the copy stopped: {other:?}"))),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) => {
                return Err(write(
                    ledger,
                    format!(
                        "{e}: the backup's page size differs from the ledger's; move the \
                         ledger away (it is copied at {}), then restore again",
                        replaced
                            .as_deref()
                            .map_or("<none>".into(), |p| p.display().to_string())
                    ),
                ))
            }
            Err(e) => return Err(sql(e)),
        }
    }
    // The restored pages into the file itself, so that the closing below leaves it alone.
    dest.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(sql)?;
    // A service killed without a stop leaves its shared-memory index; under the exclusive lock
    // nothing uses it, and a stale one describes a log that is gone.
    let shm = beside(ledger, "-shm");
    match std::fs::remove_file(&shm) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(write(&shm, e.to_string())),
    }
    // The last connection: SQLite removes the empty log as it closes.
    dest.close().map_err(|(_, e)| sql(e))?;
    let bytes = std::fs::metadata(ledger)
        .map_err(|e| write(ledger, e.to_string()))?
        .len();
    Ok(Restored { replaced, bytes })
}

/// A connection to the ledger at `path` that holds the file's exclusive lock until it closes
/// (SQLite's exclusive locking mode, in which a write-ahead log is read without the shared
/// index): refused at once while another connection, in this process or another, has the
/// file open.
fn lock(path: &Path) -> Result<Connection, RestoreError> {
    let failed = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            RestoreError::InUse(path.to_owned())
        }
        Some(rusqlite::ErrorCode::NotADatabase) => RestoreError::NotADatabase {
            path: path.to_owned(),
            reason: e.to_string(),
        },
        _ => RestoreError::Write {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(failed)?;
    conn.busy_timeout(std::time::Duration::ZERO)
        .map_err(failed)?;
    conn.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |_| Ok(()))
        .map_err(failed)?;
    // The first reading takes the lock. A new file is made a WAL-mode one, as the service
    // makes it; one already in WAL mode stays so.
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .map_err(failed)?;
    // And a write transaction holds it whatever the file's mode was.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT")
        .map_err(failed)?;
    Ok(conn)
}

/// Copies the ledger `conn` holds locked, with every receipt its log held, to a new file
/// `<path>.replaced-<unix ms>` that appears under its name only once whole and on disk. The
/// bytes are copied as they are, so a damaged ledger is kept as it was found.
fn copy_aside(conn: &Connection, path: &Path) -> Result<PathBuf, RestoreError> {
    let copy = PathBuf::from(format!(
        "{}.replaced-{}",
        path.display(),
        crate::clock::now_ms()
    ));
    // The log into the file. Should that fail (a damaged ledger), the log is copied too, as
    // `<copy>-wal`, where SQLite reads it with the copy.
    let whole = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })
        .is_ok_and(|busy| busy == 0);
    let wal = beside(path, "-wal");
    if !whole && std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        copy_file(&wal, &beside(&copy, "-wal"))?;
    }
    copy_file(path, &copy)?;
    Ok(copy)
}

/// Copies `from` to a new file `to` (written as `<to>.partial`, synced, renamed, its folder
/// synced).
fn copy_file(from: &Path, to: &Path) -> Result<(), RestoreError> {
    let write = |reason: String| RestoreError::Write {
        path: to.to_owned(),
        reason,
    };
    if to.exists() {
        return Err(write("it exists already".into()));
    }
    let partial = beside(to, ".partial");
    if let Err(e) = std::fs::copy(from, &partial) {
        let _ = std::fs::remove_file(&partial);
        return Err(write(e.to_string()));
    }
    super::backup::put_in_place(&partial, to)
        .map(|_| ())
        .map_err(write)
}

/// Whether `a` and `b` name one file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
