//! Ledger tests against real backends: one contract suite run on SQLite (a file on disk) and on
//! the official Firestore emulator, the Firestore race, and the ReceiptWriter's group commit.

mod contract;
mod firestore;
mod sqlite;
mod writer;
