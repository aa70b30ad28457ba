//! JSON read the way AWS reads it: an object with the same key twice is refused.
//!
//! `serde_json` keeps the last of duplicate keys, so `{"countNumber":1000,"countNumber":1}`
//! reads as 1 and a second `"rules"` silently replaces the first: a document that ECR
//! (and EventBridge's own consumers) would refuse, or read differently, would be acted
//! on. Everything here builds a `serde_json::Value` through one visitor that refuses a
//! key already present in its object, and non-finite numbers (which JSON cannot hold and
//! `serde_json::Value` would turn into `null`, making a value look absent).
//!
//! The visitor works over any serde format ([`value_from`]): a YAML document read
//! through it is refused on duplicate keys too. Each key costs one map insert, so a
//! document with n keys is checked in O(n log n).

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Parses JSON text into `T`, refusing duplicate object keys anywhere in it.
///
/// # Errors
/// `serde_json`'s error, with line and column, for bad JSON, a duplicate key
/// (`duplicate key "rules" in an object`) or a value `T` does not accept.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    from_slice(text.as_bytes())
}

/// As [`from_str`], from bytes.
///
/// # Errors
/// As [`from_str`].
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = value_from(&mut deserializer)?;
    deserializer.end()?;
    serde_json::from_value(value)
}

/// Reads one value from any serde deserializer (JSON, YAML, ...) into a
/// `serde_json::Value`, refusing duplicate keys and non-finite numbers.
///
/// # Errors
/// The deserializer's own error type, with its position information.
pub fn value_from<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    StrictValue.deserialize(deserializer)
}

/// Builds a [`Value`] like `serde_json::Value`'s own `Deserialize`, but refuses what
/// that one lets through.
#[derive(Clone, Copy)]
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &"a finite number"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {key:?} in an object"
                )));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn reads_json_like_serde_json() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":18446744073709551615}"#;
        let strict: Value = from_str(text).unwrap();
        assert_eq!(strict, serde_json::from_str::<Value>(text).unwrap());
        #[derive(Debug, Deserialize, PartialEq)]
        struct Doc {
            c: u64,
        }
        assert_eq!(
            from_str::<Doc>(r#"{"c": 7, "d": 1}"#).unwrap(),
            Doc { c: 7 }
        );
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth_and_says_where() {
        // serde_json alone keeps the last one.
        let text = r#"{"countNumber":1000,"countNumber":1}"#;
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap()["countNumber"],
            1
        );
        let err = from_str::<Value>(text).unwrap_err().to_string();
        assert!(
            err.contains("duplicate key \"countNumber\"") && err.contains("line 1"),
            "{err}"
        );
        let nested = "{\"rules\":[{\"selection\":{\"a\":1,\n\"a\":1}}]}";
        let err = from_str::<Value>(nested).unwrap_err().to_string();
        assert!(
            err.contains("duplicate key \"a\"") && err.contains("line 2"),
            "{err}"
        );
        // The same key in different objects is fine.
        from_str::<Value>(r#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#).unwrap();
    }

    #[test]
    fn refuses_trailing_text() {
        assert!(from_str::<Value>("{} {}").is_err());
    }

    #[test]
    fn works_over_yaml_too() {
        let yaml = "a: 1\nb: [x, y]\na: 2\n";
        // serde_yaml_ng alone keeps the last one when it builds a serde_json::Value.
        let loose: Value = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(loose["a"], 2);
        let err = value_from(serde_yaml_ng::Deserializer::from_str(yaml))
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate key \"a\""), "{err}");
        let ok = value_from(serde_yaml_ng::Deserializer::from_str("a: 1\nb: [x, y]\n")).unwrap();
        assert_eq!(ok, serde_json::json!({"a": 1, "b": ["x", "y"]}));
        // `.inf` is a YAML float JSON cannot hold; serde_json::Value would make it null.
        let err = value_from(serde_yaml_ng::Deserializer::from_str("n: .inf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("finite number"), "{err}");
    }

    #[test]
    fn many_keys_are_checked_in_one_pass() {
        // 100,000 distinct keys, and the same with one duplicate at the very end.
        let body: Vec<String> = (0..100_000).map(|i| format!("\"k{i}\":{i}")).collect();
        let text = format!("{{{}}}", body.join(","));
        let v: Value = from_str(&text).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 100_000);
        let dup = format!("{{{},\"k0\":0}}", body.join(","));
        assert!(from_str::<Value>(&dup)
            .unwrap_err()
            .to_string()
            .contains("\"k0\""));
    }
}
