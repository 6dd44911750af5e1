//! A SQLite VFS that hands a write-ahead log's frames to the OS in a few large writes per sync.
//!
//! SQLite writes every WAL frame with two system calls: the 24-byte frame header, then the page.
//! A commit of a hundred pages is two hundred `pwrite`s, and each one looks up, locks and dirties
//! the file's cached pages by itself (a frame is 24 bytes longer than a page, so most frames
//! straddle two pages of the file). `walbuf` is a shim over the default VFS:
//!
//! - A file that is not a write-ahead log is opened by the default VFS itself, with the default
//!   VFS's own methods: nothing in between.
//! - A write-ahead log's writes that continue one another are held in memory, and go to the
//!   default VFS in writes of up to 128 KiB before anything that could observe the file: a
//!   sync, a read, a truncate, a size query, a file control, a close, or a write somewhere else.
//!
//! # When it is correct
//!
//! Other connections find a commit's frames through the wal-index header, which SQLite updates
//! after the commit's frames are written. With `synchronous = FULL` (or `EXTRA`) SQLite syncs the
//! log before it updates that header, and the sync writes out what is held here. With `NORMAL` or
//! `OFF` it does not sync at commit, so a reader could look for frames still held in this
//! process. **Open a connection through this VFS only with `synchronous = FULL` or `EXTRA`.**
//! Frames held when the process dies are frames of a commit that had not returned, the same as
//! frames that never left SQLite.
//!
//! ```
//! let vfs = walbuf::register().unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let conn = rusqlite::Connection::open_with_flags_and_vfs(
//!     dir.path().join("db"),
//!     rusqlite::OpenFlags::default(),
//!     vfs,
//! )
//! .unwrap();
//! conn.pragma_update(None, "journal_mode", "WAL").unwrap();
//! conn.pragma_update(None, "synchronous", "FULL").unwrap();
//! conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
//! ```

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

/// The name the VFS is registered under.
pub const NAME: &str = "walbuf";

const NAME_C: &CStr = c"walbuf";

/// Held bytes beyond which what is held goes to the file before more is taken (a commit of
/// 2,000 pages of 4 KiB).
const HOLD_LIMIT: usize = 8 << 20;

/// The most one write hands to the default VFS: the unix VFS writes at most 128 KiB − 1 bytes
/// per call (`seekAndWriteFd`), so a longer run goes in pieces that end on 4 KiB file
/// boundaries, each file page written by one piece only.
const MAX_WRITE: i64 = 0x1ffff;
const FILE_PAGE: i64 = 4096;

/// The VFS could not be registered; the SQLite result code says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("registering the walbuf SQLite VFS failed (SQLite code {0})")]
pub struct RegisterError(pub c_int);

/// What the VFS did with write-ahead log writes, over the whole process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Writes SQLite asked for.
    pub writes_taken: u64,
    /// Writes handed to the default VFS.
    pub writes_made: u64,
}

static WRITES_TAKEN: AtomicU64 = AtomicU64::new(0);
static WRITES_MADE: AtomicU64 = AtomicU64::new(0);

/// The counters so far.
pub fn counters() -> Counters {
    Counters {
        writes_taken: WRITES_TAKEN.load(Ordering::Relaxed),
        writes_made: WRITES_MADE.load(Ordering::Relaxed),
    }
}

/// Registers the VFS (once per process; later calls return the first result) and returns its
/// name, to pass to `sqlite3_open_v2` (rusqlite: `Connection::open_with_flags_and_vfs`). It is
/// not made the default VFS.
pub fn register() -> Result<&'static str, RegisterError> {
    static REGISTERED: OnceLock<Result<(), RegisterError>> = OnceLock::new();
    (*REGISTERED.get_or_init(register_once)).map(|()| NAME)
}

/// The default VFS when this one was registered: every call this one does not handle goes to it.
static PARENT: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

fn register_once() -> Result<(), RegisterError> {
    // SAFETY: `sqlite3_vfs_find` initialises SQLite if needed and returns the default VFS or
    // null. The copy is a plain struct of integers and pointers to static data and functions of
    // SQLite's; it is leaked, so it outlives every connection, as SQLite requires of a VFS.
    unsafe {
        let parent = ffi::sqlite3_vfs_find(ptr::null());
        if parent.is_null() {
            return Err(RegisterError(ffi::SQLITE_ERROR));
        }
        let mut vfs = ptr::read(parent);
        vfs.zName = NAME_C.as_ptr();
        vfs.pNext = ptr::null_mut();
        vfs.szOsFile = (*parent).szOsFile + WAL_FILE_HEADER as c_int;
        vfs.xOpen = Some(x_open);
        // Every other method is the parent's own, called with this VFS: they read only fields
        // copied from the parent (`pAppData`, `mxPathname`), which stay as they were.
        PARENT.store(parent, Ordering::Release);
        let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0);
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(RegisterError(rc))
        }
    }
}

/// A write-ahead log opened through this VFS: SQLite's file header (the methods), the held
/// writes, then the parent's own file at `WAL_FILE_HEADER` bytes.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    held: *mut Held,
}

/// Where the parent's file starts in a `WalFile` (SQLite allocates files 8-byte aligned).
const WAL_FILE_HEADER: usize = std::mem::size_of::<WalFile>().next_multiple_of(16);

/// Writes that continue one another, not yet handed to the file.
#[derive(Debug, Default)]
struct Held {
    start: i64,
    bytes: Vec<u8>,
}

impl Held {
    /// Whether a write at `offset` continues what is held (anything does when nothing is).
    fn continues(&self, offset: i64) -> bool {
        self.bytes.is_empty() || offset == self.end()
    }

    /// Takes a write that continues what is held.
    fn hold(&mut self, offset: i64, data: &[u8]) {
        debug_assert!(self.continues(offset));
        if self.bytes.is_empty() {
            self.start = offset;
        }
        self.bytes.extend_from_slice(data);
    }

    /// What is held, in pieces of at most `MAX_WRITE` bytes: every piece but the last ends on
    /// a 4 KiB boundary of the file.
    fn pieces(&self) -> impl Iterator<Item = (i64, &[u8])> {
        let mut at = self.start;
        let end = self.end();
        std::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let stop = end.min((at + MAX_WRITE) / FILE_PAGE * FILE_PAGE);
            let piece = (
                at,
                &self.bytes[(at - self.start) as usize..(stop - self.start) as usize],
            );
            at = stop;
            Some(piece)
        })
    }

    /// Forgets what is held (keeping the memory for the next commit).
    fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Bytes held.
    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn end(&self) -> i64 {
        self.start + self.bytes.len() as i64
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(wal_lock),
    xUnlock: Some(wal_unlock),
    xCheckReservedLock: Some(wal_check_reserved_lock),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(wal_sector_size),
    xDeviceCharacteristics: Some(wal_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let parent = PARENT.load(Ordering::Acquire);
    // SAFETY: `PARENT` is set before the VFS is registered, so it points at the default VFS,
    // which SQLite never frees; its `xOpen` is always present.
    let open = unsafe { (*parent).xOpen.expect("a VFS has xOpen") };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // SAFETY: SQLite gave `file` our `szOsFile` bytes, more than the parent's.
        return unsafe { open(parent, name, file, flags, out_flags) };
    }
    let inner = inner(file);
    // SAFETY: the parent's file starts `WAL_FILE_HEADER` bytes in and has its `szOsFile` bytes.
    let rc = unsafe { open(parent, name, inner, flags, out_flags) };
    let wal = file.cast::<WalFile>();
    // SAFETY: `file` has room for a `WalFile` before the parent's file. SQLite calls `xClose`
    // whenever `pMethods` is set, even when the open failed; it is set exactly when the parent's
    // file has methods to close.
    unsafe {
        if (*inner).pMethods.is_null() {
            (*wal).base.pMethods = ptr::null();
        } else {
            ptr::addr_of_mut!((*wal).held).write(Box::into_raw(Box::default()));
            (*wal).base.pMethods = &WAL_METHODS;
        }
    }
    rc
}

/// The parent's file inside one of ours.
fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    file.cast::<u8>().wrapping_add(WAL_FILE_HEADER).cast()
}

/// The parent's methods for the parent's file.
///
/// # Safety
/// `file` is an open `WalFile`.
unsafe fn methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: an open `WalFile`'s parent file was opened by the parent, which set its methods to
    // a static table.
    unsafe { &*(*inner(file)).pMethods }
}

/// What `file` holds.
///
/// # Safety
/// `file` is an open `WalFile`, and SQLite calls its methods one at a time.
unsafe fn held<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Held {
    // SAFETY: set by `x_open` for every open `WalFile` and freed only by `wal_close`.
    unsafe { &mut *(*file.cast::<WalFile>()).held }
}

/// Hands what `file` holds to the parent's file, in as few writes as it takes.
///
/// # Safety
/// `file` is an open `WalFile`.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: the caller's contract.
    let held = unsafe { held(file) };
    let mut rc = ffi::SQLITE_OK;
    for (offset, bytes) in held.pieces() {
        WRITES_MADE.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the parent's `xWrite` on its own file, with a buffer of `bytes.len()` bytes
        // (at most `MAX_WRITE`, so it fits a `c_int`).
        rc = unsafe {
            (methods(file).xWrite.expect("a file has xWrite"))(
                inner(file),
                bytes.as_ptr().cast(),
                bytes.len() as c_int,
                offset,
            )
        };
        if rc != ffi::SQLITE_OK {
            break;
        }
    }
    // A failed write fails the SQLite call that asked for it, and SQLite rolls the transaction
    // back; what was held is not tried again later.
    held.clear();
    rc
}

/// Hands what `file` holds to the parent's file, then makes `call` on the parent's file: the
/// order of every method that lets SQLite or the OS observe the file.
///
/// # Safety
/// `file` is an open `WalFile`; `call` is safe to make on the parent's open file.
unsafe fn flushed_then(
    file: *mut ffi::sqlite3_file,
    call: impl FnOnce(&'static ffi::sqlite3_io_methods, *mut ffi::sqlite3_file) -> c_int,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        call(methods(file), inner(file))
    }
}

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes an open `WalFile` once; after this nothing uses `held`.
    unsafe {
        let flushed = flush(file);
        let closed = (methods(file).xClose.expect("a file has xClose"))(inner(file));
        drop(Box::from_raw((*file.cast::<WalFile>()).held));
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn wal_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: `file` is an open `WalFile`; the read goes to the parent's file with SQLite's
    // own buffer.
    unsafe {
        flushed_then(file, |m, f| {
            (m.xRead.expect("a file has xRead"))(f, buf, amount, offset)
        })
    }
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    WRITES_TAKEN.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `file` is an open `WalFile`, and SQLite's buffer holds `amount` bytes. Any length
    // is held: `flush` cuts what is held into pieces the parent can write.
    unsafe {
        let held = held(file);
        if !held.continues(offset) || held.len() + len > HOLD_LIMIT {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        held.hold(offset, std::slice::from_raw_parts(buf.cast::<u8>(), len));
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn wal_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: `file` is an open `WalFile`.
    unsafe {
        flushed_then(file, |m, f| {
            (m.xTruncate.expect("a file has xTruncate"))(f, size)
        })
    }
}

unsafe extern "C" fn wal_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: `file` is an open `WalFile`.
    unsafe { flushed_then(file, |m, f| (m.xSync.expect("a file has xSync"))(f, flags)) }
}

unsafe extern "C" fn wal_file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: `file` is an open `WalFile`; `size` is SQLite's.
    unsafe {
        flushed_then(file, |m, f| {
            (m.xFileSize.expect("a file has xFileSize"))(f, size)
        })
    }
}

unsafe extern "C" fn wal_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `file` is an open `WalFile`.
    unsafe { (methods(file).xLock.expect("a file has xLock"))(inner(file), level) }
}

unsafe extern "C" fn wal_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `file` is an open `WalFile`.
    unsafe { (methods(file).xUnlock.expect("a file has xUnlock"))(inner(file), level) }
}

unsafe extern "C" fn wal_check_reserved_lock(
    file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    // SAFETY: `file` is an open `WalFile`; `out` is SQLite's.
    unsafe {
        (methods(file)
            .xCheckReservedLock
            .expect("a file has xCheckReservedLock"))(inner(file), out)
    }
}

unsafe extern "C" fn wal_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: `file` is an open `WalFile`; `arg` is SQLite's, for the parent to read.
    unsafe {
        flushed_then(file, |m, f| {
            (m.xFileControl.expect("a file has xFileControl"))(f, op, arg)
        })
    }
}

unsafe extern "C" fn wal_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `file` is an open `WalFile`.
    unsafe { (methods(file).xSectorSize.expect("a file has xSectorSize"))(inner(file)) }
}

unsafe extern "C" fn wal_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `file` is an open `WalFile`.
    unsafe {
        (methods(file)
            .xDeviceCharacteristics
            .expect("a file has xDeviceCharacteristics"))(inner(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_that_continue_are_held_as_one() {
        let mut held = Held::default();
        assert!(held.continues(4096));
        held.hold(4096, &[1; 24]);
        assert!(held.continues(4120));
        assert!(!held.continues(4096));
        assert!(!held.continues(0));
        held.hold(4120, &[2; 4096]);
        let pieces: Vec<(i64, &[u8])> = held.pieces().collect();
        assert_eq!(pieces.len(), 1);
        let (start, bytes) = pieces[0];
        assert_eq!(start, 4096);
        assert_eq!(bytes.len(), 4120);
        assert_eq!(bytes[23], 1);
        assert_eq!(bytes[24], 2);
        held.clear();
        assert_eq!(held.pieces().count(), 0);
        assert!(held.continues(0));
    }

    #[test]
    fn long_runs_go_in_pieces_that_end_on_file_pages() {
        let mut held = Held::default();
        held.hold(32, &vec![7; 500_000]);
        let pieces: Vec<(i64, usize)> = held.pieces().map(|(at, b)| (at, b.len())).collect();
        let mut at = 32;
        for (i, &(start, len)) in pieces.iter().enumerate() {
            assert_eq!(start, at, "pieces follow one another");
            assert!(len as i64 <= MAX_WRITE && len > 0);
            at += len as i64;
            if i + 1 < pieces.len() {
                assert_eq!(at % FILE_PAGE, 0, "piece {i} ends on a file page");
            }
        }
        assert_eq!(at, 500_032);
        assert_eq!(pieces.len(), 4);
    }
}
