//! An event read as the document `{"type": T, "data": D}`, the shape the
//! seed's events take (`#[serde(tag = "type", content = "data")]`), from
//! its type and the JSON bytes of its data where they lie, without writing
//! that document out.
//!
//! A replay folds every event of a stream this way. Writing each event's
//! document into a fresh buffer (the type escaped as a JSON string, the data
//! copied after it) and parsing it back took a tenth of a cold replay's CPU
//! (bench/README.md, session 29); here serde sees a map of two entries whose
//! `type` is the stored string and whose `data` is parsed from the stored
//! bytes directly.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde_json::de::SliceRead;

/// `E` from the event of type `event_type` whose data is the JSON `data`:
/// what `serde_json::from_slice` makes of `{"type": event_type, "data": data}`.
pub(crate) fn from_parts<E: DeserializeOwned>(
    event_type: &str,
    data: &[u8],
) -> serde_json::Result<E> {
    let mut data = serde_json::Deserializer::from_slice(data);
    let event = E::deserialize(Parts {
        event_type,
        data: &mut data,
    })?;
    // Nothing but whitespace may follow the data.
    data.end()?;
    Ok(event)
}

/// The document, as a deserializer that only ever presents it as a map.
struct Parts<'a, 'de> {
    event_type: &'a str,
    data: &'a mut serde_json::Deserializer<SliceRead<'de>>,
}

impl<'de> de::Deserializer<'de> for Parts<'_, 'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        visitor.visit_map(Entries {
            parts: self,
            next: Entry::Type,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// The entry of the document a map access reads next.
#[derive(Clone, Copy)]
enum Entry {
    Type,
    Data,
    Done,
}

struct Entries<'a, 'de> {
    parts: Parts<'a, 'de>,
    next: Entry,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> serde_json::Result<Option<K::Value>> {
        let key = match self.next {
            Entry::Type => "type",
            Entry::Data => "data",
            Entry::Done => return Ok(None),
        };
        seed.deserialize(IntoDeserializer::<serde_json::Error>::into_deserializer(
            key,
        ))
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> serde_json::Result<V::Value> {
        match self.next {
            Entry::Type => {
                self.next = Entry::Data;
                seed.deserialize(IntoDeserializer::<serde_json::Error>::into_deserializer(
                    self.parts.event_type,
                ))
            }
            Entry::Data => {
                self.next = Entry::Done;
                seed.deserialize(&mut *self.parts.data)
            }
            Entry::Done => Err(de::Error::custom("an event has only `type` and `data`")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(match self.next {
            Entry::Type => 2,
            Entry::Data => 1,
            Entry::Done => 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "type", content = "data", rename_all = "SCREAMING_SNAKE_CASE")]
    enum Adjacent {
        Opened {},
        Deposited { amount: f64 },
        Renamed(String),
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
    enum Internal {
        Opened { data: Value },
    }

    /// What the document written out and parsed gives.
    fn via_document<E: DeserializeOwned>(event_type: &str, data: &str) -> serde_json::Result<E> {
        serde_json::from_str(&format!(
            "{{\"type\":{},\"data\":{data}}}",
            serde_json::to_string(event_type).unwrap()
        ))
    }

    #[test]
    fn reads_what_the_written_document_reads() {
        for (event_type, data) in [
            ("OPENED", "{}"),
            ("DEPOSITED", r#"{"amount": 12.5}"#),
            ("DEPOSITED", r#" {"amount":1} "#),
            ("RENAMED", r#""caf\u00e9 \"x\"""#),
        ] {
            let parts: Adjacent = from_parts(event_type, data.as_bytes()).unwrap();
            assert_eq!(
                parts,
                via_document(event_type, data).unwrap(),
                "{event_type} {data}"
            );
        }
        // Shapes other than adjacently tagged see the same two-entry map.
        let internal: Internal = from_parts("OPENED", br#"{"a":[1,2]}"#).unwrap();
        assert_eq!(
            internal,
            Internal::Opened {
                data: json!({"a": [1, 2]})
            }
        );
        let value: Value = from_parts("X", b"null").unwrap();
        assert_eq!(value, json!({"type": "X", "data": null}));
    }

    #[test]
    fn refuses_what_the_written_document_refuses() {
        for (event_type, data) in [
            ("UNKNOWN", "{}"),
            ("DEPOSITED", r#"{"amount": "x"}"#),
            ("DEPOSITED", ""),
            ("DEPOSITED", r#"{"amount": 1"#),
        ] {
            assert!(via_document::<Adjacent>(event_type, data).is_err());
            assert!(
                from_parts::<Adjacent>(event_type, data.as_bytes()).is_err(),
                "{event_type} {data}"
            );
        }
        // Data that would close the document early and add fields to it
        // is not JSON on its own.
        let injected = br#"{"amount":1}, "extra": {"#;
        assert!(from_parts::<Adjacent>("DEPOSITED", injected).is_err());
        assert!(from_parts::<Adjacent>("DEPOSITED", b"{\"amount\":1} x").is_err());
    }
}
