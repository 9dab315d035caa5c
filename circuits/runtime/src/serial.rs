//! Versioned, size-limited bytes for every key, ciphertext and answer.
//!
//! The format is tfhe-rs's safe serialization (`tfhe::safe_serialization`):
//! a header naming the type ([`Named::NAME`]) and the versioning scheme,
//! then the value in its versioned form (`tfhe-versionable`: every type,
//! ours and tfhe's core entities inside them, is written through an enum of
//! all its versions), bincode under an explicit size limit. A type that
//! changes gains a variant in its `…Versions` enum and an upgrade from the
//! previous one, so bytes written today load tomorrow
//! (`circuits/runtime/tests/golden.rs` holds committed bytes to that).
//!
//! Reading is strict: the byte count is checked against the caller's limit
//! before anything is parsed, the limit caps every allocation, trailing
//! bytes are refused, a panic inside a decoder becomes an error, and the
//! value is then checked against what it claims to be ([`Conformant`]).
//!
//! Legacy: release 0.1 wrote keys as `BFLD`, format 1, a kind string and
//! bincode of the same types. Key files in client key directories and in a
//! server's key store may still be in that form; [`Bytes::from_stored`]
//! reads them (and only files, never network messages). Everything written
//! now is versioned. The migration path: a legacy blob keeps its key id (the
//! SHA-256 of the bytes the client uploaded) and loads through the legacy
//! reader in this release; a release that drops that reader must first
//! re-encode stored legacy blobs in place.

use std::io::Cursor;
use std::panic::AssertUnwindSafe;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tfhe::named::Named;
use tfhe::safe_serialization::{DeserializationConfig, SerializationConfig};
use tfhe_versionable::{Unversionize, Versionize};

use crate::{Error, Result};

/// The value checks itself against what it should be after parsing: its
/// own declared parameter set, dimensions and counts.
pub trait Conformant {
    /// A short human name for messages ("evaluation key").
    const KIND: &'static str;
    /// Internal consistency (declared parameters vs. buffer sizes).
    fn check(&self) -> Result<()>;
}

/// Largest value we ever write (a 3_3 compressed evaluation key is 283 MB).
const WRITE_LIMIT: u64 = 4 << 30;

/// Serialization of one type.
pub trait Bytes:
    Sized + Serialize + DeserializeOwned + Versionize + Unversionize + Named + Conformant
{
    /// Whether files in the release-0.1 format are accepted by
    /// [`Bytes::from_stored`], and under which kind string.
    const LEGACY_KIND: Option<&'static str> = None;

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        SerializationConfig::new(WRITE_LIMIT)
            .serialize_into(self, &mut out)
            .map_err(|e| Error::Internal(format!("serializing {}: {e}", Self::KIND)))?;
        Ok(out)
    }

    /// Parses bytes from anywhere (the network included): at most `limit`
    /// bytes, the current versioned format only, then [`Conformant::check`].
    fn from_bytes(bytes: &[u8], limit: u64) -> Result<Self> {
        if bytes.len() as u64 > limit {
            return Err(Error::decode(
                Self::KIND,
                format!("{} bytes exceed the {limit}-byte limit", bytes.len()),
            ));
        }
        let value = guarded(Self::KIND, || {
            let mut cursor = Cursor::new(bytes);
            let v: Self = DeserializationConfig::new(bytes.len() as u64)
                .disable_conformance()
                .deserialize_from(&mut cursor)
                .map_err(|e| Error::decode(Self::KIND, e))?;
            if cursor.position() != bytes.len() as u64 {
                return Err(Error::decode(
                    Self::KIND,
                    format!(
                        "{} trailing bytes after the value",
                        bytes.len() as u64 - cursor.position()
                    ),
                ));
            }
            Ok(v)
        })?;
        guarded(Self::KIND, || value.check())?;
        Ok(value)
    }

    /// Parses a file's bytes: the current format, or the release-0.1
    /// format for types that had one.
    fn from_stored(bytes: &[u8], limit: u64) -> Result<Self> {
        match Self::LEGACY_KIND {
            Some(kind) if bytes.starts_with(LEGACY_MAGIC) => {
                let value: Self = guarded(Self::KIND, || legacy_decode(bytes, limit, kind))?;
                guarded(Self::KIND, || value.check())?;
                Ok(value)
            }
            _ => Self::from_bytes(bytes, limit),
        }
    }
}

/// Runs a decoder on hostile bytes; a panic becomes a decode error.
fn guarded<T>(kind: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(Error::decode(kind, "malformed bytes")),
    }
}

const LEGACY_MAGIC: &[u8] = b"BFLD";

/// The release-0.1 format: `BFLD`, u32 format 1, u32 kind length, kind,
/// fixed-int bincode.
fn legacy_decode<T: DeserializeOwned + Conformant>(
    bytes: &[u8],
    limit: u64,
    kind: &str,
) -> Result<T> {
    use bincode::Options;
    let bad = |m: String| Error::decode(T::KIND, format!("legacy format: {m}"));
    if bytes.len() as u64 > limit {
        return Err(bad(format!(
            "{} bytes exceed the {limit}-byte limit",
            bytes.len()
        )));
    }
    if bytes.len() < 12 || &bytes[..4] != LEGACY_MAGIC {
        return Err(bad("not a Blindfold blob".into()));
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if version != 1 {
        return Err(bad(format!("format version {version} is not supported")));
    }
    let kind_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let rest = &bytes[12..];
    if kind_len > 64 || rest.len() < kind_len || &rest[..kind_len] != kind.as_bytes() {
        return Err(bad("wrong blob kind".into()));
    }
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(bytes.len() as u64)
        .reject_trailing_bytes()
        .deserialize(&rest[kind_len..])
        .map_err(|e| bad(e.to_string()))
}

/// Writes `value` in the release-0.1 format: only for tests that check
/// old files still load.
#[doc(hidden)]
pub fn legacy_encode<T: Serialize>(value: &T, kind: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(LEGACY_MAGIC);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(kind.len() as u32).to_le_bytes());
    out.extend_from_slice(kind.as_bytes());
    bincode::serialize_into(&mut out, value).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(out)
}
