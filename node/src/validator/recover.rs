//! Restarting from the validator's own folder: the newest local snapshot its block file
//! confirms, then only the blocks after it, read back from the file one at a time.
//!
//! A snapshot carries the execution state and the chain state (validator set, staking,
//! governance) after its block, so nothing before it is read again: restart time and
//! memory follow the blocks since the newest snapshot, not the chain's length. The block
//! file is still checked whole when it is opened (a stream, `consensus_net::BlockStore`).
//! The snapshot is used only if the file confirms it (the stored block of its height has
//! its block id, or, for a file that starts right after it, the first block names it as
//! parent) and it opens (its state restores to its root and its chain state hashes to the
//! digest that state commits to); else the next older one is tried, then genesis, which
//! needs the file to start at block 1.

use super::*;

impl Shell {
    /// Recovers from the block file (before the host starts): installs the newest snapshot
    /// the file confirms and re-executes the stored blocks after it. Returns the snapshot's
    /// height (0: from genesis).
    pub(super) fn recover(&mut self, chain_id: &[u8; 32]) -> Result<Height, HostError> {
        let Some(first) = self.blocks.first_height() else {
            self.log_unused_snapshots(0);
            return Ok(0);
        };
        let from = match self.newest_confirmed_snapshot(first - 1, chain_id) {
            Some((snapshot, execution, chain)) => {
                self.host.app_mut().install_execution(execution, &snapshot);
                let last_block = (Hash(snapshot.block_id), snapshot.block_timestamp_ns);
                self.host
                    .start_from_snapshot(chain, Hash(snapshot.exec_root), last_block);
                snapshot.height
            }
            None if first > 1 => {
                return Err(HostError::Config(format!(
                    "the block file starts at block {first} and no snapshot it confirms covers the blocks before \
                     (each one passed over is named above; after an upgrade that changed the snapshot format, \
                     move the data folder away and start the validator again: it joins from a peer's snapshot)"
                )))
            }
            None => 0,
        };
        for certificate in self.blocks.certificates(from + 1)? {
            self.host.recover(certificate?, now_ns())?;
        }
        Ok(from)
    }

    /// The newest snapshot in the snapshot folder, at or after `base` (the height before
    /// the block file's first block), that the block file confirms and that opens, with
    /// its opened execution and chain state. Each one passed over is named on stderr.
    fn newest_confirmed_snapshot(
        &self,
        base: Height,
        chain_id: &[u8; 32],
    ) -> Option<(Snapshot, Execution, ChainState)> {
        let app = self.host.app();
        for height in snapshot::heights(&app.snapshots).into_iter().rev() {
            let unused = |why: &str| {
                stderr_line(format_args!(
                    "nexus validator: snapshot at {height} not used: {why}"
                ))
            };
            if height > self.blocks.height() {
                unused("past the block file");
                continue;
            }
            if height < base {
                unused("before the block file's first block");
                continue;
            }
            let Some((snapshot, _)) = snapshot::read(&app.snapshots, height) else {
                unused("damaged");
                continue;
            };
            match self.confirms(&snapshot, base) {
                Ok(true) => {}
                Ok(false) => {
                    unused("another chain's block");
                    continue;
                }
                Err(why) => {
                    unused(&format!("its block cannot be read back: {why}"));
                    continue;
                }
            }
            match app.open_snapshot(&snapshot, chain_id) {
                Ok((execution, chain)) => return Some((snapshot, execution, chain)),
                Err(why) => unused(&why),
            }
        }
        None
    }

    /// Whether the block file confirms `snapshot`'s block: the stored block of its height
    /// is that block, or (a file that starts right after it, at `base + 1`) the first
    /// stored block is its child.
    fn confirms(&self, snapshot: &Snapshot, base: Height) -> Result<bool, HostError> {
        if snapshot.height == base {
            let first = self.blocks.certificates(base + 1)?.next().transpose()?;
            return Ok(first.is_some_and(|c| c.block.prev_hash.0 == snapshot.block_id));
        }
        let stored = self
            .blocks
            .certificates(snapshot.height)?
            .next()
            .transpose()?;
        Ok(stored.is_some_and(|c| c.block.id().0 == snapshot.block_id))
    }

    /// Names on stderr the snapshots an empty block file leaves unused.
    fn log_unused_snapshots(&self, last: Height) {
        for height in snapshot::heights(&self.host.app().snapshots) {
            if height > last {
                stderr_line(format_args!(
                    "nexus validator: snapshot at {height} not used: past the block file"
                ));
            }
        }
    }
}
