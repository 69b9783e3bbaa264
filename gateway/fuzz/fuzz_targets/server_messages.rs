//! Arbitrary bytes into the client library's decoder and L2 book: never a panic.
#![no_main]

use gateway::client::{decode_server_message, L2Book};
use gateway::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut book = L2Book::new(0);
    let mut at = 0;
    while at < data.len() {
        match wire::next_frame(&data[at..]) {
            Ok(Some(length)) => {
                if let Ok(message) = decode_server_message(&data[at..at + length]) {
                    let _ = book.apply(&message);
                }
                at += length;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
