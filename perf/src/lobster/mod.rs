//! Real NASDAQ order flow: a LOBSTER sample day (message file + top-N book after each
//! message), read straight from its zip, replayed through the engine and checked against the
//! book file ([`replay`]), and timed ([`bench`]).
//!
//! The data stays outside the repository, in `../shared/data/lobster/` next to the workspace
//! (see its README: unknown ids, hidden executions, levels entering the window). It is found
//! by [`lobster_dir`]: `NEXUS_LOBSTER_DIR` if set, else the first `shared/data/lobster` folder
//! in an ancestor of this crate's manifest directory.
//!
//! Units: a LOBSTER price is dollars x 10,000 and every visible order sits on a cent, so one
//! tick is one cent ([`PRICE_PER_TICK`] = 100); one lot is one share.

pub mod bench;
pub mod replay;

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The environment variable that overrides where the LOBSTER folder is.
pub const DIR_ENV: &str = "NEXUS_LOBSTER_DIR";
/// Where the folder sits under a workspace's parent: `<parent>/shared/data/lobster`.
pub const SHARED_SUBDIR: &str = "shared/data/lobster";
/// LOBSTER price units per engine tick: prices are dollars x 10,000, ticks are cents.
pub const PRICE_PER_TICK: i64 = 100;
/// The price LOBSTER writes for an empty ask level (bids use its negation), size 0.
pub const EMPTY_ASK_PRICE: i64 = 9_999_999_999;

/// The LOBSTER folder to use: `$NEXUS_LOBSTER_DIR` when set, else the first ancestor of
/// this crate's manifest directory that holds `shared/data/lobster` (the path itself is
/// returned even when it does not exist, to be named in the "not found" message).
pub fn lobster_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV) {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join(SHARED_SUBDIR))
        .find(|candidate| candidate.is_dir())
        .unwrap_or_else(|| manifest.join("../..").join(SHARED_SUBDIR))
}

/// What a message did (LOBSTER's `type` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// 1: a new limit order.
    Submit,
    /// 2: part of a resting order canceled.
    PartialCancel,
    /// 3: a resting order deleted.
    Delete,
    /// 4: a visible resting order executed (size: shares executed).
    Execute,
    /// 5: a hidden order executed (not in the visible book).
    ExecuteHidden,
    /// 6: an auction cross.
    Cross,
    /// 7: a trading halt, quote or resume indicator.
    Halt,
}

impl Kind {
    fn from_code(code: i64) -> Option<Kind> {
        Some(match code {
            1 => Kind::Submit,
            2 => Kind::PartialCancel,
            3 => Kind::Delete,
            4 => Kind::Execute,
            5 => Kind::ExecuteHidden,
            6 => Kind::Cross,
            7 => Kind::Halt,
            _ => return None,
        })
    }
}

/// One line of the message file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// Nanoseconds after midnight.
    pub time_ns: u64,
    /// What happened.
    pub kind: Kind,
    /// The order's reference number (0 for hidden executions and halts).
    pub id: u64,
    /// Shares.
    pub size: i64,
    /// Dollars x 10,000.
    pub price: i64,
    /// 1 buy, -1 sell (for executions: the resting order's side).
    pub direction: i8,
}

/// The message file and the book file of one day, row `i` of the book being the state
/// after message `i`.
#[derive(Clone, Debug)]
pub struct Day {
    /// Base name of the message file inside the zip.
    pub name: String,
    /// Levels per side in the book file.
    pub levels: usize,
    /// The messages, in file order.
    pub messages: Vec<Message>,
    /// The book rows, flat: `4 * levels` numbers per row (ask price, ask size, bid price,
    /// bid size, level by level), prices in dollars x 10,000.
    book: Vec<i64>,
}

/// Why a LOBSTER folder could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// The folder does not exist.
    Missing(PathBuf),
    /// A file could not be read.
    Io(PathBuf, std::io::Error),
    /// A zip could not be opened or an entry not read.
    Zip(PathBuf, zip::result::ZipError),
    /// No zip in the folder holds a `*_message_N.csv` with its `*_orderbook_N.csv`.
    NoPair(PathBuf),
    /// A line does not parse.
    Parse {
        /// The file's name inside the zip.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// The two files do not have the same number of rows.
    RowCount {
        /// Messages.
        messages: usize,
        /// Book rows.
        rows: usize,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Missing(dir) => write!(f, "lobster data not found at {}", dir.display()),
            LoadError::Io(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            LoadError::Zip(path, e) => write!(f, "cannot unzip {}: {e}", path.display()),
            LoadError::NoPair(dir) => write!(
                f,
                "no zip in {} holds a *_message_N.csv with its *_orderbook_N.csv",
                dir.display()
            ),
            LoadError::Parse { file, line, what } => write!(f, "{file}:{line}: {what}"),
            LoadError::RowCount { messages, rows } => {
                write!(f, "{messages} messages but {rows} book rows")
            }
        }
    }
}

impl std::error::Error for LoadError {}

impl Day {
    /// Reads the first day found in the zips of `dir` (sorted by file name).
    pub fn load_dir(dir: &Path) -> Result<Day, LoadError> {
        if !dir.is_dir() {
            return Err(LoadError::Missing(dir.to_path_buf()));
        }
        let entries = std::fs::read_dir(dir).map_err(|e| LoadError::Io(dir.to_path_buf(), e))?;
        let mut zips: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "zip"))
            .collect();
        zips.sort();
        for path in zips {
            if let Some(day) = Day::load_zip(&path)? {
                return Ok(day);
            }
        }
        Err(LoadError::NoPair(dir.to_path_buf()))
    }

    /// Reads the first message/orderbook pair of a zip (by message file name); `None` if it
    /// holds none. The book file of `X_message_N.csv` is `X_orderbook_N.csv`.
    pub fn load_zip(path: &Path) -> Result<Option<Day>, LoadError> {
        let zip_error = |e| LoadError::Zip(path.to_path_buf(), e);
        let file = File::open(path).map_err(|e| LoadError::Io(path.to_path_buf(), e))?;
        let mut archive = zip::ZipArchive::new(file).map_err(zip_error)?;
        let mut names = archive
            .file_names()
            .map(|name| name.map(|n| n.into_owned()))
            .collect::<Result<Vec<String>, _>>()
            .map_err(zip_error)?;
        names.sort();
        let Some((message_name, book_name, levels)) = find_pair(&names) else {
            return Ok(None);
        };
        let messages = {
            let entry = archive.by_name(&message_name).map_err(zip_error)?;
            parse_messages(entry, &message_name)?
        };
        let book = {
            let entry = archive.by_name(&book_name).map_err(zip_error)?;
            parse_book(entry, &book_name, levels)?
        };
        let rows = book.len() / (4 * levels);
        if rows != messages.len() {
            return Err(LoadError::RowCount {
                messages: messages.len(),
                rows,
            });
        }
        Ok(Some(Day {
            name: message_name,
            levels,
            messages,
            book,
        }))
    }

    /// Number of book rows (= messages).
    pub fn rows(&self) -> usize {
        self.messages.len()
    }

    /// Level `level` (0 = best) of the asks after message `row`: `(price, size)` in
    /// LOBSTER units, `None` for an empty level.
    pub fn ask(&self, row: usize, level: usize) -> Option<(i64, i64)> {
        self.level(row, level, 0)
    }

    /// Level `level` (0 = best) of the bids after message `row`, like [`Day::ask`].
    pub fn bid(&self, row: usize, level: usize) -> Option<(i64, i64)> {
        self.level(row, level, 2)
    }

    fn level(&self, row: usize, level: usize, offset: usize) -> Option<(i64, i64)> {
        assert!(level < self.levels, "level {level} of {}", self.levels);
        let at = row * 4 * self.levels + 4 * level + offset;
        let (price, size) = (self.book[at], self.book[at + 1]);
        (size != 0 && price.abs() != EMPTY_ASK_PRICE).then_some((price, size))
    }
}

/// The first `X_message_N.csv` in `names` whose `X_orderbook_N.csv` is there too, with N.
fn find_pair(names: &[String]) -> Option<(String, String, usize)> {
    names.iter().find_map(|name| {
        let stem = name.strip_suffix(".csv")?;
        let (prefix, levels) = stem.rsplit_once("_message_")?;
        let levels: usize = levels.parse().ok().filter(|&n| n > 0)?;
        let book = format!("{prefix}_orderbook_{levels}.csv");
        names.contains(&book).then(|| (name.clone(), book, levels))
    })
}

/// Integer fields of one CSV line, into `fields` (cleared first).
fn split_ints(line: &str, fields: &mut Vec<i64>) -> Result<(), String> {
    fields.clear();
    for field in line.trim_end().split(',') {
        let value = field
            .parse::<i64>()
            .map_err(|_| format!("not an integer: {field:?}"))?;
        fields.push(value);
    }
    Ok(())
}

/// Seconds after midnight with up to 9 decimals, as nanoseconds (exact, no float).
fn parse_time_ns(text: &str) -> Option<u64> {
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: u64 = seconds.parse().ok()?;
    let fraction: u64 = format!("{fraction:0<9}").parse().ok()?;
    seconds.checked_mul(1_000_000_000)?.checked_add(fraction)
}

fn parse_message(line: &str, fields: &mut Vec<i64>) -> Result<Message, String> {
    let (time, rest) = line.split_once(',').ok_or("no time field")?;
    let time_ns = parse_time_ns(time).ok_or_else(|| format!("bad time {time:?}"))?;
    split_ints(rest, fields)?;
    let &[kind, id, size, price, direction] = fields.as_slice() else {
        return Err(format!("{} fields, expected 6", fields.len() + 1));
    };
    Ok(Message {
        time_ns,
        kind: Kind::from_code(kind).ok_or_else(|| format!("unknown type {kind}"))?,
        id: u64::try_from(id).map_err(|_| format!("negative id {id}"))?,
        size,
        price,
        direction: match direction {
            1 => 1,
            -1 => -1,
            _ => return Err(format!("direction {direction}")),
        },
    })
}

fn parse_messages(reader: impl Read, file: &str) -> Result<Vec<Message>, LoadError> {
    let mut messages = Vec::new();
    let mut fields = Vec::with_capacity(8);
    for_each_line(reader, file, |line| {
        messages.push(parse_message(line, &mut fields)?);
        Ok(())
    })?;
    Ok(messages)
}

fn parse_book(reader: impl Read, file: &str, levels: usize) -> Result<Vec<i64>, LoadError> {
    let mut book = Vec::new();
    let mut fields = Vec::with_capacity(4 * levels);
    for_each_line(reader, file, |line| {
        split_ints(line, &mut fields)?;
        if fields.len() != 4 * levels {
            return Err(format!("{} fields, expected {}", fields.len(), 4 * levels));
        }
        book.extend_from_slice(&fields);
        Ok(())
    })?;
    Ok(book)
}

/// Calls `each` on every non-empty line; a failure becomes a [`LoadError::Parse`].
fn for_each_line(
    reader: impl Read,
    file: &str,
    mut each: impl FnMut(&str) -> Result<(), String>,
) -> Result<(), LoadError> {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        number += 1;
        let read = reader.read_line(&mut line).map_err(|e| LoadError::Parse {
            file: file.to_string(),
            line: number,
            what: e.to_string(),
        })?;
        if read == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        each(&line).map_err(|what| LoadError::Parse {
            file: file.to_string(),
            line: number,
            what,
        })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_exactly() {
        assert_eq!(parse_time_ns("34200.015105074"), Some(34_200_015_105_074));
        assert_eq!(parse_time_ns("34200.0599"), Some(34_200_059_900_000));
        assert_eq!(parse_time_ns("36023"), Some(36_023_000_000_000));
        assert_eq!(parse_time_ns("1.0123456789"), None);
        assert_eq!(parse_time_ns("x.1"), None);
    }

    #[test]
    fn messages_parse_and_bad_lines_are_named() {
        let text = "34200.1,1,7,100,5794000,1\n34200.2,7,0,0,-1,-1\n";
        let messages = parse_messages(text.as_bytes(), "m.csv").expect("parses");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].kind, Kind::Submit);
        assert_eq!((messages[0].id, messages[0].size), (7, 100));
        assert_eq!((messages[0].price, messages[0].direction), (5_794_000, 1));
        assert_eq!(messages[1].kind, Kind::Halt);
        let bad = parse_messages("1.0,9,1,1,1,1\n".as_bytes(), "m.csv").unwrap_err();
        assert_eq!(bad.to_string(), "m.csv:1: unknown type 9");
        let short = parse_messages("1.0,1,1,1\n".as_bytes(), "m.csv").unwrap_err();
        assert!(short.to_string().contains("4 fields"), "{short}");
    }

    #[test]
    fn book_rows_read_levels_and_empty_markers() {
        let row = "5802300,100,5794000,496,9999999999,0,-9999999999,0\n";
        let day = Day {
            name: "x".into(),
            levels: 2,
            messages: vec![],
            book: parse_book(row.as_bytes(), "b.csv", 2).expect("parses"),
        };
        assert_eq!(day.ask(0, 0), Some((5_802_300, 100)));
        assert_eq!(day.bid(0, 0), Some((5_794_000, 496)));
        assert_eq!(day.ask(0, 1), None);
        assert_eq!(day.bid(0, 1), None);
        assert!(parse_book("1,2,3\n".as_bytes(), "b.csv", 2).is_err());
    }

    #[test]
    fn pairs_message_and_book_files_by_name() {
        let names: Vec<String> = [
            "LOBSTER_SampleFiles_ReadMe.txt",
            "GOOG_2012-06-21_34200000_57600000_message_10.csv",
            "GOOG_2012-06-21_34200000_57600000_orderbook_10.csv",
            "AAPL_2012-06-21_34200000_57600000_message_5.csv",
        ]
        .map(String::from)
        .to_vec();
        let (message, book, levels) = find_pair(&names).expect("GOOG pairs");
        assert_eq!(message, "GOOG_2012-06-21_34200000_57600000_message_10.csv");
        assert_eq!(book, "GOOG_2012-06-21_34200000_57600000_orderbook_10.csv");
        assert_eq!(levels, 10);
        assert!(find_pair(&names[3..]).is_none(), "AAPL has no book file");
    }

    #[test]
    fn a_missing_folder_is_named() {
        let error = Day::load_dir(Path::new("/nonexistent/lobster")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "lobster data not found at /nonexistent/lobster"
        );
    }
}
