//! [`Replayer`] (a translator driving an engine) and [`run`], the streaming loop of `nexus replay`.

use super::*;

/// A translator driving an engine: the whole of `nexus replay` but the I/O.
pub struct Replayer {
    translator: Translator,
    engine: Engine,
    events: Vec<Event>,
    bids: Vec<(Ticks, Lots)>,
    asks: Vec<(Ticks, Lots)>,
}

impl Default for Replayer {
    fn default() -> Self {
        Replayer::new(EngineConfig::default())
    }
}

impl Replayer {
    /// A replayer over a fresh engine sized by `config`.
    pub fn new(config: EngineConfig) -> Self {
        Replayer {
            translator: Translator::default(),
            engine: Engine::new(config),
            events: Vec::new(),
            bids: Vec::new(),
            asks: Vec::new(),
        }
    }

    /// The engine being driven (for queries).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine's state hash as lowercase hex.
    pub fn state_hash_hex(&self) -> String {
        sequencer::hex(&self.engine.state_hash())
    }

    /// Processes input line `seq` (1-based), appending its output records to `out`.
    /// Blank lines produce nothing. Never panics, whatever the text.
    pub fn line(&mut self, seq: u64, text: &str, out: &mut Vec<Output>) {
        for step in self.translator.line(seq, text, out) {
            match step {
                Step::Run {
                    command,
                    market,
                    echo,
                } => {
                    self.events.clear();
                    self.engine.step(&command, &mut self.events);
                    self.translator.render(seq, &self.events, market, echo, out);
                }
                Step::Book { market, depth } => {
                    let id = self.translator.markets[market].id;
                    self.bids.clear();
                    self.asks.clear();
                    self.engine.depth(id, Side::Buy, depth, &mut self.bids);
                    self.engine.depth(id, Side::Sell, depth, &mut self.asks);
                    self.translator
                        .render_book(seq, market, &self.bids, &self.asks, out);
                }
            }
        }
    }
}

/// Options of one replay run.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Engine sizing.
    pub config: EngineConfig,
    /// Write an `end` record with the state hash after the last line.
    pub state_hash: bool,
}

/// Why a replay run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Input(#[source] io::Error),
    /// Writing the output failed (for instance a closed pipe).
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
}

/// Replays every line of `input` into `output`, one line at a time, and returns the number
/// of lines read. The output is flushed whenever the input has no more buffered data, so a
/// live pipe sees each command's events as soon as the command is read.
pub fn run<R: Read, W: Write>(
    input: &mut BufReader<R>,
    output: &mut W,
    options: RunOptions,
) -> Result<u64, RunError> {
    let mut replayer = Replayer::new(options.config);
    let mut line = Vec::new();
    let mut records = Vec::new();
    let mut json = Vec::new();
    let mut seq: u64 = 0;
    loop {
        if input.buffer().is_empty() {
            output.flush().map_err(RunError::Output)?;
        }
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(RunError::Input)?;
        if read == 0 {
            break;
        }
        seq += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        records.clear();
        match std::str::from_utf8(text) {
            Ok(text) => replayer.line(seq, text, &mut records),
            Err(e) => records.push(Output::Error {
                seq,
                line: seq,
                reason: "malformed",
                detail: format!("invalid UTF-8: {e}"),
            }),
        }
        for record in &records {
            write_record(output, record, &mut json)?;
        }
    }
    if options.state_hash {
        let end = Output::End {
            lines: seq,
            state_hash: replayer.state_hash_hex(),
        };
        write_record(output, &end, &mut json)?;
    }
    output.flush().map_err(RunError::Output)?;
    Ok(seq)
}

fn write_record<W: Write>(
    output: &mut W,
    record: &Output,
    json: &mut Vec<u8>,
) -> Result<(), RunError> {
    json.clear();
    serde_json::to_writer(&mut *json, record).map_err(|e| RunError::Output(io::Error::other(e)))?;
    json.push(b'\n');
    output.write_all(json).map_err(RunError::Output)
}
