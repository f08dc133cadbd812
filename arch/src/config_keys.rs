//! Reading configs keyed like HF's `config.json`, by serde.
//!
//! Every architecture's config struct is deserialized from a JSON object of `config.json` keys.
//! Its serde defaults are transformers' defaults for that config class, and they are the only
//! definition of each default: an HF `config.json` without a key ([`ConfigKeys::deserialize`]
//! from `from_hf_config`) and a recipe without the key (the trainer builds the same object from
//! the recipe's keys and calls the config's `from_keys`) get the same value.
//!
//! What serde cannot say sits in the readers, before deserializing: keys that are derived from
//! other keys when absent (`head_dim`, `time_step_rank: "auto"`), values that must be refused
//! because kiln does not implement them (another activation, RoPE scaling), and kiln's own keys
//! (`kiln_layer_sharing`).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ArchError;

/// A `config.json` object on its way to a config struct. `null` values are dropped when it is
/// made: transformers writes `null` for "use the default".
pub struct ConfigKeys(Map<String, Value>);

impl ConfigKeys {
    /// The keys of `cfg`, which must be a JSON object.
    pub fn object(cfg: &Value) -> Result<Self, ArchError> {
        let map = cfg.as_object().ok_or_else(|| ArchError::InvalidConfig {
            key: "<root>".into(),
            reason: "config.json must be a JSON object".into(),
        })?;
        Ok(Self::new(map.clone()))
    }

    /// The keys of `map` (its `null` values dropped).
    pub fn new(mut map: Map<String, Value>) -> Self {
        map.retain(|_, v| !v.is_null());
        Self(map)
    }

    /// The value of `key`, unless absent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Sets `key` (replacing what was there).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(key.to_string(), value.into());
    }

    /// Removes `key`, returning its value.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key)
    }

    /// "expected {what}, got {v}" for `key`.
    pub fn invalid(key: &str, what: &str, v: &Value) -> ArchError {
        ArchError::InvalidConfig {
            key: key.into(),
            reason: format!("expected {what}, got {v}"),
        }
    }

    /// A non-negative integer, `None` when absent.
    pub fn usize(&self, key: &str) -> Result<Option<usize>, ArchError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| Self::invalid(key, "a non-negative integer", v))
            })
            .transpose()
    }

    /// A non-negative integer that must be present.
    pub fn required(&self, key: &str) -> Result<usize, ArchError> {
        self.usize(key)?
            .ok_or_else(|| ArchError::MissingConfigKey { key: key.into() })
    }

    /// A boolean, `None` when absent.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ArchError> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| Self::invalid(key, "true or false", v))
            })
            .transpose()
    }

    /// Unsupported unless `model_type` is the string `expected`; missing when absent.
    pub fn expect_model_type(&self, expected: &str) -> Result<(), ArchError> {
        match self.get("model_type") {
            Some(Value::String(t)) if t == expected => Ok(()),
            Some(v) => Err(unsupported(
                "model_type",
                v,
                &format!("expected \"{expected}\""),
            )),
            None => Err(ArchError::MissingConfigKey {
                key: "model_type".into(),
            }),
        }
    }

    /// Unsupported (with `reason`) when `hidden_act` is present and not `"silu"`.
    pub fn expect_silu(&self, reason: &str) -> Result<(), ArchError> {
        match self.get("hidden_act") {
            Some(v) if v.as_str() != Some("silu") => Err(unsupported("hidden_act", v, reason)),
            _ => Ok(()),
        }
    }

    /// An integer that HF may also write as `"auto"` (meaning `auto`) or leave out (the same).
    pub fn resolve_auto(&mut self, key: &str, auto: usize) -> Result<(), ArchError> {
        match self.get(key) {
            None => self.set(key, auto),
            Some(Value::String(s)) if s == "auto" => self.set(key, auto),
            Some(_) => {
                self.usize(key)?;
            }
        }
        Ok(())
    }

    /// A positive integer that HF may write as a float (`expand: 2.0`); left alone when absent.
    pub fn integral(&mut self, key: &str) -> Result<(), ArchError> {
        if let Some(v) = self.get(key) {
            match v.as_f64() {
                Some(x) if x > 0.0 && x.fract() == 0.0 => self.set(key, x as usize),
                _ => return Err(Self::invalid(key, "a positive integer", v)),
            }
        }
        Ok(())
    }

    /// kiln's own key `kiln_key` becomes the config field `field`; without it, the HF key
    /// `hf_key` is read, if any (kiln's exports write both when transformers would act on the HF
    /// key differently). A key named like the field itself is not read.
    pub fn kiln_key(&mut self, kiln_key: &str, field: &str, hf_key: Option<&str>) {
        let hf_value = hf_key.and_then(|k| self.take(k));
        let value = self.take(kiln_key).or(hf_value);
        self.take(field);
        if let Some(v) = value {
            self.set(field, v);
        }
    }

    /// The config struct: absent keys take its serde defaults (transformers' defaults); a key of
    /// the wrong type is an error naming the key. Keys the struct does not know are dropped first
    /// (a `config.json` carries many that only concern PyTorch; the structs refuse unknown keys
    /// in their own serde form, where an unknown key is a typo).
    pub fn deserialize<T: DeserializeOwned>(mut self, required: &[&str]) -> Result<T, ArchError> {
        for key in required {
            self.required_present(key)?;
        }
        let fields = struct_fields::<T>();
        self.0.retain(|key, _| fields.contains(&key.as_str()));
        serde_path_to_error::deserialize(Value::Object(self.0)).map_err(|e| {
            ArchError::InvalidConfig {
                key: e.path().to_string(),
                reason: e.inner().to_string(),
            }
        })
    }

    fn required_present(&self, key: &str) -> Result<(), ArchError> {
        match self.get(key) {
            Some(_) => Ok(()),
            None => Err(ArchError::MissingConfigKey { key: key.into() }),
        }
    }
}

/// The field names of the struct `T` deserializes as, asked from its `Deserialize` impl: a
/// deserializer that only records what `deserialize_struct` is called with.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    use serde::forward_to_deserialize_any;

    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("fields recorded"))
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// [`ArchError::UnsupportedConfig`] for `key` holding `value`.
pub fn unsupported(key: &str, value: &Value, reason: &str) -> ArchError {
    ArchError::UnsupportedConfig {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}
