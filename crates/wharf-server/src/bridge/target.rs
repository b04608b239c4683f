//! Request targets with raw bytes 0x80-0xFF, as curl sends what was typed and nginx forwards
//! what came. PEP 3333 wants them as sent (latin-1 in the environ), but hyper keeps the target
//! in an `http::Uri`, which must be UTF-8, and refuses a request whose target is not (a raw
//! 0xFF got `400`). So the I/O side escapes every high byte of a request line into one code
//! point of Unicode's last private-use block, U+10FF80-U+10FFFF (valid UTF-8, accepted by
//! both parsers), before hyper reads it, and everything that reads the target back restores
//! the bytes. Every high byte is escaped, so an escape code point in a target is always one:
//! nothing a client sends can pass for one.

use std::borrow::Cow;

/// The first byte of every escape's UTF-8 form (and of no other code point in a target:
/// U+100000-U+10FFFF start with 0xF4, and only escapes are sent in that range).
const LEAD: u8 = 0xF4;

/// Appends the escape of the high byte `byte`.
pub(crate) fn escape(byte: u8, out: &mut Vec<u8>) {
    let c = char::from_u32(0x10_FF00 + u32::from(byte)).unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut utf8 = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
}

/// The target's bytes as the client sent them.
pub(crate) fn raw(target: &str) -> Cow<'_, [u8]> {
    if !target.as_bytes().contains(&LEAD) {
        return Cow::Borrowed(target.as_bytes());
    }
    let mut out = Vec::with_capacity(target.len());
    for c in target.chars() {
        match u32::from(c).checked_sub(0x10_FF00) {
            Some(byte @ 0x80..=0xFF) => out.push(byte as u8),
            _ => out.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
        }
    }
    Cow::Owned(out)
}

/// The target as text for log lines and trace attributes: the raw bytes as UTF-8 where they
/// are, else with replacement characters.
pub(crate) fn display(target: &str) -> Cow<'_, str> {
    match raw(target) {
        Cow::Borrowed(_) => Cow::Borrowed(target),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_high_byte_escapes_to_valid_utf8_and_back() {
        for byte in 0x80..=0xFFu8 {
            let mut escaped = b"/a".to_vec();
            escape(byte, &mut escaped);
            escaped.extend_from_slice(b"?q=");
            escape(byte, &mut escaped);
            let text = std::str::from_utf8(&escaped).expect("valid UTF-8");
            assert!(http::Uri::try_from(text).is_ok(), "hyper's Uri refuses the escape of {byte:#x}");
            assert_eq!(raw(text).as_ref(), [b'/', b'a', byte, b'?', b'q', b'=', byte]);
        }
    }

    #[test]
    fn plain_targets_are_borrowed() {
        assert!(matches!(raw("/plain?x=é"), Cow::Borrowed(_)));
        let mut escaped = b"/caf".to_vec();
        for byte in "é".bytes() {
            escape(byte, &mut escaped);
        }
        let text = std::str::from_utf8(&escaped).expect("utf8");
        assert_eq!(display(text), "/café");
    }
}
