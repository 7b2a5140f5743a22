//! Encryption at rest: the credentials, stored answers and buyer personal data that the
//! store writes are sealed with XChaCha20-Poly1305 under the data key, with associated
//! data naming the row and column, so that a sealed value copied into another row (or
//! another column) does not open. A sealed value is text:
//! `kg1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`. The key id lets an old key be
//! listed for reading while values are sealed afresh under the new one.
//!
//! Values written by releases without encryption are plain JSON; [`Sealer::open`] passes
//! them through, and the start-up pass ([`super::Store::seal_at_rest`]) seals them.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// What starts every sealed value (version 1 of the format).
const PREFIX: &str = "kg1.";
const NONCE_LEN: usize = 24;

/// A 32-byte data key. Never printed, never stored in the database.
#[derive(Clone)]
pub struct DataKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey([redacted], id {})", self.id)
    }
}

impl DataKey {
    #[expect(clippy::indexing_slicing, reason = "a SHA-256 digest has 32 bytes")]
    pub fn from_bytes(key: &[u8; 32]) -> Self {
        // The id is a digest, not the key: it tells which key sealed a value and
        // reveals nothing of it.
        let digest = Sha256::new()
            .chain_update(b"koogate data key id\0")
            .chain_update(key)
            .finalize();
        Self {
            id: hex::encode(&digest[..4]),
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Reads a key written as base64 (standard alphabet, padded or not) or as 64 hex
    /// digits; surrounding white space is ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| e.to_string())?
        } else {
            STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .map_err(|_| "is neither base64 nor 64 hex digits".to_owned())?
        };
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "must be 32 bytes (base64 or 64 hex digits), not {}",
                bytes.len()
            )
        })?;
        Ok(Self::from_bytes(&key))
    }

    /// A new random key, as the base64 text [`Self::parse`] reads.
    pub fn generate() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A sealed value that does not open: a wrong or missing key, or a value moved from
/// another row.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unsealable(String);

/// The data key and the old keys that still open values sealed before a rotation.
#[derive(Clone, Debug)]
pub struct Sealer {
    current: DataKey,
    old: Vec<DataKey>,
}

impl Sealer {
    pub fn new(current: DataKey, old: Vec<DataKey>) -> Self {
        Self { current, old }
    }

    /// The start of every value sealed under the current key.
    pub fn current_prefix(&self) -> String {
        format!("{PREFIX}{}.", self.current.id)
    }

    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Seals `plain` for the place `aad` names (table, column and row).
    #[expect(
        clippy::expect_used,
        reason = "XChaCha20-Poly1305 seals any message that fits in memory"
    )]
    pub fn seal(&self, aad: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .current
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any message that fits in memory");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{}{}", self.current_prefix(), URL_SAFE_NO_PAD.encode(bytes))
    }

    /// [`Self::seal`] for text.
    pub fn seal_text(&self, aad: &str, plain: &str) -> String {
        self.seal(aad, plain.as_bytes())
    }

    /// Opens what [`Self::seal`] made for the same `aad`, with the current or an old
    /// key; a value without the prefix was stored before encryption and is returned as
    /// it is.
    pub fn open<'a>(&self, aad: &str, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, Unsealable> {
        let Some(rest) = stored.strip_prefix(PREFIX.as_bytes()) else {
            return Ok(Cow::Borrowed(stored));
        };
        let text = std::str::from_utf8(rest).map_err(|_| Unsealable(format!("{aad}: not text")))?;
        let (id, data) = text
            .split_once('.')
            .ok_or_else(|| Unsealable(format!("{aad}: no key id")))?;
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                Unsealable(format!(
                    "{aad}: sealed with data key {id}, which is not configured \
                     (KOOGATE_DATA_KEY, KOOGATE_DATA_KEY_OLD)"
                ))
            })?;
        let bytes = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| Unsealable(format!("{aad}: not base64")))?;
        if bytes.len() < NONCE_LEN {
            return Err(Unsealable(format!("{aad}: too short")));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map(Cow::Owned)
            .map_err(|_| Unsealable(format!("{aad}: does not open (altered, or another row's)")))
    }

    /// [`Self::open`] for text.
    pub fn open_text(&self, aad: &str, stored: &str) -> Result<String, Unsealable> {
        let bytes = self.open(aad, stored.as_bytes())?;
        String::from_utf8(bytes.into_owned()).map_err(|_| Unsealable(format!("{aad}: not UTF-8")))
    }

    /// Whether `stored` is sealed under the current key (and needs no pass at start).
    pub fn is_current(&self, stored: &[u8]) -> bool {
        stored.starts_with(self.current_prefix().as_bytes())
    }
}

/// The associated data of a sealed column: the table, the column and the row's key,
/// separated by NUL (which no id may hold).
pub fn place(table_column: &str, row: &[&str]) -> String {
    let mut aad = table_column.to_owned();
    for part in row {
        aad.push('\0');
        aad.push_str(part);
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(DataKey::from_bytes(&[7; 32]), Vec::new())
    }

    #[test]
    fn sealed_values_open_only_in_their_own_place() {
        let s = sealer();
        let sealed = s.seal_text("instances.app_info\0i-1", "hunter2");
        assert!(sealed.starts_with(&s.current_prefix()));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            s.open_text("instances.app_info\0i-1", &sealed).unwrap(),
            "hunter2"
        );
        assert!(s.open_text("instances.app_info\0i-2", &sealed).is_err());
        assert_ne!(
            s.seal_text("a", "same"),
            s.seal_text("a", "same"),
            "fresh nonce"
        );
    }

    #[test]
    fn plain_values_of_older_releases_pass_through() {
        assert_eq!(sealer().open_text("x", r#"{"a":1}"#).unwrap(), r#"{"a":1}"#);
    }

    #[test]
    fn an_old_key_still_opens_what_it_sealed() {
        let old = DataKey::from_bytes(&[1; 32]);
        let sealed = Sealer::new(old.clone(), Vec::new()).seal_text("x", "v");
        let rotated = Sealer::new(DataKey::from_bytes(&[2; 32]), vec![old]);
        assert_eq!(rotated.open_text("x", &sealed).unwrap(), "v");
        assert!(!rotated.is_current(sealed.as_bytes()));
        let without = Sealer::new(DataKey::from_bytes(&[2; 32]), Vec::new());
        let error = without.open_text("x", &sealed).unwrap_err().to_string();
        assert!(error.contains("KOOGATE_DATA_KEY_OLD"), "{error}");
    }

    #[test]
    fn keys_parse_from_base64_or_hex_and_never_print() {
        let text = DataKey::generate();
        let key = DataKey::parse(&text).unwrap();
        let hex_key = DataKey::parse(&hex::encode(STANDARD.decode(&text).unwrap())).unwrap();
        assert_eq!(key.id(), hex_key.id());
        assert!(!format!("{key:?}").contains(&text));
        assert!(format!("{key:?}").contains("[redacted]"));
        for bad in ["", "abc", &STANDARD.encode([0u8; 16])] {
            assert!(DataKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
