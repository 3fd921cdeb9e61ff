//! A worker's journal file with its appends written and synced by a thread of their own
//! (`journal-N`): the worker hands over a batch and goes on handling devices while the disk
//! takes it (`fdatasync` takes milliseconds on a quiet SSD, far more on a busy disk, and a
//! worker that waited for it would hold every device it owns that long, once a second).
//!
//! Order is what keeps the journal true: appends are written in the order they were handed
//! over, and [`JournalWriter::restart`] (after a snapshot) first waits until every append handed
//! over before it is on disk, so no batch older than a snapshot lands in the journal after it.
//! A failed append is reported to the worker by [`JournalWriter::take_failure`], which answers
//! with a snapshot (that holds the lost batch).
//!
//! The channel is bounded: a disk slower than the journal interval makes the worker wait at
//! the next hand-over, which is the back-pressure it should feel.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};
use log::error;
use parking_lot::Mutex;

use super::state::{JournalFile, StateFile};

enum Op {
    Append(Vec<u8>),
    /// Answered once every op before it is done.
    Barrier(Sender<()>),
}

pub(super) struct JournalWriter {
    file: StateFile,
    journal: Arc<Mutex<JournalFile>>,
    tx: Option<Sender<Op>>,
    thread: Option<JoinHandle<()>>,
    failed: Arc<AtomicBool>,
}

impl JournalWriter {
    /// Starts the writer thread of worker `worker`'s `journal`.
    pub(super) fn new(journal: JournalFile, worker: usize) -> io::Result<JournalWriter> {
        let file = journal.file().clone();
        let journal = Arc::new(Mutex::new(journal));
        let failed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = bounded::<Op>(4);
        let thread = {
            let (journal, failed) = (journal.clone(), failed.clone());
            std::thread::Builder::new()
                .name(format!("journal-{worker}"))
                .spawn(move || {
                    for op in rx {
                        match op {
                            Op::Append(records) => {
                                if let Err(e) = journal.lock().append(&records) {
                                    let path = journal.lock().file().path().to_path_buf();
                                    error!(
                                        "cannot append to the journal {}: {e}; writing a snapshot instead",
                                        path.display()
                                    );
                                    failed.store(true, Ordering::Relaxed);
                                }
                            }
                            Op::Barrier(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                })?
        };
        Ok(JournalWriter {
            file,
            journal,
            tx: Some(tx),
            thread: Some(thread),
            failed,
        })
    }

    pub(super) fn file(&self) -> &StateFile {
        &self.file
    }

    /// Hands `records` over to be appended and synced.
    pub(super) fn append(&self, records: Vec<u8>) {
        let sent = self.tx.as_ref().map(|tx| tx.send(Op::Append(records)));
        if !matches!(sent, Some(Ok(()))) {
            // The thread is gone (it never panics on its own): the batch is lost to the
            // journal, and a snapshot keeps it.
            self.failed.store(true, Ordering::Relaxed);
        }
    }

    /// Whether an append failed since the last call.
    pub(super) fn take_failure(&self) -> bool {
        self.failed.swap(false, Ordering::Relaxed)
    }

    /// Waits until every append handed over is on disk.
    pub(super) fn flush(&self) {
        let (done_tx, done) = bounded(1);
        if let Some(tx) = &self.tx {
            if tx.send(Op::Barrier(done_tx)).is_ok() {
                let _ = done.recv();
            }
        }
    }

    /// Replaces the journal with `start`, after every append handed over before.
    pub(super) fn restart(&self, start: &[u8]) -> io::Result<()> {
        self.flush();
        self.journal.lock().restart(start)
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_land_in_order_and_a_restart_comes_after_them() {
        let dir = std::env::temp_dir().join(format!("gw-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let w = JournalWriter::new(JournalFile::new(&dir, 0).unwrap(), 0).unwrap();
        w.restart(b"start|").unwrap();
        for i in 0..50u8 {
            w.append(vec![b'a' + i % 26]);
        }
        w.flush();
        let expected: Vec<u8> = b"start|"
            .iter()
            .copied()
            .chain((0..50u8).map(|i| b'a' + i % 26))
            .collect();
        assert_eq!(std::fs::read(w.file().path()).unwrap(), expected);
        // Appends handed over just before a restart are written before it, never after.
        w.append(b"old".to_vec());
        w.restart(b"new|").unwrap();
        w.append(b"x".to_vec());
        w.flush();
        assert_eq!(std::fs::read(w.file().path()).unwrap(), b"new|x");
        assert!(!w.take_failure());
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
