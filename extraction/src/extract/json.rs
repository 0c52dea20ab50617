//! JSON: flattened to `path: value` lines, streamed in document order.

use std::fmt::Write as _;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::{ExtractError, Section};

/// Flattens to lines `path.to.key: value` (array items as `path[0]`), in
/// document order. A top-level array's objects each become a block of lines
/// with paths relative to the element, separated by an empty line.
pub(super) fn json_sections(text: &str) -> Result<Vec<Section>, ExtractError> {
    let mut flat = Flattener {
        out: String::with_capacity(text.len()),
        path: String::new(),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    JsonNode {
        flat: &mut flat,
        top: true,
        index: None,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| ExtractError::Json(e.to_string()))?;
    Ok(vec![Section {
        text: flat.out.trim_end().to_owned(),
        page: None,
        heading: None,
    }])
}

struct Flattener {
    out: String,
    path: String,
}

impl Flattener {
    fn scalar(&mut self, value: &str) {
        if !self.path.is_empty() {
            self.out.push_str(&self.path);
            self.out.push_str(": ");
        }
        self.out.push_str(value);
        self.out.push('\n');
    }
}

/// Deserializes one JSON value straight into lines (no `Value` tree, so key
/// order is kept). `index` is a pending `[i]` path step for top-level array
/// items, applied unless the item is an object (then it is a block).
struct JsonNode<'a> {
    flat: &'a mut Flattener,
    top: bool,
    index: Option<usize>,
}

impl JsonNode<'_> {
    fn scalar(self, value: &str) {
        let len = self.flat.path.len();
        if let Some(i) = self.index {
            let _ = write!(self.flat.path, "[{i}]");
        }
        self.flat.scalar(value);
        self.flat.path.truncate(len);
    }
}

impl<'de> DeserializeSeed<'de> for JsonNode<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonNode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.scalar(if v { "true" } else { "false" });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.scalar(&v.to_string());
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.scalar(&v.to_string());
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        match serde_json::Number::from_f64(v) {
            Some(n) => self.scalar(&n.to_string()),
            None => self.scalar(&v.to_string()),
        }
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.scalar(v);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.scalar("null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let len = self.flat.path.len();
        if let Some(i) = self.index {
            let _ = write!(self.flat.path, "[{i}]");
        }
        let base = self.flat.path.len();
        let mut i = 0usize;
        loop {
            let item = if self.top {
                seq.next_element_seed(JsonNode {
                    flat: &mut *self.flat,
                    top: false,
                    index: Some(i),
                })?
            } else {
                let _ = write!(self.flat.path, "[{i}]");
                let item = seq.next_element_seed(JsonNode {
                    flat: &mut *self.flat,
                    top: false,
                    index: None,
                })?;
                self.flat.path.truncate(base);
                item
            };
            if item.is_none() {
                break;
            }
            i += 1;
        }
        self.flat.path.truncate(len);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // A top-level array item that is an object is a block: paths are
        // relative to it, and an empty line closes it.
        let block = self.index.is_some();
        let base = self.flat.path.len();
        while map
            .next_key_seed(JsonKey {
                path: &mut self.flat.path,
            })?
            .is_some()
        {
            map.next_value_seed(JsonNode {
                flat: &mut *self.flat,
                top: false,
                index: None,
            })?;
            self.flat.path.truncate(base);
        }
        if block && !self.flat.out.is_empty() && !self.flat.out.ends_with("\n\n") {
            self.flat.out.push('\n');
        }
        Ok(())
    }
}

/// Appends `.key` (or `key` at the root) to the path.
struct JsonKey<'a> {
    path: &'a mut String,
}

impl<'de> DeserializeSeed<'de> for JsonKey<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for JsonKey<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::extract::tests::sections;
    use crate::extract::{ExtractError, Format, extract};

    #[test]
    fn json_is_flattened_in_document_order() {
        let json = r#"{"title": "Doc", "meta": {"tags": ["a", "b"], "n": 1.5, "ok": true, "none": null},
                       "items": [{"id": 1}, [2, 3]], "empty": {}}"#;
        let s = sections(json.as_bytes(), Format::Json);
        assert_eq!(
            s[0].text,
            "title: Doc\nmeta.tags[0]: a\nmeta.tags[1]: b\nmeta.n: 1.5\nmeta.ok: true\n\
             meta.none: null\nitems[0].id: 1\nitems[1][0]: 2\nitems[1][1]: 3"
        );
    }

    #[test]
    fn json_top_level_array_of_objects_gives_blocks() {
        let json = r#"[{"name": "Ann", "address": {"city": "Oslo"}}, {"name": "Bo"}, 7]"#;
        let s = sections(json.as_bytes(), Format::Json);
        assert_eq!(
            s[0].text,
            "name: Ann\naddress.city: Oslo\n\nname: Bo\n\n[2]: 7"
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        for bad in [&b"{\"a\": }"[..], b"{\"a\": 1} trailing", b"[1, 2"] {
            let err = extract(bad, Format::Json).unwrap_err();
            assert!(matches!(err, ExtractError::Json(_)), "{err}");
            assert!(err.to_string().starts_with("the JSON is invalid: "));
        }
        let deep = "[".repeat(10_000);
        assert!(matches!(
            extract(deep.as_bytes(), Format::Json),
            Err(ExtractError::Json(_))
        ));
    }
}
