//! The sequencer as a pure state machine: numbers inputs and cuts blocks.
//!
//! Time is an input (`now_ns`), never read here, so the same inputs at the same times give
//! the same blocks. A block is cut when it holds `max_block_inputs` inputs, or on a tick at
//! least `max_block_age_ns` after its first input.

use engine::Command;

use crate::block::Block;

/// When to cut blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencerConfig {
    /// Cut a block as soon as it holds this many inputs (>= 1).
    pub max_block_inputs: u32,
    /// Cut a non-empty block on the first tick this long after its first input.
    pub max_block_age_ns: u64,
}

/// Where the chain stands: what the next block and input will be numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainTip {
    /// Height of the next block.
    pub next_height: u64,
    /// Sequence number of the next input.
    pub next_seq: u64,
    /// Hash of the last block (zeros before the first).
    pub last_hash: [u8; 32],
    /// Timestamp of the last block (0 before the first).
    pub last_timestamp_ns: u64,
}

impl ChainTip {
    /// An empty chain.
    pub const GENESIS: ChainTip = ChainTip {
        next_height: 1,
        next_seq: 1,
        last_hash: [0; 32],
        last_timestamp_ns: 0,
    };
}

/// Numbers inputs and cuts blocks.
pub struct Sequencer {
    config: SequencerConfig,
    tip: ChainTip,
    open_since_ns: u64,
    open: Vec<Command>,
}

impl Sequencer {
    /// A sequencer continuing from `tip`.
    pub fn new(config: SequencerConfig, tip: ChainTip) -> Self {
        assert!(
            config.max_block_inputs >= 1,
            "blocks must hold at least one input"
        );
        Sequencer {
            config,
            tip,
            open_since_ns: 0,
            open: Vec::with_capacity(config.max_block_inputs as usize),
        }
    }

    /// The numbering the next input and block will get.
    pub fn tip(&self) -> ChainTip {
        self.tip
    }

    /// When the open block reaches its age limit (`None` if no block is open).
    pub fn open_deadline_ns(&self) -> Option<u64> {
        (!self.open.is_empty()).then(|| {
            self.open_since_ns
                .saturating_add(self.config.max_block_age_ns)
        })
    }

    /// Inputs waiting in the open block.
    pub fn open_inputs(&self) -> usize {
        self.open.len()
    }

    /// Gives `command` the next sequence number and returns it; may cut a block into `cut`.
    pub fn submit(&mut self, now_ns: u64, command: Command, cut: &mut Vec<Block>) -> u64 {
        let seq = self.tip.next_seq;
        self.tip.next_seq += 1;
        if self.open.is_empty() {
            self.open_since_ns = now_ns;
        }
        self.open.push(command);
        if self.open.len() >= self.config.max_block_inputs as usize {
            self.cut(now_ns, cut);
        }
        seq
    }

    /// Lets time pass: cuts the open block if it is old enough.
    pub fn tick(&mut self, now_ns: u64, cut: &mut Vec<Block>) {
        if !self.open.is_empty()
            && now_ns.saturating_sub(self.open_since_ns) >= self.config.max_block_age_ns
        {
            self.cut(now_ns, cut);
        }
    }

    /// Cuts the open block now, if it holds anything (used at shutdown).
    pub fn flush(&mut self, now_ns: u64, cut: &mut Vec<Block>) {
        if !self.open.is_empty() {
            self.cut(now_ns, cut);
        }
    }

    fn cut(&mut self, now_ns: u64, cut: &mut Vec<Block>) {
        let commands = std::mem::replace(
            &mut self.open,
            Vec::with_capacity(self.config.max_block_inputs as usize),
        );
        let first_seq = self.tip.next_seq - commands.len() as u64;
        // Block time never goes backwards, even if the shell's clock does.
        let timestamp_ns = now_ns.max(self.tip.last_timestamp_ns);
        let block = Block::seal(
            self.tip.next_height,
            timestamp_ns,
            first_seq,
            self.tip.last_hash,
            commands,
        );
        self.tip.next_height += 1;
        self.tip.last_hash = block.hash;
        self.tip.last_timestamp_ns = timestamp_ns;
        cut.push(block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deposit(n: u64) -> Command {
        Command::Deposit {
            account: n,
            asset: 0,
            amount: 1,
        }
    }

    #[test]
    fn cuts_by_count_and_by_age_and_chains_hashes() {
        let mut sequencer = Sequencer::new(
            SequencerConfig {
                max_block_inputs: 3,
                max_block_age_ns: 100,
            },
            ChainTip::GENESIS,
        );
        let mut cut = Vec::new();
        let seqs: Vec<u64> = (0..4)
            .map(|i| sequencer.submit(10 + i, deposit(i), &mut cut))
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        assert_eq!(cut.len(), 1, "the third input fills the first block");
        assert_eq!(
            (cut[0].height, cut[0].first_seq, cut[0].last_seq()),
            (1, 1, 3)
        );
        sequencer.tick(50, &mut cut);
        assert_eq!(cut.len(), 1, "the open block is only 37 ns old");
        sequencer.tick(13 + 100, &mut cut);
        assert_eq!(cut.len(), 2);
        assert_eq!(
            (cut[1].height, cut[1].first_seq, cut[1].last_seq()),
            (2, 4, 4)
        );
        assert_eq!(cut[1].prev_hash, cut[0].hash);
        sequencer.tick(10_000, &mut cut);
        assert_eq!(cut.len(), 2, "empty blocks are never cut");
    }

    #[test]
    fn block_time_never_goes_backwards() {
        let mut sequencer = Sequencer::new(
            SequencerConfig {
                max_block_inputs: 1,
                max_block_age_ns: 0,
            },
            ChainTip::GENESIS,
        );
        let mut cut = Vec::new();
        sequencer.submit(500, deposit(1), &mut cut);
        sequencer.submit(400, deposit(2), &mut cut);
        assert_eq!(cut[1].timestamp_ns, 500);
    }
}
