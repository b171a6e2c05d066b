//! Fuzzes the one place client frames are parsed: any bytes must give a frame
//! or an error, never a panic, and an accepted `send` obeys the body rules.
#![no_main]

use chat_shared::protocol::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ClientFrame::Send { body, .. }) = ClientFrame::parse(text, 4000) {
            let b = body.as_str();
            assert!(!b.trim().is_empty());
            assert!(b.chars().count() <= 4000);
            assert!(!b.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        }
    }
});
