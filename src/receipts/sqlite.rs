//! The SQLite ledger (embedded default): one file, WAL, `synchronous=FULL`, versioned schema.
//!
//! One write connection (used only by the receipt writer, through the blocking pool) and a small
//! pool of read connections, so reads never wait behind a commit. Triggers refuse any UPDATE or
//! DELETE of a receipt: the code has no such path, and the file refuses one too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::chain::{Anchor, Verifier, VerifyReport};
use super::receipt::{Receipt, ReceiptType};
use super::store::{
    seq_bound, AppendItem, GovernorSnapshot, Head, LedgerStore, OpenAction, PageRead, StoreError,
};

/// The receipts that start or end an action ([`super::store::ACTION_EVENTS`]), as the SQL
/// condition of the partial index `receipts_actions` and of the query that uses it (SQLite
/// uses a partial index only for a query with the same condition).
macro_rules! action_events_sql {
    () => {
        "(event_type = 'action_started' OR event_type = 'action_completed' OR event_type = 'action_failed' OR event_type = 'action_timeout' OR event_type = 'entitlement_changed')"
    };
}

/// Schema migrations, applied in order; `schema_migrations` records the versions applied.
const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        "CREATE TABLE receipts (
        tenant_id    TEXT    NOT NULL,
        seq          INTEGER NOT NULL,
        receipt_id   TEXT    NOT NULL,
        type         TEXT    NOT NULL,
        event_type   TEXT    NOT NULL,
        state_from   TEXT,
        state_to     TEXT,
        reason       TEXT    NOT NULL,
        metadata     TEXT    NOT NULL,
        node         TEXT    NOT NULL,
        timestamp    TEXT    NOT NULL,
        prev_hash    TEXT    NOT NULL,
        receipt_hash TEXT    NOT NULL
    );
    -- Rows are appended in commit order (rowid); the chain key and the id are unique indexes,
    -- whose small entries keep a commit's page writes low.
    CREATE UNIQUE INDEX receipts_chain ON receipts (tenant_id, seq);
    CREATE UNIQUE INDEX receipts_id ON receipts (receipt_id);
    CREATE TABLE pubsub_messages (
        message_id TEXT PRIMARY KEY,
        receipt_id TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE entitlements (
        tenant_id TEXT PRIMARY KEY,
        record    TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TRIGGER receipts_are_append_only_update BEFORE UPDATE ON receipts
        BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;
    CREATE TRIGGER receipts_are_append_only_delete BEFORE DELETE ON receipts
        BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END;",
    ),
    (
        2,
        // Tenants whose chain may end with an action in flight (`open_actions`): one entry per
        // action receipt, a small share of the rows.
        concat!(
            "CREATE INDEX receipts_actions ON receipts (tenant_id, seq, event_type) WHERE ",
            action_events_sql!(),
            ";"
        ),
    ),
];

const COLUMNS: &str = "receipt_id, tenant_id, seq, type, event_type, state_from, state_to, reason, metadata, node, timestamp, prev_hash, receipt_hash";

/// Up to `?3` receipts of tenant `?1` after seq `?2`, in chain order (`range`, `verify_page`).
fn page_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM receipts WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
    )
}

/// Each tenant whose last action receipt is `action_started`, with its timestamp. The inner
/// query reads only the partial index `receipts_actions` (the row with the largest seq of each
/// tenant's group gives `event_type`: SQLite's bare columns of a MAX() aggregate); the rows
/// themselves are read for the open ones only.
fn open_actions_sql() -> &'static str {
    concat!(
        "SELECT a.tenant_id, r.timestamp FROM (SELECT tenant_id, event_type, MAX(seq) AS seq FROM receipts WHERE ",
        action_events_sql!(),
        " GROUP BY tenant_id) a JOIN receipts r ON r.tenant_id = a.tenant_id AND r.seq = a.seq",
        " WHERE a.event_type = 'action_started' ORDER BY a.tenant_id"
    )
}

/// Up to `?2` (at least 1) tenants with a chain, after `?1` in order: one seek in the chain
/// index per tenant (a loose index scan). `SELECT DISTINCT tenant_id` read every receipt's
/// index entry of the page's tenants instead, so a page took as long as their chains were.
const TENANTS_SQL: &str = "WITH RECURSIVE page(tenant_id, n) AS (
        SELECT (SELECT tenant_id FROM receipts WHERE tenant_id > ?1 ORDER BY tenant_id LIMIT 1), 1
        UNION ALL
        SELECT (SELECT tenant_id FROM receipts WHERE tenant_id > page.tenant_id ORDER BY tenant_id LIMIT 1), n + 1
        FROM page WHERE page.tenant_id IS NOT NULL AND n < ?2
    )
    SELECT tenant_id FROM page WHERE tenant_id IS NOT NULL";

/// The receipt recorded for Pub/Sub message id `?1` (built once: it is asked for per arrival
/// group of Pub/Sub callers).
fn by_message_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let cols = COLUMNS.split(", ").map(|col| format!("r.{col}")).collect::<Vec<_>>().join(", ");
        format!("SELECT {cols} FROM pubsub_messages m JOIN receipts r ON r.receipt_id = m.receipt_id WHERE m.message_id = ?1")
    })
}

/// The SQLite backend.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` once the store is closed at a stop ([`SqliteStore::close_at_stop`]).
    writer: Mutex<Option<Connection>>,
    readers: Mutex<Vec<Connection>>,
    snapshots: Mutex<SnapshotQueue>,
    /// Frames in the WAL as the checkpoint thread last saw them, published past
    /// `WAL_RESTART_FRAMES` only once the thread has made what it copied durable.
    wal_frames: AtomicU64,
    /// Opened with [`SqliteStore::open_read_only`]: connections that cannot write.
    read_only: bool,
    /// The database file and its log as the writer opened them (empty for a read-only store):
    /// see [`Inner::check_files`].
    files: Vec<(PathBuf, FileId)>,
    /// Whether [`Inner::check_files`] has logged that they were displaced.
    displaced: AtomicBool,
    /// The checkpoint thread, woken and waited for when the store is closed or dropped (none
    /// for a read-only store).
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set by [`Inner::close`]: no connection is opened or kept from then on.
    closed: AtomicBool,
    /// A read-only store's clean-up after its last connection ([`Tidy`]).
    tidy: Mutex<Option<Tidy>>,
}

/// The last handle to a store not closed at a stop (tests, tools) closes it too.
impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    /// Closes every connection the store opened: the readers', the checkpoint thread's (woken
    /// from its pause, its last pass waited for) and the writer's, last. When that is the
    /// last connection to the file, SQLite copies what the log holds into it and removes the
    /// `-wal` and the `-shm`, so a store closed (or dropped) leaves the ledger file alone.
    /// Appends and reads after it fail as unavailable.
    fn close(&self) {
        {
            let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            self.closed.store(true, Ordering::Release);
            pool.clear();
        }
        let thread = self
            .checkpointer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // The thread itself may hold the last handle for a moment (it upgrades its weak one
        // to look at the store); it then ends by itself at its loop's test.
        if let Some(thread) = thread.filter(|t| t.thread().id() != std::thread::current().id()) {
            thread.thread().unpark();
            let _ = thread.join();
        }
        drop(self.writer().take());
        drop(self.tidy.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// The writer's connection (`None` once the store is closed).
    fn writer(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns a read connection to the pool (at most eight are kept; none once closed).
    fn give_back(&self, conn: Connection) {
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 8 && !self.closed.load(Ordering::Acquire) {
            pool.push(conn);
        }
    }
}

fn closed() -> StoreError {
    unavailable("the ledger is closed: the service is stopping")
}

/// Which file a path named: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)?;
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// The ledger's files as the writer opened them: the database file, and its log and the log's
/// shared-memory index when they exist (SQLite keeps both while a connection is open). With
/// the index deleted, another process that opens the file (a second service, `backup`) makes a
/// new one, and SQLite's locks between it and this process no longer meet: two writers would
/// each keep their own index of one log.
fn opened_files(path: &Path) -> Result<Vec<(PathBuf, FileId)>, StoreError> {
    let mut files = vec![(
        path.to_owned(),
        file_id(path).map_err(|e| unavailable(format!("reading {}: {e}", path.display())))?,
    )];
    for suffix in ["-wal", "-shm"] {
        let beside = beside(path, suffix);
        if let Ok(id) = file_id(&beside) {
            files.push((beside, id));
        }
    }
    Ok(files)
}

impl Inner {
    /// A new read connection.
    fn connect(&self) -> Result<Connection, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        if self.read_only {
            open_read_only(&self.path).map_err(sql_error)
        } else {
            self.check_files()?;
            open(&self.path).map_err(sql_error)
        }
    }

    /// Fails when the ledger's files are no longer the ones the writer opened: deleted (a
    /// cleaner or an operator removed the folder) or replaced (a restore moved a copy over
    /// them while the service ran). The writer's connection would go on committing to a file
    /// that nothing names any more, and every receipt acknowledged from then on would be gone
    /// at the next start. So appends and health checks fail from then on (503, `ledger:
    /// error`), the first failure is logged, and the checkpoint thread writes a copy of the
    /// files as opened beside the path ([`rescue`]). One `stat` a file.
    fn check_files(&self) -> Result<(), StoreError> {
        let Some(why) = self
            .files
            .iter()
            .find_map(|(path, opened)| match file_id(path) {
                Ok(now) if now == *opened => None,
                Ok(_) => Some(format!("{} was replaced", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some(format!("{} was deleted", path.display()))
                }
                Err(e) => Some(format!("{} cannot be found again: {e}", path.display())),
            })
        else {
            return Ok(());
        };
        if !self.displaced.swap(true, Ordering::Relaxed) {
            tracing::error!(
                detail = %why,
                "the ledger's files were deleted or replaced while the service had them open; \
                 nothing more is written or acknowledged until it is restarted"
            );
        }
        Err(unavailable(
            "the ledger's file was deleted or replaced while the service had it open",
        ))
    }
}

/// How long a connection waits for another's lock before it reports the ledger busy.
const BUSY_TIMEOUT_MS: i64 = 5000;

/// The writer connection's page cache, in KiB (readers keep 64 MiB; see `SqliteStore::open`).
const WRITER_CACHE_KIB: i64 = 4096;

/// WAL frames (4 KiB pages) beyond which the writer checkpoints the rest itself after a commit.
/// The checkpoint thread alone never lets the WAL start over under a steady write load: new
/// frames arrive while it copies, so the log is never entirely copied back when the next write
/// transaction begins, and the WAL grew by the full write rate (1.5 GB in 12 s at 256
/// producers), every write allocating fresh file pages. The writer adds no frames while it
/// checkpoints, so its pass copies what the thread has not yet copied, and the next commit
/// writes the WAL from its start again. A pass that reaches the end of the WAL also fsyncs the
/// database file, which holds everything the thread copied since the last such pass (tens of
/// MB at full load): done by the writer, that fsync stalled commits for about 10 ms. So the
/// thread fsyncs the file itself and catches up once more before it tells the writer, whose
/// pass is then a few hundred frames.
const WAL_RESTART_FRAMES: u64 = 8192;

type SnapshotReply = tokio::sync::oneshot::Sender<Result<GovernorSnapshot, StoreError>>;
type SnapshotAsk = (String, &'static [&'static str], SnapshotReply);

/// Governor snapshots asked for and not yet read. One blocking task at a time drains the queue
/// on one read connection, so a burst of governor starts costs a few index look-ups each, not
/// a blocking-pool hop (and a thread) each.
#[derive(Default)]
struct SnapshotQueue {
    waiting: Vec<SnapshotAsk>,
    draining: bool,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A SQLite error as the store reports it: a damaged file (`SQLITE_CORRUPT`, `SQLITE_NOTADB`
/// met past the header) is [`StoreError::Corrupt`], which no retry mends; anything else
/// may pass (locked, I/O, out of space) and is [`StoreError::Unavailable`].
fn sql_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => {
            StoreError::Corrupt(format!("the ledger file is damaged ({e})"))
        }
        _ => unavailable(e),
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    configure(Connection::open(path)?)
}

/// The writer's connection, through the `walbuf` VFS: a commit's WAL frames reach the file in
/// a few writes at its fsync instead of two writes a frame (see that crate). That is correct
/// only when every commit syncs the log, so the connection checks that it does.
fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    let vfs = walbuf::register()
        .map_err(|e| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(e.0), None))?;
    let conn = configure(Connection::open_with_flags_and_vfs(
        path,
        rusqlite::OpenFlags::default(),
        vfs,
    )?)?;
    // 2 = FULL, 3 = EXTRA: both sync the WAL at every commit.
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if synchronous < 2 {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
            Some(format!(
                "the ledger writer needs synchronous=FULL, its connection has {synchronous}"
            )),
        ));
    }
    Ok(conn)
}

/// A connection that can only read, to a file that must exist; it leaves the file's journal
/// mode as it is (a backup's copy is in rollback mode, and reading it leaves nothing beside it).
pub(super) fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // A WAL-mode file is read through its shared-memory index (`-shm`), which SQLite makes
    // beside the file at the first read. On read-only media (a mounted snapshot, an archive),
    // or in a folder the reader may not write, a file without one cannot be read. With no
    // write-ahead log beside it either, or an empty one (a service that stopped cleanly leaves
    // it so), the file is the whole ledger, and it is read as it stands, as immutable (no
    // index, no locks): a service that wrote it now would write to its log first, which this
    // read does not see, as a read that began before those commits would not.
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())) {
        Err(e)
            if cannot_make_index(&e)
                && std::fs::metadata(beside(path, "-wal")).map_or(true, |m| m.len() == 0) =>
        {
            drop(conn);
            let uri = format!("file:{}?immutable=1", uri_path(path));
            tune(Connection::open_with_flags(
                uri,
                flags | OpenFlags::SQLITE_OPEN_URI,
            )?)
        }
        _ => tune(conn),
    }
}

/// The index and the empty log that reading a WAL-mode ledger makes beside it when it had no
/// log (as a cleanly stopped service leaves it), which a read-only connection cannot remove
/// again: `verify` and `backup` left both behind. Made before the first read connection is
/// opened, and dropped after the last one is closed (declared before it, a local is).
pub(super) struct Tidy(Option<PathBuf>);

impl Tidy {
    /// Notes whether the ledger at `path` has a log beside it now.
    pub(super) fn before_reading(path: &Path) -> Tidy {
        Tidy((!beside(path, "-wal").exists()).then(|| path.to_owned()))
    }
}

impl Drop for Tidy {
    /// Where the reading made an empty log beside the ledger: one connection that may write
    /// opens the file and reads it, and closes, so SQLite, finding it the last connection,
    /// removes the log and the index as at any last close. Nothing is written: the log is
    /// empty, and while another connection has the file open (a service started meanwhile)
    /// SQLite leaves both as they are. On read-only media the connection only reads.
    fn drop(&mut self) {
        let Some(path) = self.0.take() else { return };
        if std::fs::metadata(beside(&path, "-wal")).map_or(true, |m| m.len() != 0) {
            return;
        }
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if let Ok(conn) = Connection::open_with_flags(&path, flags) {
            let _ = conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()));
        }
    }
}

/// Whether SQLite failed as it does when it cannot make a WAL-mode file's shared-memory
/// index: `SQLITE_CANTOPEN` on read-only media, `SQLITE_READONLY` in a folder the user may
/// not write.
fn cannot_make_index(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
    )
}

/// Why the ledger at `path` could not be opened for reading, as an operator can act on it.
pub(super) fn reading_failed(path: &Path, e: &rusqlite::Error) -> String {
    if cannot_make_index(e) && path.is_file() {
        format!(
            "{e}: SQLite could not make its shared-memory index ({}) beside the ledger, which \
             it needs to read a write-ahead log; on read-only media, copy the ledger with its \
             -wal file to a writable folder and read the copy",
            beside(path, "-shm").display()
        )
    } else {
        e.to_string()
    }
}

/// `path` with `suffix` added to its file name (`-wal`, `-shm`).
pub(super) fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// `path` as the path of a `file:` URI: the characters a URI gives a meaning escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

fn configure(conn: Connection) -> rusqlite::Result<Connection> {
    conn.pragma_update(None, "busy_timeout", BUSY_TIMEOUT_MS)?;
    wal_mode(&conn)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    tune(conn)
}

/// Turns on WAL. On a new file that takes it whole for a moment, and SQLite answers a second
/// connection doing the same at that moment "database is locked" at once, without waiting
/// (its busy handler is not called there): two processes started together on a new ledger
/// made one of them fail to start. So a busy answer is tried again for up to the busy timeout.
fn wal_mode(conn: &Connection) -> rusqlite::Result<()> {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(BUSY_TIMEOUT_MS as u64);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            done => return done,
        }
    }
}

/// What every connection sets, reading or writing.
fn tune(conn: Connection) -> rusqlite::Result<Connection> {
    conn.pragma_update(None, "busy_timeout", BUSY_TIMEOUT_MS)?;
    // 64 MiB of page cache: the chain indexes' hot pages stay in memory between reads (the
    // writer then sets a smaller one of its own).
    conn.pragma_update(None, "cache_size", -65536)?;
    // A cached statement keeps its plan whatever is bound to it: without this, SQLite re-plans
    // a statement at each new binding of a parameter the planner looked at (the tenant id, a
    // LIMIT), and a governor start or a page read paid for parsing its SQL again.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

impl SqliteStore {
    /// Every chain verified in one read of the table, front to back (`verify --all`): the
    /// reports by tenant, or `None` where only chain by chain can tell (see `verify_all_rows`).
    /// Holds a few hundred bytes per tenant.
    pub async fn verify_all(
        &self,
        anchors: HashMap<String, Anchor>,
        progress: impl FnMut(u64) + Send + 'static,
    ) -> Result<Option<HashMap<String, VerifyReport>>, StoreError> {
        self.read(move |c| verify_all_rows(c, &anchors, SCAN_CHUNK, progress))
            .await
    }

    /// Opens (creating if needed) the ledger file at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let mut conn = open_writer(path).map_err(|e| {
            let hint = match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly) => {
                    ": the service writes the ledger and, beside it, its -wal and -shm files, \
                     so the file and its folder must be writable (to only read a ledger, run \
                     `verify`)"
                }
                _ => "",
            };
            unavailable(format!("opening {}: {e}{hint}", path.display()))
        })?;
        migrate(&mut conn)
            .map_err(|e| unavailable(format!("migrating {}: {e}", path.display())))?;
        // Checkpoints move WAL pages into the database file. Done inside a commit they hold up
        // the writer (and every caller waiting on it), so the writer never checkpoints: a thread
        // of the store's own does, without blocking writers (PASSIVE).
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(sql_error)?;
        // A smaller page cache for the writer than for the readers: at the end of every write
        // transaction SQLite truncates the cache, and that walks the cache's hash table, so its
        // cost grows with the cache. With 64 MiB it was 5.4 % of the service's CPU at the
        // maximum signal rate; with 4 MiB 0.8 %, and appends at 256 producers were no slower.
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(sql_error)?;
        let files = opened_files(path)?;
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            writer: Mutex::new(Some(conn)),
            readers: Mutex::new(Vec::new()),
            snapshots: Mutex::new(SnapshotQueue::default()),
            wal_frames: AtomicU64::new(0),
            read_only: false,
            files,
            displaced: AtomicBool::new(false),
            checkpointer: Mutex::new(None),
            closed: AtomicBool::new(false),
            tidy: Mutex::new(None),
        });
        *inner.checkpointer.lock().unwrap_or_else(|e| e.into_inner()) =
            spawn_checkpointer(Arc::downgrade(&inner), path);
        Ok(SqliteStore { inner })
    }

    /// Opens the ledger file at `path` for reading only (`verify`, and a backup's copy): nothing
    /// is created, migrated, checkpointed or written, and an append fails. The index and empty
    /// log that its reading makes beside a ledger that had no log are removed when it closes
    /// (`Tidy`). Any schema this build knows is read: the receipts' columns are those of
    /// version 1, and later migrations only add indexes.
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        let tidy = Tidy::before_reading(path);
        let conn = open_read_only(path).map_err(|e| {
            unavailable(format!(
                "opening {}: {}",
                path.display(),
                reading_failed(path, &e)
            ))
        })?;
        let version: Option<u32> = conn
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .map_err(|e| {
                unavailable(format!(
                    "reading {}: {}",
                    path.display(),
                    reading_failed(path, &e)
                ))
            })?;
        let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
        if !version.is_some_and(|v| (1..=latest).contains(&v)) {
            return Err(unavailable(format!(
                "{} has schema version {}, and this build reads 1 to {latest}",
                path.display(),
                version.map_or("none".to_owned(), |v| v.to_string())
            )));
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(Some(conn)),
                readers: Mutex::new(Vec::new()),
                snapshots: Mutex::new(SnapshotQueue::default()),
                wal_frames: AtomicU64::new(0),
                read_only: true,
                files: Vec::new(),
                displaced: AtomicBool::new(false),
                checkpointer: Mutex::new(None),
                closed: AtomicBool::new(false),
                tidy: Mutex::new(Some(tidy)),
            }),
        })
    }

    /// Copies the whole write-ahead log into the ledger file and empties it (`TRUNCATE`), on
    /// the writer's connection, once appends have stopped, logged either way; then closes the
    /// store (`Inner::close`), which leaves the file alone when no other process has it open.
    pub async fn close_at_stop(&self) {
        if self.inner.read_only {
            return;
        }
        let inner = self.inner.clone();
        let done = actix_web::rt::task::spawn_blocking(move || {
            let checkpointed = {
                let guard = inner.writer();
                let conn = guard.as_ref().ok_or_else(closed)?;
                // It holds the write lock while it waits for readers: another process on the
                // file (a second service, `mcp-stdio`) is held up half a second at most, not
                // the busy timeout's five.
                conn.busy_timeout(std::time::Duration::from_millis(500))
                    .and_then(|()| {
                        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                        })
                    })
                    .map_err(sql_error)
            };
            inner.close();
            checkpointed
        })
        .await;
        let path = self.inner.path.display();
        match done {
            Ok(Ok((0, _))) => {
                tracing::info!(path = %path, "ledger checkpointed: the file holds every receipt")
            }
            Ok(Ok((_, frames))) => {
                tracing::warn!(path = %path, frames, "the ledger's last checkpoint was held up by a reader; its write-ahead log keeps receipts (copy the -wal file with the ledger)")
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %path, error = %e, "the ledger's last checkpoint failed; its write-ahead log keeps receipts (copy the -wal file with the ledger)")
            }
            Err(e) => tracing::warn!(error = %e, "the ledger's last checkpoint did not run"),
        }
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema version in the file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let guard = self.inner.writer();
        let conn = guard.as_ref().ok_or_else(closed)?;
        conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .map_err(sql_error)
    }

    /// Runs `f` on a read connection in the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        actix_web::rt::task::spawn_blocking(move || {
            let conn = match inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
            {
                Some(c) => c,
                None => inner.connect()?,
            };
            let out = f(&conn);
            inner.give_back(conn);
            out
        })
        .await
        .map_err(unavailable)?
    }
}

/// Answers queued governor snapshots until the queue is empty (run in the blocking pool).
fn drain_snapshots(inner: &Inner) {
    /// A panic drops the waiting callers (who get an error) and lets the next caller start a
    /// new drain.
    struct Done<'a>(&'a Inner);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let mut q = self.0.snapshots.lock().unwrap_or_else(|e| e.into_inner());
                q.waiting.clear();
                q.draining = false;
            }
        }
    }
    let conn = inner
        .readers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .map_or_else(|| inner.connect(), Ok);
    let done = Done(inner);
    loop {
        let batch = {
            let mut q = inner.snapshots.lock().unwrap_or_else(|e| e.into_inner());
            if q.waiting.is_empty() {
                // Still under the lock: a caller that queues after this sees `draining`
                // false and starts the next drain.
                q.draining = false;
                break;
            }
            std::mem::take(&mut q.waiting)
        };
        // One read transaction for the batch: its look-ups share one WAL snapshot and lock.
        let txn = conn.as_ref().map(|c| c.execute_batch("BEGIN"));
        for (tenant, states, reply) in batch {
            let answer = match &conn {
                Ok(c) => snapshot(c, &tenant, states),
                Err(e) => Err(e.clone()),
            };
            let _ = reply.send(answer);
        }
        if let (Ok(c), Ok(Ok(()))) = (&conn, txn) {
            let _ = c.execute_batch("COMMIT");
        }
    }
    drop(done);
    if let Ok(c) = conn {
        inner.give_back(c);
    }
}

/// The tenant's entitlement record.
fn entitlement_of(c: &Connection, tenant: &str) -> Result<Option<Value>, StoreError> {
    let record: Option<String> = c
        .prepare_cached("SELECT record FROM entitlements WHERE tenant_id = ?1")
        .and_then(|mut s| s.query_row(params![tenant], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    record
        .map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(format!("entitlement of {tenant}: {e}")))
        })
        .transpose()
}

/// The tenant's chain head.
fn head_of(c: &Connection, tenant: &str) -> Result<Option<Head>, StoreError> {
    c.prepare_cached(
        "SELECT seq, receipt_hash FROM receipts WHERE tenant_id = ?1 ORDER BY seq DESC LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![tenant], |r| {
            Ok(Head {
                seq: r.get::<_, i64>(0)? as u64,
                hash: r.get(1)?,
            })
        })
        .optional()
    })
    .map_err(sql_error)
}

/// One tenant's governor snapshot: two index look-ups, and a third for a tenant with a chain.
fn snapshot(c: &Connection, tenant: &str, states: &[&str]) -> Result<GovernorSnapshot, StoreError> {
    let entitlement = entitlement_of(c, tenant)?;
    let head = head_of(c, tenant)?;
    let last_state = match head {
        None => None,
        Some(_) => {
            let marks = vec!["?"; states.len()].join(", ");
            let sql = format!("SELECT {COLUMNS} FROM receipts WHERE tenant_id = ? AND type != 'entitlement' AND state_to IN ({marks}) ORDER BY seq DESC LIMIT 1");
            let args = std::iter::once(tenant).chain(states.iter().copied());
            c.prepare_cached(&sql)
                .and_then(|mut s| {
                    s.query_row(rusqlite::params_from_iter(args), row_to_receipt)
                        .optional()
                })
                .map_err(sql_error)?
                .transpose()?
        }
    };
    Ok(GovernorSnapshot {
        entitlement,
        head,
        last_state,
    })
}

/// Checkpoints the WAL every 100 ms while the store is open. Closing the store wakes it from
/// its pause and waits for its last pass ([`Inner::close`]). Its connection and its handle on
/// the file are opened here, with the writer's, not when the thread first runs: files displaced
/// before that (the thread may start late on a busy machine) could no longer be opened, and
/// their receipts would not be copied out.
fn spawn_checkpointer(
    inner: std::sync::Weak<Inner>,
    path: &Path,
) -> Option<std::thread::JoinHandle<()>> {
    let conn = open(path)
        .inspect_err(
            |e| tracing::warn!(error = %e, "could not open the ledger checkpoint connection"),
        )
        .ok()?;
    let database = std::fs::File::open(path);
    let path = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("ledger-checkpoint".into())
        .spawn(move || {
            // (frames in the WAL, frames copied back into the database)
            let pass = || {
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
            };
            let mut pause = std::time::Duration::from_millis(100);
            let mut rescued = false;
            // A full disk fails every pass, ten a second: one line a second.
            let failures = crate::telemetry::budget::LogBudget::new();
            // Until the store is closed or dropped.
            let going = || inner.upgrade().is_some_and(|i| !i.closed.load(Ordering::Acquire));
            while going() {
                // Parked rather than asleep, so that closing the store ends the pause; a
                // wake-up with the store still open (a spurious one) is a pass early.
                std::thread::park_timeout(pause);
                if !going() {
                    break;
                }
                // Checked here too, so that an idle ledger's displacement is found and its
                // copy written before anything asks.
                if !rescued && inner.upgrade().is_some_and(|i| i.check_files().is_err()) {
                    rescued = true;
                    rescue(&conn, &path);
                }
                let mut result = pass();
                // Whether the writer was told already (it resets the count after its pass).
                let told = inner.upgrade().is_some_and(|i| {
                    i.wal_frames.load(Ordering::Relaxed) >= WAL_RESTART_FRAMES
                });
                if let (Ok((frames, _)), Ok(file), false) = (&result, &database, told) {
                    if *frames as u64 >= WAL_RESTART_FRAMES {
                        // The writer's pass is due: make the copied pages durable here, and
                        // copy what came meanwhile, so that pass has little left to do.
                        if let Err(e) = file.sync_all() {
                            tracing::warn!(error = %e, "ledger checkpoint could not sync the database file");
                        }
                        result = pass();
                    }
                }
                match result {
                    Ok((frames, copied)) => {
                        if let Some(i) = inner.upgrade() {
                            i.wal_frames.store(frames.max(0) as u64, Ordering::Relaxed);
                        }
                        // Behind: go again soon, so the writer's own pass stays short.
                        pause = std::time::Duration::from_millis(if copied < frames {
                            10
                        } else {
                            100
                        });
                    }
                    Err(e) => {
                        if let Some(suppressed) = failures.admit_now() {
                            tracing::warn!(error = %e, suppressed, "ledger checkpoint failed; retrying");
                        }
                    }
                }
            }
            // Files displaced within the last pause before a stop closed the store: their copy
            // is written all the same (the store's handles are still there then; not after
            // its last one was dropped).
            if !rescued && inner.upgrade().is_some_and(|i| i.check_files().is_err()) {
                rescue(&conn, &path);
            }
            // A last full checkpoint so a cleanly stopped ledger leaves a small WAL. Whoever
            // drops the store waits for it: a reader in another process holds it up half a
            // second at most, as at the service's stop.
            let _ = conn.busy_timeout(std::time::Duration::from_millis(500));
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        });
    spawned
        .inspect_err(|e| tracing::warn!(error = %e, "could not start the ledger checkpoint thread"))
        .ok()
}

/// Writes what `conn` (the checkpoint thread's connection, opened with the writer's) reads,
/// every receipt acknowledged, to a new file `<path>.rescued-<unix ms>` once the files at `path`
/// are found deleted or replaced ([`Inner::check_files`]), so that nothing acknowledged is lost
/// when the process ends. The folder is made again if it was removed.
fn rescue(conn: &Connection, path: &Path) {
    let copy = PathBuf::from(format!(
        "{}.rescued-{}",
        path.display(),
        crate::clock::now_ms()
    ));
    if let Some(dir) = copy.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    match super::backup::copy_into(conn, path, &copy) {
        Ok(bytes) => tracing::error!(
            copy = %copy.display(),
            bytes,
            "the ledger as this process had it, every acknowledged receipt, was copied: stop \
             the service, move the copy to the ledger's path (or point TAI_LEDGER__SQLITE_PATH \
             at it) and start it again"
        ),
        Err(e) => tracing::error!(
            error = %e,
            pid = std::process::id(),
            "the ledger could not be copied; while this process runs, its files as opened can \
             still be read from /proc/<pid>/fd"
        ),
    }
}

/// Applies the migrations the file lacks. A file whose schema is newer than this build's (a
/// later release wrote it, and this one was rolled back onto it) is refused, not written with
/// rows or triggers that build does not know about.
fn migrate(conn: &mut Connection) -> Result<(), String> {
    let sql = |e: rusqlite::Error| e.to_string();
    // One write transaction, begun with the write lock, around reading the version and applying
    // what it lacks: a second process opening the file at the same moment waits, then finds
    // every migration applied (two deferred reads of version 0 made the second one fail with
    // "table receipts already exists"). Nothing of a failed migration stays.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)").map_err(sql)?;
    let current: u32 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(sql)?;
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > latest {
        return Err(format!(
            "the file has schema version {current}, newer than this build's {latest}: a later \
             release wrote it; run that release or a newer one on it"
        ));
    }
    for (version, text) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(text).map_err(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, crate::clock::now_rfc3339()],
        )
        .map_err(sql)?;
    }
    tx.commit().map_err(sql)
}

/// [`LedgerStore::verify_page`]'s reading: the page's rows fed to `verifier` as they are read.
fn verify_rows(
    c: &Connection,
    tenant: &str,
    after_seq: u64,
    limit: usize,
    verifier: &mut Verifier,
    read: &mut PageRead,
) -> Result<(), StoreError> {
    let mut s = c.prepare_cached(&page_sql()).map_err(sql_error)?;
    let mut rows = s
        .query(params![tenant, seq_bound(after_seq), limit as i64])
        .map_err(sql_error)?;
    let mut r = Receipt::empty();
    while let Some(row) = rows.next().map_err(sql_error)? {
        // The metadata is canonicalised from its stored text, without a tree; text the fast
        // path leaves alone is parsed as every read parses it.
        let metadata = refill_columns(row, &mut r)?;
        let fed = match read.feed_text(verifier, &r, metadata) {
            Some(ok) => ok,
            None => {
                r.metadata = parse_metadata(&r, metadata)?;
                read.feed(verifier, &r)
            }
        };
        if !fed {
            break;
        }
    }
    Ok(())
}

/// Rows read by one statement of [`verify_all_rows`].
const SCAN_CHUNK: u64 = 65_536;

/// Every chain of the ledger verified in one read of the table in row order, each against its
/// anchor in `anchors`, with `progress` told the rows read after each `chunk` of rows.
/// A chain's rows follow one another in seq order, since they are appended in chain order; the
/// file is read once, front to back, where reading chain by chain reads a page of the file for
/// nearly every receipt (the rows of all tenants are interleaved in commit order).
///
/// Each chunk is a statement of its own, so a read transaction of its own: one read across a
/// large file would keep a running service's write-ahead log from starting over for as long as
/// it lasts, and the log would grow by everything appended meanwhile. Rows are only ever
/// appended, with row ids that grow, so the chunks together read every row once; rows appended
/// while they are read are read too, after the rows before them.
///
/// `None` when a row cannot be read back (damage): only chain by chain says where. A report
/// that is not valid is not the last word either: a row written again out of its place (the
/// same receipt deleted and inserted) breaks the order here but not the chain. The caller
/// verifies such a chain by itself ([`super::verify_chain`]).
fn verify_all_rows(
    c: &Connection,
    anchors: &HashMap<String, Anchor>,
    chunk: u64,
    mut progress: impl FnMut(u64),
) -> Result<Option<HashMap<String, VerifyReport>>, StoreError> {
    let mut s = c
        .prepare(&format!(
            "SELECT {COLUMNS}, rowid FROM receipts WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
        ))
        .map_err(sql_error)?;
    let mut chains: HashMap<String, Verifier> = HashMap::new();
    let mut scratch = String::with_capacity(1024);
    let mut r = Receipt::empty();
    let (mut read, mut after) = (0u64, i64::MIN);
    loop {
        let mut rows = s.query(params![after, chunk as i64]).map_err(sql_error)?;
        let mut in_chunk = 0;
        loop {
            let row = match rows.next() {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => match sql_error(e) {
                    StoreError::Corrupt(_) => return Ok(None),
                    other => return Err(other),
                },
            };
            let (Ok(metadata), Ok(rowid)) = (refill_columns(row, &mut r), row.get::<_, i64>(13))
            else {
                return Ok(None);
            };
            after = rowid;
            in_chunk += 1;
            if !chains.contains_key(&r.tenant_id) {
                let v = Verifier::new(r.tenant_id.as_str())
                    .with_anchor(anchors.get(&r.tenant_id).cloned())
                    .without_scratch();
                chains.insert(r.tenant_id.clone(), v);
            }
            let v = chains.get_mut(&r.tenant_id).expect("inserted above");
            if !v.is_broken() {
                v.swap_scratch(&mut scratch);
                let fed = match v.feed_text(&r, metadata) {
                    Some(_) => Ok(()),
                    None => parse_metadata(&r, metadata).map(|m| {
                        r.metadata = m;
                        v.feed(&r);
                    }),
                };
                v.swap_scratch(&mut scratch);
                if fed.is_err() {
                    return Ok(None);
                }
            }
        }
        read += in_chunk;
        if in_chunk > 0 {
            progress(read);
        }
        if in_chunk < chunk {
            break;
        }
    }
    Ok(Some(
        chains
            .into_iter()
            .map(|(t, v)| (t, v.finish(None)))
            .collect(),
    ))
}

/// A row of `SELECT {COLUMNS}` as a receipt (the outer error is SQLite's, for `query_map`).
fn row_to_receipt(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Receipt, StoreError>> {
    let mut r = Receipt::empty();
    Ok(refill(row, &mut r).map(|()| r))
}

/// Refills `r` from a row of `SELECT {COLUMNS}`, reusing its strings (a verifier reads a
/// whole chain through one receipt).
fn refill(row: &rusqlite::Row<'_>, r: &mut Receipt) -> Result<(), StoreError> {
    let metadata = refill_columns(row, r)?;
    r.metadata = parse_metadata(r, metadata)?;
    Ok(())
}

fn parse_metadata(r: &Receipt, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Corrupt(format!(
            "receipt {}: metadata is not JSON: {e}",
            r.receipt_id
        ))
    })
}

/// Refills every member of `r` but its metadata, and returns the metadata's stored text.
fn refill_columns<'a>(row: &'a rusqlite::Row<'_>, r: &mut Receipt) -> Result<&'a str, StoreError> {
    fn text<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> Result<Option<&'a str>, StoreError> {
        row.get_ref(i)
            .map_err(sql_error)?
            .as_str_or_null()
            .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
    }
    fn set(row: &rusqlite::Row<'_>, i: usize, dst: &mut String) -> Result<(), StoreError> {
        dst.clear();
        dst.push_str(text(row, i)?.unwrap_or_default());
        Ok(())
    }
    fn set_opt(
        row: &rusqlite::Row<'_>,
        i: usize,
        dst: &mut Option<String>,
    ) -> Result<(), StoreError> {
        match (text(row, i)?, dst) {
            (None, d) => *d = None,
            (Some(s), Some(d)) => {
                d.clear();
                d.push_str(s);
            }
            (Some(s), d) => *d = Some(s.to_owned()),
        }
        Ok(())
    }
    set(row, 0, &mut r.receipt_id)?;
    set(row, 1, &mut r.tenant_id)?;
    r.seq = row.get::<_, i64>(2).map_err(sql_error)? as u64;
    let kind = text(row, 3)?.unwrap_or_default();
    r.kind = ReceiptType::parse(kind).ok_or_else(|| {
        StoreError::Corrupt(format!("receipt {}: unknown type {kind:?}", r.receipt_id))
    })?;
    set(row, 4, &mut r.event_type)?;
    set_opt(row, 5, &mut r.state_from)?;
    set_opt(row, 6, &mut r.state_to)?;
    set(row, 7, &mut r.reason)?;
    let metadata = text(row, 8)?.unwrap_or_default();
    set(row, 9, &mut r.node)?;
    set(row, 10, &mut r.timestamp)?;
    set(row, 11, &mut r.prev_hash)?;
    set(row, 12, &mut r.receipt_hash)?;
    Ok(metadata)
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// Binds receipt `r` to the insert (parameters in [`COLUMNS`] order). Bindings outlive a
/// statement's reset, so a member equal to the previous row's (`prev`) keeps its binding: node,
/// type, event type, states and often tenant, reason and timestamp repeat within a batch, and
/// each text bound is a copy SQLite makes (binding was about 14 % of the commit thread).
fn bind_receipt(
    insert: &mut rusqlite::Statement<'_>,
    r: &Receipt,
    prev: Option<&Receipt>,
    metadata: &str,
) -> rusqlite::Result<()> {
    let changed = |member: fn(&Receipt) -> &str| prev.is_none_or(|p| member(p) != member(r));
    let changed_opt =
        |member: fn(&Receipt) -> &Option<String>| prev.is_none_or(|p| member(p) != member(r));
    insert.raw_bind_parameter(1, &r.receipt_id)?;
    if changed(|x| &x.tenant_id) {
        insert.raw_bind_parameter(2, &r.tenant_id)?;
    }
    insert.raw_bind_parameter(3, r.seq as i64)?;
    if changed(|x| x.kind.as_str()) {
        insert.raw_bind_parameter(4, r.kind.as_str())?;
    }
    if changed(|x| &x.event_type) {
        insert.raw_bind_parameter(5, &r.event_type)?;
    }
    if changed_opt(|x| &x.state_from) {
        insert.raw_bind_parameter(6, &r.state_from)?;
    }
    if changed_opt(|x| &x.state_to) {
        insert.raw_bind_parameter(7, &r.state_to)?;
    }
    if changed(|x| &x.reason) {
        insert.raw_bind_parameter(8, &r.reason)?;
    }
    insert.raw_bind_parameter(9, metadata)?;
    if changed(|x| &x.node) {
        insert.raw_bind_parameter(10, &r.node)?;
    }
    if changed(|x| &x.timestamp) {
        insert.raw_bind_parameter(11, &r.timestamp)?;
    }
    insert.raw_bind_parameter(12, &r.prev_hash)?;
    insert.raw_bind_parameter(13, &r.receipt_hash)
}

fn append_blocking(conn: &mut Connection, batch: &[AppendItem]) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(sql_error)?;
    {
        let mut insert = tx.prepare_cached(&format!("INSERT INTO receipts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)")).map_err(sql_error)?;
        let mut message = tx
            .prepare_cached("INSERT INTO pubsub_messages (message_id, receipt_id) VALUES (?1, ?2)")
            .map_err(sql_error)?;
        let mut entitlement = tx.prepare_cached("INSERT INTO entitlements (tenant_id, record) VALUES (?1, ?2) ON CONFLICT (tenant_id) DO UPDATE SET record = excluded.record").map_err(sql_error)?;
        let mut prev: Option<&Receipt> = None;
        for item in batch {
            let r = &item.receipt;
            let metadata = item.metadata_text()?;
            bind_receipt(&mut insert, r, prev, &metadata).map_err(sql_error)?;
            prev = Some(r);
            insert.raw_execute().map_err(|e| {
                if is_constraint(&e) && e.to_string().contains("receipts.seq") {
                    StoreError::Conflict(format!(
                        "seq {} of tenant {} is taken: another writer appended to the chain first",
                        r.seq, r.tenant_id
                    ))
                } else if is_constraint(&e) {
                    StoreError::Conflict(format!(
                        "receipt id {} is in the ledger already",
                        r.receipt_id
                    ))
                } else {
                    sql_error(e)
                }
            })?;
            if let Some(id) = &item.message_id {
                message.execute(params![id, r.receipt_id]).map_err(|e| {
                    if is_constraint(&e) {
                        StoreError::Conflict(format!("message {id} already has a receipt"))
                    } else {
                        sql_error(e)
                    }
                })?;
            }
            if let Some(record) = &item.entitlement {
                entitlement
                    .execute(params![r.tenant_id, record.to_string()])
                    .map_err(sql_error)?;
            }
        }
    }
    // With synchronous=FULL the commit returns only once the WAL is on disk.
    tx.commit().map_err(sql_error)
}

/// Commits `batch` on the write connection; past `WAL_RESTART_FRAMES` (once the checkpoint
/// thread has made its copy durable) the writer then copies the rest itself, so that the next
/// commit writes the WAL from its start.
fn commit_on(inner: &Inner, conn: &mut Connection, batch: &[AppendItem]) -> Result<(), StoreError> {
    inner.check_files()?;
    append_blocking(conn, batch)?;
    if inner.wal_frames.load(Ordering::Relaxed) >= WAL_RESTART_FRAMES {
        inner.wal_frames.store(0, Ordering::Relaxed);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "ledger checkpoint by the writer failed");
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Commits `batch`, hands the outcome to `then`, and commits whatever batch `then` returns
    /// next, on the same blocking thread, until it returns `None`. The group-commit writer uses
    /// this to start the next commit as soon as one ends, without a round trip through its
    /// actor (which took about 0.37 ms per commit at 256 producers). Every batch is its own
    /// transaction, all-or-nothing as with [`LedgerStore::append`].
    pub async fn append_chained<F>(
        &self,
        mut batch: Vec<AppendItem>,
        mut then: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(Result<Vec<AppendItem>, StoreError>) -> Option<Vec<AppendItem>> + Send + 'static,
    {
        let inner = self.inner.clone();
        actix_web::rt::task::spawn_blocking(move || {
            let mut guard = inner.writer();
            loop {
                let outcome = match guard.as_mut() {
                    Some(conn) => commit_on(&inner, conn, &batch).map(|()| batch),
                    None => Err(closed()),
                };
                match then(outcome) {
                    Some(next) => batch = next,
                    None => return,
                }
            }
        })
        .await
        .map_err(unavailable)
    }
}

impl LedgerStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn append(&self, batch: Vec<AppendItem>) -> Result<Vec<AppendItem>, StoreError> {
        let inner = self.inner.clone();
        actix_web::rt::task::spawn_blocking(move || {
            let mut guard = inner.writer();
            let conn = guard.as_mut().ok_or_else(closed)?;
            commit_on(&inner, conn, &batch).map(|()| batch)
        })
        .await
        .map_err(unavailable)?
    }

    async fn head(&self, tenant: &str) -> Result<Option<Head>, StoreError> {
        let tenant = tenant.to_owned();
        self.read(move |c| head_of(c, &tenant)).await
    }

    async fn range(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Receipt>, StoreError> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            let mut s = c.prepare_cached(&page_sql()).map_err(sql_error)?;
            let rows = s
                .query_map(
                    params![tenant, seq_bound(after_seq), limit as i64],
                    row_to_receipt,
                )
                .map_err(sql_error)?;
            rows.map(|r| r.map_err(sql_error).and_then(|x| x)).collect()
        })
        .await
    }

    async fn verify_page(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
        mut verifier: Verifier,
    ) -> Result<(Verifier, PageRead), StoreError> {
        // Verified where it is read: no page is collected, and one receipt's strings are reused
        // for every row (allocation and freeing stay on the reading thread).
        let tenant = tenant.to_owned();
        self.read(move |c| {
            let mut read = PageRead::default();
            // A row that cannot be read back (a damaged page, a value no receipt has) breaks
            // the chain at its seq; the rows before it were verified.
            if let Err(e) = verify_rows(c, &tenant, after_seq, limit, &mut verifier, &mut read) {
                read.unreadable(&mut verifier, e)?;
            }
            Ok((verifier, read))
        })
        .await
    }

    async fn governor_snapshot(
        &self,
        tenant: &str,
        states: &'static [&'static str],
    ) -> Result<GovernorSnapshot, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut q = self
                .inner
                .snapshots
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            q.waiting.push((tenant.to_owned(), states, tx));
            !std::mem::replace(&mut q.draining, true)
        };
        if start {
            let inner = self.inner.clone();
            drop(actix_web::rt::task::spawn_blocking(move || {
                drain_snapshots(&inner)
            }));
        }
        rx.await
            .map_err(|_| unavailable("the snapshot reader stopped before answering"))?
    }

    async fn get(&self, receipt_id: &str) -> Result<Option<Receipt>, StoreError> {
        let id = receipt_id.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM receipts WHERE receipt_id = ?1"
                ))
                .map_err(sql_error)?;
            s.query_row(params![id], row_to_receipt)
                .optional()
                .map_err(sql_error)?
                .transpose()
        })
        .await
    }

    async fn by_message_id(&self, message_id: &str) -> Result<Option<Receipt>, StoreError> {
        let id = message_id.to_owned();
        self.read(move |c| {
            let mut s = c.prepare_cached(by_message_sql()).map_err(sql_error)?;
            s.query_row(params![id], row_to_receipt)
                .optional()
                .map_err(sql_error)?
                .transpose()
        })
        .await
    }

    async fn by_message_ids(
        &self,
        message_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Receipt>, StoreError> {
        if message_ids.is_empty() {
            return Ok(Default::default());
        }
        let ids = message_ids.to_vec();
        self.read(move |c| {
            let mut s = c.prepare_cached(by_message_sql()).map_err(sql_error)?;
            let mut found = std::collections::HashMap::new();
            for id in ids {
                if let Some(r) = s
                    .query_row(params![id], row_to_receipt)
                    .optional()
                    .map_err(sql_error)?
                    .transpose()?
                {
                    found.insert(id, r);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn tenants(&self, after: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = after.to_owned();
        self.read(move |c| {
            let mut s = c.prepare_cached(TENANTS_SQL).map_err(sql_error)?;
            let rows = s
                .query_map(params![after, limit as i64], |r| r.get::<_, String>(0))
                .map_err(sql_error)?;
            rows.map(|r| r.map_err(sql_error)).collect()
        })
        .await
    }

    async fn open_actions(&self, limit: usize) -> Result<Vec<OpenAction>, StoreError> {
        self.read(move |c| {
            let sql = open_actions_sql();
            let mut s = c.prepare(sql).map_err(sql_error)?;
            let rows = s
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(sql_error)?;
            let mut open = Vec::new();
            for row in rows {
                let (tenant_id, started_at) = row.map_err(sql_error)?;
                {
                    open.push(OpenAction {
                        tenant_id,
                        started_at,
                    });
                    if open.len() == limit {
                        break;
                    }
                }
            }
            Ok(open)
        })
        .await
    }

    async fn entitlement(&self, tenant: &str) -> Result<Option<Value>, StoreError> {
        let tenant = tenant.to_owned();
        self.read(move |c| entitlement_of(c, &tenant)).await
    }

    async fn head_and_entitlement(
        &self,
        tenant: &str,
    ) -> Result<(Option<Head>, Option<Value>), StoreError> {
        let tenant = tenant.to_owned();
        // One trip to the blocking pool, one read transaction.
        self.read(move |c| {
            let tx = c.unchecked_transaction().map_err(sql_error)?;
            let both = (head_of(&tx, &tenant)?, entitlement_of(&tx, &tenant)?);
            tx.finish().map_err(sql_error)?;
            Ok(both)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.read(move |c| {
            inner.check_files()?;
            c.query_row("SELECT 1", [], |_| Ok(())).map_err(sql_error)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_escaped_where_a_uri_gives_its_characters_a_meaning() {
        let path = Path::new("/srv/led?ger#1/100%.db");
        assert_eq!(uri_path(path), "/srv/led%3fger%231/100%25.db");
        assert_eq!(
            beside(path, "-wal"),
            PathBuf::from("/srv/led?ger#1/100%.db-wal")
        );
    }

    #[test]
    fn the_action_index_names_exactly_the_action_events() {
        let listed = action_events_sql!();
        let inner = &listed[1..listed.len() - 1];
        let names: Vec<&str> = (inner.split(" OR "))
            .map(|n| n.trim_start_matches("event_type = ").trim_matches('\''))
            .collect();
        assert_eq!(names, super::super::store::ACTION_EVENTS);
    }

    #[test]
    fn a_version_1_ledger_gets_the_action_index_over_the_rows_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("v1.db")).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)").unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        conn.execute("INSERT INTO schema_migrations VALUES (1, 'then')", [])
            .unwrap();
        let row = |seq: i64, event: &str| {
            format!("INSERT INTO receipts ({COLUMNS}) VALUES ('id-{seq}', 't', {seq}, 'transition', '{event}', NULL, NULL, '', '{{}}', 'n', 'ts', 'p', 'h')")
        };
        conn.execute_batch(&(row(1, "signal_warning") + ";" + &row(2, "action_started")))
            .unwrap();

        migrate(&mut conn).unwrap();

        let version: u32 = conn
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .unwrap();
        let indexed: i64 = conn
            .query_row(
                concat!(
                    "SELECT COUNT(*) FROM receipts INDEXED BY receipts_actions WHERE ",
                    action_events_sql!()
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((version, indexed), (2, 1));
    }

    #[test]
    fn a_page_of_tenants_costs_a_seek_per_tenant_not_a_step_per_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("tenants.db")).unwrap();
        migrate(&mut conn).unwrap();
        // 30 tenants: 10 with one receipt, then 20 with 300.
        conn.execute_batch("BEGIN").unwrap();
        let mut insert = conn
            .prepare(&format!(
                "INSERT INTO receipts ({COLUMNS}) VALUES (?1, ?2, ?3, 'transition', 'signal_processed', NULL, NULL, '', '{{}}', 'n', 'ts', 'p', 'h')"
            ))
            .unwrap();
        for t in 0..30 {
            let receipts = if t < 10 { 1 } else { 300 };
            for seq in 1..=receipts {
                let tenant = format!("t{t:02}");
                insert
                    .execute(params![format!("{tenant}-{seq}"), tenant, seq])
                    .unwrap();
            }
        }
        drop(insert);
        conn.execute_batch("COMMIT").unwrap();
        // The page's tenants, and the VM steps it took (`SQLITE_STMTSTATUS_VM_STEP`).
        let page = |after: &str, limit: i64| {
            let mut s = conn.prepare(TENANTS_SQL).unwrap();
            let ids: Vec<String> = (s.query_map(params![after, limit], |r| r.get(0)).unwrap())
                .map(Result::unwrap)
                .collect();
            (ids, s.get_status(rusqlite::StatementStatus::VmStep))
        };
        let (short, short_steps) = page("", 10);
        let (long, long_steps) = page("t09", 10);
        let names = |r: std::ops::Range<i32>| r.map(|t| format!("t{t:02}")).collect::<Vec<_>>();
        assert_eq!((short, long), (names(0..10), names(10..20)));
        // Ten tenants of 300 receipts each cost what ten of one receipt cost (the DISTINCT
        // scan took 18,158 steps against 218).
        assert!(
            long_steps <= short_steps + 50,
            "{long_steps} steps against {short_steps}"
        );
        assert_eq!(page("t25", 10).0, names(26..30), "the last page is short");
        assert_eq!(page("t29", 10).0, Vec::<String>::new());
        assert_eq!(page("", 1).0, names(0..1));
    }

    /// The chunks of one read of every chain: each its own statement, rows appended between
    /// them read in their place.
    #[actix_web::test]
    async fn every_chain_is_read_in_chunks_and_rows_appended_meanwhile_are_read_too() {
        use crate::receipts::LedgerStore as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunks.db");
        let store = SqliteStore::open(&path).unwrap();
        let seal = |tenant: &str, prev: Option<&Receipt>| {
            super::super::ReceiptDraft::new(
                tenant,
                ReceiptType::Transition,
                "signal_processed",
                "r",
            )
            .seal(
                prev.map(|p| (p.seq, p.receipt_hash.as_str())),
                "n",
                crate::clock::now_rfc3339(),
            )
        };
        let mut last: HashMap<&str, Receipt> = HashMap::new();
        for _ in 0..10 {
            let mut batch = Vec::new();
            for t in ["a", "b"] {
                let r = seal(t, last.get(t));
                last.insert(t, r.clone());
                batch.push(super::super::AppendItem::receipt(r));
            }
            store.append(batch).await.unwrap();
        }
        // Between the first and the second chunk, another connection appends a's receipt 11.
        let other = Connection::open(&path).unwrap();
        let next = seal("a", last.get("a"));
        let mut told = Vec::new();
        let mut appended = false;
        let conn = Connection::open(&path).unwrap();
        let reports = verify_all_rows(&conn, &HashMap::new(), 7, |n| {
            told.push(n);
            if !appended {
                appended = true;
                let metadata = serde_json::to_string(&next.metadata).unwrap();
                other
                    .execute(
                        &format!("INSERT INTO receipts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
                        params![next.receipt_id, next.tenant_id, next.seq as i64, next.kind.as_str(), next.event_type, next.state_from, next.state_to, next.reason, metadata, next.node, next.timestamp, next.prev_hash, next.receipt_hash],
                    )
                    .unwrap();
            }
        })
        .unwrap()
        .expect("every row read");
        assert_eq!(told, vec![7, 14, 21]);
        let (a, b) = (&reports["a"], &reports["b"]);
        assert!(a.valid && b.valid, "{a:?} {b:?}");
        assert_eq!((a.head_seq, b.head_seq), (11, 10));
        assert_eq!(a.head_hash, next.receipt_hash);
    }

    #[test]
    fn open_actions_are_read_from_the_partial_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("plan.db")).unwrap();
        migrate(&mut conn).unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {}", open_actions_sql());
        let plan: Vec<String> = (conn.prepare(&sql).unwrap())
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.contains("COVERING INDEX receipts_actions")),
            "{plan:?}"
        );
        assert!(
            plan.iter().any(|p| p.contains("INDEX receipts_chain")),
            "{plan:?}"
        );
    }
}
