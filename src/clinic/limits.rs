//! Bounds on everything a peer can push, each checked before the allocation it would cause: the
//! body on the wire, the gzip-decompressed size (the decoder is read through a cap, never
//! decompressed first and measured after), and — on the raw bytes, in one streaming pass that
//! allocates nothing per value — nesting depth, string lengths and the number of JSON values, so
//! the parsed tree (`serde_json::Value`, tens of bytes per value) is bounded before it is built.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use std::time::Duration;

/// The clinic's bounds. [`Limits::default`] is what `vitals-clinic serve` uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request body on the wire (compressed or not).
    pub max_body: usize,
    /// JSON after gzip decompression.
    pub max_json: usize,
    /// Nesting depth of objects and arrays.
    pub max_depth: usize,
    /// Total JSON values (objects, arrays, strings, numbers …) in one request.
    pub max_values: usize,
    /// Length of one string (keys included), in bytes.
    pub max_string: usize,
    /// Requests reading or processing a body at once (others wait their turn, then 503).
    pub max_inflight: usize,
    /// Requests of one hub in flight at once (more: 429).
    pub per_hub_inflight: usize,
    /// Per hub: sustained requests per second and burst (more: 429 with Retry-After).
    pub rate_per_sec: f64,
    pub rate_burst: f64,
    /// Open connections in all; beyond, new connections are closed at once (load shedding).
    pub max_connections: usize,
    /// Connections still in the TLS handshake; beyond, the oldest is dropped for the newest.
    pub max_handshakes: usize,
    /// Authenticated connections of one hub; beyond, the new one is closed after the handshake.
    pub per_hub_connections: usize,
    /// TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A request's body must arrive within this.
    pub body_timeout: Duration,
    /// A connection with no traffic and no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// How long a request waits for a processing slot before a 503.
    pub queue_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body: 8 << 20,
            max_json: 8 << 20,
            max_depth: 32,
            max_values: 200_000,
            max_string: 1 << 20,
            max_inflight: 4,
            per_hub_inflight: 2,
            rate_per_sec: 50.0,
            rate_burst: 100.0,
            max_connections: 768,
            max_handshakes: 128,
            per_hub_connections: 8,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            queue_timeout: Duration::from_secs(20),
        }
    }
}

/// Decompress gzip through a cap: at most `max` bytes are ever produced.
pub fn gunzip_capped(body: &[u8], max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
    flate2::read::GzDecoder::new(body)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip body: {e}"))?;
    if out.len() > max {
        return Err(format!(
            "decompressed body larger than {max} bytes; send smaller batches"
        ));
    }
    Ok(out)
}

/// Check depth, string lengths and value count on the raw JSON, before it is parsed into a tree.
pub fn check_json(bytes: &[u8], lim: &Limits) -> Result<(), String> {
    let count = Cell::new(0usize);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Check {
        count: &count,
        lim,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| format!("request body: {e}"))
}

#[derive(Clone, Copy)]
struct Check<'a> {
    count: &'a Cell<usize>,
    lim: &'a Limits,
    depth: usize,
}

impl Check<'_> {
    fn bump<E: serde::de::Error>(&self) -> Result<(), E> {
        let n = self.count.get() + 1;
        self.count.set(n);
        if n > self.lim.max_values {
            return Err(E::custom(format!(
                "more than {} JSON values; send smaller batches",
                self.lim.max_values
            )));
        }
        Ok(())
    }
    fn string<E: serde::de::Error>(&self, s: &str) -> Result<(), E> {
        if s.len() > self.lim.max_string {
            return Err(E::custom(format!(
                "a string of {} bytes; at most {}",
                s.len(),
                self.lim.max_string
            )));
        }
        self.bump()
    }
    fn deeper<E: serde::de::Error>(&self) -> Result<Check<'_>, E> {
        if self.depth + 1 > self.lim.max_depth {
            return Err(E::custom(format!(
                "nested deeper than {}",
                self.lim.max_depth
            )));
        }
        self.bump::<E>()?;
        Ok(Check {
            depth: self.depth + 1,
            ..*self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Keys: checked for length like any string.
struct Key<'a>(Check<'a>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self.0)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.bump()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.bump()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.bump()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.bump()
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        self.string(s)
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<(), E> {
        self.string(s)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.bump()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.bump()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while map.next_key_seed(Key(inner))?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// A per-hub token bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    pub fn new(burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            at: std::time::Instant::now(),
        }
    }
    /// Take one token; `Err(seconds)` to wait when empty.
    pub fn take(&mut self, rate: f64, burst: f64) -> Result<(), u64> {
        let now = std::time::Instant::now();
        let dt = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(1)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn raw_checks_refuse_before_parsing() {
        let lim = Limits {
            max_values: 100,
            max_depth: 4,
            max_string: 10,
            ..Limits::default()
        };
        assert!(check_json(br#"{"a":[1,2,{"b":"short"}]}"#, &lim).is_ok());
        let many = format!("[{}0]", "0,".repeat(200));
        assert!(check_json(many.as_bytes(), &lim)
            .unwrap_err()
            .contains("JSON values"));
        assert!(check_json(b"[[[[[1]]]]]", &lim)
            .unwrap_err()
            .contains("nested"));
        assert!(check_json(br#"{"a":"0123456789abc"}"#, &lim)
            .unwrap_err()
            .contains("string"));
        assert!(check_json(br#"{"0123456789abc":1}"#, &lim)
            .unwrap_err()
            .contains("string"));
        assert!(check_json(br#"["esc\"aped\u0041bcdefghij"]"#, &lim).is_err());
        assert!(check_json(b"[1] x", &lim).is_err());
    }

    #[test]
    fn gzip_is_read_through_a_cap() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 4 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(gz.len() < 64 << 10);
        assert!(gunzip_capped(&gz, 1 << 20).unwrap_err().contains("larger"));
        assert_eq!(gunzip_capped(&gz, 8 << 20).unwrap().len(), 4 << 20);
    }
}
