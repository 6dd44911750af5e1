//! A commit's WAL writes reach the file in a few large writes. Alone in its test binary, because
//! the counters are the whole process's.

mod common;

#[test]
fn a_commit_reaches_the_file_in_a_few_writes_and_another_connection_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let writer = common::writer(&path);
    let reader = common::reader(&path);
    let before = walbuf::counters();
    // 400 rows of 1 KiB: about 100 pages, so about 200 writes asked for (header and page).
    common::insert(&writer, 0, 400, 1024);
    let after = walbuf::counters();
    let taken = after.writes_taken - before.writes_taken;
    let made = after.writes_made - before.writes_made;
    assert!(taken >= 200, "SQLite asked for {taken} writes");
    // 100 frames of 4,120 bytes are about 412 KB: four pieces of at most 128 KiB.
    assert!(made <= 5, "{made} writes made for {taken} asked for");
    assert_eq!(common::keys(&reader, 1024), (0..400).collect::<Vec<_>>());
    assert_eq!(common::integrity(&reader), "ok");
}
