//! The validator's snapshot writer: a thread that encodes, checksums and writes snapshots
//! ([`snapshot::write`]: a temporary file, synced, renamed) off the host loop.
//!
//! The loop decides when a snapshot is due and takes what must be taken at the block
//! boundary: an image of the executed state ([`execution::Execution::image`], a copy of the
//! order slab and the small parts encoded) and the chain state. The thread turns the image
//! into bytes and writes the file; the loop polls for its report and counts a snapshot as
//! written (logs it, prunes blocks behind it) only once the file is durable. A crash
//! mid-write leaves a temporary file that no reader lists, and the previous snapshot.
//!
//! One snapshot is written at a time: one due while the previous is still being written
//! waits for it (the loop stalls for the rest of that write) rather than being skipped, so
//! which heights have snapshots never depends on timing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, TryRecvError};
use std::time::Instant;

use execution::ExecutionImage;
use state_sync::snapshot::{self, Snapshot};

/// A snapshot to write: everything but its execution bytes, and the image they come from.
pub struct SnapshotJob {
    /// The snapshot, its `execution` still empty.
    pub snapshot: Snapshot,
    /// The executed state at its height.
    pub execution: ExecutionImage,
}

/// A snapshot durably on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Its block height.
    pub height: u64,
    /// Its file.
    pub path: PathBuf,
    /// Execution and chain-state bytes in it.
    pub bytes: usize,
    /// What the thread took to encode, checksum and write it (ms).
    pub write_ms: u64,
}

/// The writing thread (started with the first snapshot) and the one snapshot in flight.
pub struct SnapshotWriter {
    dir: PathBuf,
    thread: Option<Thread>,
    /// The height being written, if any.
    pending: Option<u64>,
}

/// The channels to and from the thread (it ends when `jobs` is dropped).
struct Thread {
    jobs: mpsc::Sender<SnapshotJob>,
    done: mpsc::Receiver<io::Result<Written>>,
}

impl SnapshotWriter {
    /// A writer into `dir`; no thread until the first snapshot.
    pub fn new(dir: PathBuf) -> SnapshotWriter {
        SnapshotWriter {
            dir,
            thread: None,
            pending: None,
        }
    }

    /// The height being written, if any.
    pub fn pending(&self) -> Option<u64> {
        self.pending
    }

    /// Hands `job` to the thread. If the previous snapshot is still being written, waits
    /// for it first and returns its report.
    pub fn submit(&mut self, job: SnapshotJob) -> io::Result<Option<io::Result<Written>>> {
        let previous = self.wait();
        let height = job.snapshot.height;
        self.thread()?
            .jobs
            .send(job)
            .map_err(|_| io::Error::other("the snapshot writer stopped"))?;
        self.pending = Some(height);
        Ok(previous)
    }

    /// The report of the snapshot being written, if it is done (never blocks).
    pub fn poll(&mut self) -> Option<io::Result<Written>> {
        self.pending?;
        let report = match self.thread.as_ref()?.done.try_recv() {
            Ok(report) => report,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Err(stopped()),
        };
        self.pending = None;
        Some(report)
    }

    /// Waits for the snapshot being written, if any, and returns its report.
    pub fn wait(&mut self) -> Option<io::Result<Written>> {
        self.pending.take()?;
        let thread = self.thread.as_ref()?;
        Some(thread.done.recv().unwrap_or_else(|_| Err(stopped())))
    }

    /// The thread, started if it is not yet.
    fn thread(&mut self) -> io::Result<&Thread> {
        if self.thread.is_none() {
            let (jobs, job_rx) = mpsc::channel::<SnapshotJob>();
            let (done_tx, done) = mpsc::channel();
            let dir = self.dir.clone();
            std::thread::Builder::new()
                .name("snapshot-writer".into())
                .spawn(move || {
                    for job in job_rx {
                        if done_tx.send(write_job(&dir, job)).is_err() {
                            return;
                        }
                    }
                })?;
            self.thread = Some(Thread { jobs, done });
        }
        Ok(self.thread.as_ref().expect("started above"))
    }
}

fn stopped() -> io::Error {
    io::Error::other("the snapshot writer stopped")
}

/// Encodes `job`'s image and writes the snapshot durably into `dir` (on the thread).
fn write_job(dir: &Path, job: SnapshotJob) -> io::Result<Written> {
    let started = Instant::now();
    let mut snapshot = job.snapshot;
    snapshot.execution = job.execution.encode();
    let path = snapshot::write(dir, &snapshot)?;
    Ok(Written {
        height: snapshot.height,
        path,
        bytes: snapshot.execution.len() + snapshot.chain.len(),
        write_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Command, MarketSpec, NewOrder, SelfTradePrevention, Side, TimeInForce};
    use execution::{Execution, ExecutionConfig};

    fn config() -> ExecutionConfig {
        ExecutionConfig {
            chain_id: [7; 32],
            faucets: Vec::new(),
            feeders: Vec::new(),
            engine: engine::EngineConfig::default(),
            evm: Default::default(),
            funding_interval_s: 0,
            core_gas_limit: execution::DEFAULT_CORE_GAS_LIMIT,
        }
    }

    /// A market with `orders` resting buys of two accounts (at genesis).
    fn execution(orders: u64) -> Execution {
        let mut genesis = vec![
            Command::CreateAsset { asset: 1 },
            Command::CreateAsset { asset: 2 },
            Command::CreateMarket(MarketSpec {
                market: 0,
                base: 1,
                quote: 2,
                base_units_per_lot: 1,
                quote_units_per_tick_lot: 1,
                min_lots: 1,
                max_price_ticks: 1_000,
                maker_fee_bps: 0,
                taker_fee_bps: 0,
            }),
        ];
        for account in [1, 2] {
            genesis.push(Command::Deposit {
                account,
                asset: 2,
                amount: 1 << 40,
            });
        }
        genesis.extend((0..orders).map(|oid| {
            Command::Place(NewOrder {
                account: 1 + oid % 2,
                market: 0,
                oid,
                side: Side::Buy,
                price: Some(1 + (oid % 500) as i64),
                qty: 3,
                tif: TimeInForce::Gtc,
                stp: SelfTradePrevention::CancelMaker,
                reduce_only: false,
            })
        }));
        Execution::new(config(), &genesis)
    }

    fn job(height: u64, execution: &mut Execution) -> SnapshotJob {
        SnapshotJob {
            snapshot: Snapshot {
                height,
                exec_root: execution.root(),
                inputs_executed: height * 3,
                block_time_ms: 1_000,
                block_id: [height as u8; 32],
                block_timestamp_ns: height,
                execution: Vec::new(),
                chain: vec![5; 40],
            },
            execution: execution.image(),
        }
    }

    #[test]
    fn a_snapshot_written_off_the_loop_restores_to_the_root_at_its_height() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SnapshotWriter::new(dir.path().to_path_buf());
        assert!(
            writer.poll().is_none() && writer.wait().is_none(),
            "nothing pending"
        );
        let mut state = execution(2_000);
        let (root, bytes) = (state.root(), state.snapshot());
        assert!(writer.submit(job(10, &mut state)).unwrap().is_none());
        // The image is a copy: the state may go (or change) while the thread writes.
        drop(state);
        assert_eq!(writer.pending(), Some(10));
        let written = writer.wait().unwrap().unwrap();
        assert_eq!((written.height, writer.pending()), (10, None));
        let (snapshot, _) = snapshot::read(dir.path(), 10).expect("a whole snapshot");
        assert_eq!(snapshot.execution, bytes);
        assert_eq!(snapshot.exec_root, root);
        let mut restored = Execution::restore(config(), &snapshot.execution).unwrap();
        assert_eq!(restored.root(), root);
    }

    #[test]
    fn a_snapshot_due_while_one_is_written_waits_for_it_and_both_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SnapshotWriter::new(dir.path().to_path_buf());
        let (mut first, mut second) = (execution(1_000), execution(1_500));
        writer.submit(job(10, &mut first)).unwrap();
        let previous = writer.submit(job(20, &mut second)).unwrap();
        assert_eq!(previous.map(|r| r.unwrap().height), Some(10));
        assert_eq!(writer.wait().map(|r| r.unwrap().height), Some(20));
        assert_eq!(snapshot::heights(dir.path()), [10, 20]);
        let (snapshot, _) = snapshot::read(dir.path(), 20).unwrap();
        let mut restored = Execution::restore(config(), &snapshot.execution).unwrap();
        assert_eq!(restored.root(), second.root());
    }
}
