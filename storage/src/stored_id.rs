//! How an event id is stored: the UUIDs clients generate as their 16 bytes,
//! any other id as its text.
//!
//! Every event carries an id, stored twice (in the event and in the stream's
//! event-id index). Clients give each event a UUID, which as text is 36
//! bytes of which 16 carry information; zstd cannot shrink hex text much. So
//! an id that is a UUID in its canonical text form (lowercase, hyphenated) is
//! stored as `0x00 ++ 16 bytes`, and turned back into exactly that text when
//! read; any other id is stored as `0x01 ++ its UTF-8 bytes`. The leading
//! byte keeps the two forms apart: no text id can be read back as a UUID.

use uuid::Uuid;

const UUID: u8 = 0x00;
const TEXT: u8 = 0x01;

/// Appends the stored form of `id` to `out`.
pub(crate) fn encode_into(id: &str, out: &mut Vec<u8>) {
    match canonical_uuid(id) {
        Some(uuid) => {
            out.push(UUID);
            out.extend_from_slice(uuid.as_bytes());
        }
        None => {
            out.push(TEXT);
            out.extend_from_slice(id.as_bytes());
        }
    }
}

/// The stored form of `id`.
#[cfg(test)]
pub(crate) fn encode(id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + id.len().min(16));
    encode_into(id, &mut out);
    out
}

/// The id whose stored form is `stored`, or `None` if it is malformed.
pub(crate) fn decode(stored: &[u8]) -> Option<String> {
    match stored.split_first()? {
        (&UUID, bytes) => {
            let uuid = Uuid::from_slice(bytes).ok()?;
            Some(uuid.hyphenated().to_string())
        }
        (&TEXT, text) => String::from_utf8(text.to_vec()).ok(),
        _ => None,
    }
}

/// `id` as a UUID if it is one in canonical text form, which is then what
/// [`decode`] gives back. At 36 bytes the parser takes only the hyphenated
/// form, with its hex digits in either case: with none in uppercase, what
/// it took is the canonical text, without writing the parsed UUID back out
/// to compare (a tenth of what storing an id cost, the parse most of the
/// rest: bench/README.md, session 27).
fn canonical_uuid(id: &str) -> Option<Uuid> {
    if id.len() != uuid::fmt::Hyphenated::LENGTH || id.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Uuid::try_parse(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canonical_uuid_is_stored_in_17_bytes_and_read_back_as_written() {
        let v7 = Uuid::now_v7().hyphenated().to_string();
        for id in [
            v7.as_str(),
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "01234567-89ab-cdef-0123-456789abcdef",
        ] {
            let stored = encode(id);
            assert_eq!(stored.len(), 17, "{id}");
            assert_eq!(
                stored[1..],
                *Uuid::parse_str(id).expect("a UUID").as_bytes()
            );
            assert_eq!(decode(&stored).as_deref(), Some(id));
        }
    }

    #[test]
    fn other_ids_are_stored_as_text_and_read_back_as_written() {
        let upper = Uuid::now_v7().hyphenated().to_string().to_uppercase();
        let simple = Uuid::now_v7().simple().to_string();
        for id in [
            "e1",
            "",
            "order-7/1",
            upper.as_str(),
            simple.as_str(),
            "ünï",
            // 36 bytes, nearly canonical: an uppercase hex digit, one that is
            // not hex, a hyphen moved, a hyphen replaced.
            "0190a5e4-0000-7000-8000-00000000000A",
            "0190a5e4-0000-7000-8000-00000000000g",
            "0190a5e40-000-7000-8000-000000000001",
            "0190a5e4-0000-7000-8000+000000000001",
        ] {
            let stored = encode(id);
            assert_eq!(stored.first(), Some(&TEXT), "{id}");
            assert_eq!(decode(&stored).as_deref(), Some(id));
        }
    }

    #[test]
    fn a_text_id_never_reads_back_as_a_uuid() {
        // 16 bytes of text that are also the bytes of a UUID.
        let text = "abcdefghijklmnop";
        let uuid = Uuid::from_slice(text.as_bytes())
            .expect("16 bytes")
            .to_string();
        assert_eq!(encode(text)[1..], encode(&uuid)[1..]);
        assert_ne!(encode(text), encode(&uuid));
        assert_eq!(decode(&encode(text)).as_deref(), Some(text));
        assert_eq!(decode(&encode(&uuid)), Some(uuid));
    }

    #[test]
    fn malformed_stored_ids_are_refused() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[UUID, 1, 2, 3]), None);
        assert_eq!(decode(&[7, b'a']), None);
        assert_eq!(decode(&[TEXT, 0xFF]), None);
    }
}
