//! Sensitive-field encryption (spec §2.5): AES-CBC-PKCS5 under a key derived the way Java's `SHA1PRNG`
//! derives it, plus the HMAC-SHA256 constructor that the signature modules share.

use std::fmt;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// Length of the IV prefix of an encrypted field: 16 ASCII characters, used as the 16 IV bytes (§2.5).
const IV_LEN: usize = 16;

/// An HMAC-SHA256 instance keyed with `key`, ready for `update`.
#[expect(clippy::expect_used, reason = "HMAC-SHA256 accepts keys of any length")]
pub(crate) fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    // HMAC hashes long keys and zero-pads short ones, so no key length is invalid.
    Hmac::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length")
}

/// The length of a field once encrypted: the 16-character IV, then Base64 of the
/// PKCS#5-padded ciphertext (always at least one byte of padding).
pub const fn encrypted_len(plaintext_bytes: usize) -> usize {
    let ciphertext = (plaintext_bytes / 16 + 1) * 16;
    16 + ciphertext.div_ceil(3) * 4
}

/// The longest plaintext whose encrypted form fits 128 characters.
pub const MAX_PLAINTEXT_FOR_128: usize = 79;

/// Why an encrypted field could not be read, or an `encryptType` / IV was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// `encryptType` is neither `"1"` nor `"2"`.
    #[error("unknown encryptType {0:?}: expected \"1\" (AES-256) or \"2\" (AES-128)")]
    UnknownEncryptType(String),
    /// The field has nothing after its 16-character IV.
    #[error("encrypted field is {len} bytes long: it has no ciphertext after the 16-character IV")]
    TooShort {
        /// Length of the whole field, in bytes.
        len: usize,
    },
    /// The IV is not 16 ASCII characters.
    #[error("the IV must be 16 ASCII characters")]
    InvalidIv,
    /// The text after the IV is not standard, padded Base64.
    #[error("the ciphertext after the IV is not valid Base64: {0}")]
    Base64(base64::DecodeError),
    /// The decoded ciphertext cannot be whole AES blocks.
    #[error("the ciphertext is {0} bytes, not a positive multiple of the 16-byte AES block")]
    CiphertextLength(usize),
    /// Decryption produced invalid PKCS#5 padding.
    #[error("decryption failed (bad padding): wrong accessKey or key size, or a corrupted field")]
    BadPadding,
    /// Decryption succeeded but the plaintext is not UTF-8.
    #[error("the decrypted field is not UTF-8")]
    NotUtf8,
}

/// AES key size chosen when the product was published; sent to KooGallery as `encryptType` (§2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeySize {
    /// AES-128, `encryptType` `"2"`.
    Aes128,
    /// AES-256, `encryptType` `"1"`: KooGallery's default.
    #[default]
    Aes256,
}

impl KeySize {
    /// The `encryptType` value that announces this key size in a response.
    pub fn encrypt_type(self) -> &'static str {
        match self {
            Self::Aes128 => "2",
            Self::Aes256 => "1",
        }
    }

    /// Reads an `encryptType` value: `"1"` is AES-256, `"2"` is AES-128.
    pub fn from_encrypt_type(value: &str) -> Result<Self, CryptoError> {
        match value {
            "1" => Ok(Self::Aes256),
            "2" => Ok(Self::Aes128),
            other => Err(CryptoError::UnknownEncryptType(other.to_owned())),
        }
    }
}

#[derive(Clone)]
enum Key {
    Aes128([u8; 16]),
    Aes256([u8; 32]),
}

/// Encrypts and decrypts KooGallery's sensitive fields (V1 `mobilePhone`/`email` in, `appInfo.userName`/
/// `password` out) under one accessKey and key size.
///
/// Field format: `IV (16 ASCII characters) + Base64(AES-CBC-PKCS5(UTF-8 plaintext))` (§2.5).
/// The AES key is derived once, at construction; `Debug` never shows it.
#[derive(Clone)]
pub struct FieldCipher {
    key: Key,
}

impl FieldCipher {
    /// Derives the AES key from `access_key` as Java's `KeyGenerator` seeded with `SHA1PRNG` does (§2.5).
    pub fn new(access_key: &str, size: KeySize) -> Self {
        let seed = access_key.as_bytes();
        let key = match size {
            KeySize::Aes128 => Key::Aes128(sha1prng(seed)),
            KeySize::Aes256 => Key::Aes256(sha1prng(seed)),
        };
        Self { key }
    }

    /// The key size this cipher uses, for the response's `encryptType`.
    pub fn key_size(&self) -> KeySize {
        match self.key {
            Key::Aes128(_) => KeySize::Aes128,
            Key::Aes256(_) => KeySize::Aes256,
        }
    }

    /// Encrypts `plaintext` under a fresh random IV of 16 characters from `[A-Za-z0-9]`, as the official
    /// demo draws it. Two calls give different fields for the same plaintext.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let mut rng = rand::rng();
        let iv: [u8; IV_LEN] = std::array::from_fn(|_| rng.sample(Alphanumeric));
        self.seal(&iv, plaintext)
    }

    /// Encrypts `plaintext` under the given IV, which must be 16 ASCII characters; for known-answer tests
    /// and simulators that need reproducible output.
    pub fn encrypt_with_iv(&self, iv: &str, plaintext: &str) -> Result<String, CryptoError> {
        let iv = <[u8; IV_LEN]>::try_from(iv.as_bytes())
            .ok()
            .filter(|iv| iv.is_ascii())
            .ok_or(CryptoError::InvalidIv)?;
        Ok(self.seal(&iv, plaintext))
    }

    /// Decrypts a field in the format above. Every malformed input is an error, never a panic.
    pub fn decrypt(&self, field: &str) -> Result<String, CryptoError> {
        let (iv, encoded) = field
            .as_bytes()
            .split_first_chunk::<IV_LEN>()
            .filter(|(_, rest)| !rest.is_empty())
            .ok_or(CryptoError::TooShort { len: field.len() })?;
        if !iv.is_ascii() {
            return Err(CryptoError::InvalidIv);
        }
        let ciphertext = STANDARD.decode(encoded).map_err(CryptoError::Base64)?;
        if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
            return Err(CryptoError::CiphertextLength(ciphertext.len()));
        }
        let plaintext = match &self.key {
            Key::Aes128(key) => cbc::Decryptor::<aes::Aes128>::new(key.into(), iv.into())
                .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext),
            Key::Aes256(key) => cbc::Decryptor::<aes::Aes256>::new(key.into(), iv.into())
                .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext),
        }
        .map_err(|_| CryptoError::BadPadding)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::NotUtf8)
    }

    /// `iv` must be ASCII: its bytes are written into the field as characters.
    fn seal(&self, iv: &[u8; IV_LEN], plaintext: &str) -> String {
        // PKCS7 on 16-byte blocks is exactly Java's PKCS5Padding.
        let ciphertext = match &self.key {
            Key::Aes128(key) => cbc::Encryptor::<aes::Aes128>::new(key.into(), iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes()),
            Key::Aes256(key) => cbc::Encryptor::<aes::Aes256>::new(key.into(), iv.into())
                .encrypt_padded_vec_mut::<Pkcs7>(plaintext.as_bytes()),
        };
        let mut field: String = iv.iter().copied().map(char::from).collect();
        STANDARD.encode_string(ciphertext, &mut field);
        field
    }
}

impl fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldCipher")
            .field("key_size", &self.key_size())
            .finish_non_exhaustive()
    }
}

/// The first `N` bytes that Java's Sun `SHA1PRNG`, seeded with `seed` before any output, produces in one
/// `nextBytes` call; `KeyGenerator("AES").init(bits, random)` takes its key from exactly that (§2.5).
#[expect(
    clippy::indexing_slicing,
    reason = "chunks_mut(20) yields chunks of at most the block's 20 bytes"
)]
fn sha1prng<const N: usize>(seed: &[u8]) -> [u8; N] {
    let mut state: [u8; 20] = Sha1::digest(seed).into();
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(20) {
        let block: [u8; 20] = Sha1::digest(state).into();
        update_state(&mut state, &block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    out
}

/// Java's `updateState`: `state += output + 1` over little-endian bytes, but with each byte read as a
/// *signed* Java `byte` and the carry taken by an arithmetic shift, so the carry can be negative. If that
/// leaves the state unchanged, its first byte is bumped instead (§2.5).
fn update_state(state: &mut [u8; 20], output: &[u8; 20]) {
    let mut carry: i32 = 1;
    let mut changed = false;
    for (s, &o) in state.iter_mut().zip(output) {
        let v = i32::from(*s as i8) + i32::from(o as i8) + carry;
        let t = v as u8; // Java's `(byte) v`: the low 8 bits.
        changed |= *s != t;
        *s = t;
        carry = v >> 8;
    }
    if !changed {
        state[0] = state[0].wrapping_add(1);
    }
}

/// The SHA-256 of `bytes`, as lower-case hex: how the audit record, the evidence and the
/// admin pages name the exact bytes sent or received.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::block_padding::NoPadding;

    #[test]
    fn encrypted_lengths_match_real_ciphertexts() {
        let cipher = FieldCipher::new("test-access-key-0001", KeySize::Aes256);
        for n in [0, 1, 15, 16, 17, 47, 48, 79, 80, 100] {
            let field = cipher.encrypt(&"a".repeat(n));
            assert_eq!(field.len(), encrypted_len(n), "{n} bytes");
        }
        assert!(encrypted_len(MAX_PLAINTEXT_FOR_128) <= 128);
        assert!(encrypted_len(MAX_PLAINTEXT_FOR_128 + 1) > 128);
    }

    const KEY_1: &str = "test-access-key-0001";
    const KEY_2: &str = "9fa6c870-8bb0-4e9b-b71e-4c223300156f";

    #[test]
    fn derived_keys_match_spec_vector_6() {
        assert_eq!(
            hex::encode(sha1prng::<16>(KEY_1.as_bytes())),
            "fa32b243c1eeb23e93357bb8be8ec849"
        );
        assert_eq!(
            hex::encode(sha1prng::<32>(KEY_1.as_bytes())),
            "fa32b243c1eeb23e93357bb8be8ec84903d6395e4f1ccb2379a1666d99a6ab9f"
        );
        assert_eq!(
            hex::encode(sha1prng::<32>(KEY_2.as_bytes())),
            "6de9c7fe5a9cd34b86611483e5124a8fdd1fc74c4f54543ee7cd43c5195a3198"
        );
    }

    #[test]
    fn ciphertexts_match_spec_vector_6_and_decrypt_to_admin() {
        let cases = [
            (
                KEY_1,
                KeySize::Aes128,
                "0123456789abcdef",
                "0123456789abcdefra/iiZNZNzZnfC8LS9YD3Q==",
            ),
            (
                KEY_1,
                KeySize::Aes256,
                "0123456789abcdef",
                "0123456789abcdefzgivnHi79T0CV1zgTV92FA==",
            ),
            (
                KEY_2,
                KeySize::Aes256,
                "abcdefghijklmnop",
                "abcdefghijklmnopfvS+WPi4oSB8xi3UEh+Q1Q==",
            ),
        ];
        for (access_key, size, iv, expected) in cases {
            let cipher = FieldCipher::new(access_key, size);
            assert_eq!(cipher.encrypt_with_iv(iv, "admin").as_deref(), Ok(expected));
            assert_eq!(cipher.decrypt(expected).as_deref(), Ok("admin"));
        }
    }

    #[test]
    fn random_iv_round_trips_for_both_key_sizes() {
        let plaintexts = [
            "",
            "admin",
            "exactly16bytes!!",
            "管理员-p@ss word",
            &"x".repeat(100),
        ];
        for size in [KeySize::Aes128, KeySize::Aes256] {
            let cipher = FieldCipher::new(KEY_1, size);
            for plaintext in plaintexts {
                let field = cipher.encrypt(plaintext);
                assert!(
                    field[..IV_LEN].bytes().all(|b| b.is_ascii_alphanumeric()),
                    "{field}"
                );
                assert_eq!(cipher.decrypt(&field).as_deref(), Ok(plaintext));
            }
            assert_ne!(
                cipher.encrypt("admin"),
                cipher.encrypt("admin"),
                "IVs must differ"
            );
        }
    }

    #[test]
    fn key_size_maps_to_encrypt_type_both_ways() {
        assert_eq!(KeySize::default(), KeySize::Aes256);
        for size in [KeySize::Aes128, KeySize::Aes256] {
            assert_eq!(KeySize::from_encrypt_type(size.encrypt_type()), Ok(size));
            assert_eq!(FieldCipher::new(KEY_1, size).key_size(), size);
        }
        assert_eq!(KeySize::Aes128.encrypt_type(), "2");
        assert_eq!(KeySize::Aes256.encrypt_type(), "1");
        assert_eq!(
            KeySize::from_encrypt_type("3"),
            Err(CryptoError::UnknownEncryptType("3".into()))
        );
    }

    #[test]
    fn debug_output_hides_the_key() {
        let shown = format!("{:?}", FieldCipher::new(KEY_1, KeySize::Aes128));
        assert_eq!(shown, "FieldCipher { key_size: Aes128, .. }");
    }

    /// Encrypts raw bytes under `KEY_1`/AES-128, optionally without padding, to build fields whose
    /// decryption fails in one specific way.
    fn raw_field(iv: &str, plaintext: &[u8], pad: bool) -> String {
        let key = sha1prng::<16>(KEY_1.as_bytes());
        let iv_bytes: &[u8; 16] = iv.as_bytes().try_into().expect("test IV is 16 bytes");
        let encryptor = cbc::Encryptor::<aes::Aes128>::new((&key).into(), iv_bytes.into());
        let ciphertext = if pad {
            encryptor.encrypt_padded_vec_mut::<Pkcs7>(plaintext)
        } else {
            encryptor.encrypt_padded_vec_mut::<NoPadding>(plaintext)
        };
        format!("{iv}{}", STANDARD.encode(ciphertext))
    }

    #[test]
    fn malformed_fields_are_clear_errors() {
        let iv = "0123456789abcdef";
        let cipher = FieldCipher::new(KEY_1, KeySize::Aes128);
        let cases = [
            (String::new(), CryptoError::TooShort { len: 0 }, "empty"),
            (iv.to_owned(), CryptoError::TooShort { len: 16 }, "IV only"),
            (
                "0123".to_owned(),
                CryptoError::TooShort { len: 4 },
                "short IV",
            ),
            (
                "0123456789abcdeé/iiZNZNzZnfC8LS9YD3Q==".to_owned(),
                CryptoError::InvalidIv,
                "non-ASCII character straddling the IV boundary",
            ),
            (
                format!("{iv}AAAA"),
                CryptoError::CiphertextLength(3),
                "not a whole block",
            ),
            (
                raw_field(iv, &[0u8; 16], false),
                CryptoError::BadPadding,
                "last byte 0x00 is no PKCS#5 padding",
            ),
            (
                raw_field(iv, &[0xff, 0xfe, b'a'], true),
                CryptoError::NotUtf8,
                "plaintext is not UTF-8",
            ),
        ];
        for (field, expected, why) in cases {
            assert_eq!(cipher.decrypt(&field), Err(expected), "{why}: {field:?}");
        }
    }

    #[test]
    fn text_after_the_iv_must_be_standard_padded_base64() {
        let cipher = FieldCipher::new(KEY_1, KeySize::Aes128);
        for rest in [
            "not base64!",
            "ra/iiZNZNzZnfC8LS9YD3Q",
            "ra/iiZNZNzZnfC8L S9YD3Q==",
        ] {
            let result = cipher.decrypt(&format!("0123456789abcdef{rest}"));
            assert!(
                matches!(result, Err(CryptoError::Base64(_))),
                "{rest:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn encrypt_with_iv_refuses_ivs_that_are_not_16_ascii_characters() {
        let cipher = FieldCipher::new(KEY_1, KeySize::Aes256);
        for iv in [
            "",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789abcdé",
        ] {
            assert_eq!(
                cipher.encrypt_with_iv(iv, "admin"),
                Err(CryptoError::InvalidIv),
                "{iv:?}"
            );
        }
    }

    // An independent SHA1PRNG, written straight from `sun.security.provider.SecureRandom`
    // (`engineSetSeed`, `engineNextBytes`, `updateState`) in u32 arithmetic: Java's sign extension and
    // arithmetic shift are spelled out bit by bit, and "unchanged" is a whole-array comparison.

    fn java_int_from_byte(b: u8) -> u32 {
        if b & 0x80 != 0 {
            0xFFFF_FF00 | u32::from(b)
        } else {
            u32::from(b)
        }
    }

    fn java_shift_right_8(v: u32) -> u32 {
        if v & 0x8000_0000 != 0 {
            (v >> 8) | 0xFF00_0000
        } else {
            v >> 8
        }
    }

    fn naive_update_state(state: &mut Vec<u8>, output: &[u8]) {
        let before = state.clone();
        let mut last: u32 = 1;
        for i in 0..state.len() {
            let v = java_int_from_byte(state[i])
                .wrapping_add(java_int_from_byte(output[i]))
                .wrapping_add(last);
            state[i] = (v & 0xFF) as u8;
            last = java_shift_right_8(v);
        }
        if *state == before {
            state[0] = state[0].wrapping_add(1);
        }
    }

    fn naive_sha1prng(seed: &[u8], len: usize) -> Vec<u8> {
        let mut state = Sha1::digest(seed).to_vec();
        let mut result = Vec::new();
        while result.len() < len {
            let output = Sha1::digest(&state).to_vec();
            naive_update_state(&mut state, &output);
            for &b in &output {
                if result.len() < len {
                    result.push(b);
                }
            }
        }
        result
    }

    fn random_seed(rng: &mut impl Rng) -> Vec<u8> {
        let len = rng.random_range(0..80);
        (0..len).map(|_| rng.random()).collect()
    }

    #[test]
    fn sha1prng_agrees_with_a_naive_java_transcription_on_random_seeds() {
        let mut rng = rand::rng();
        for _ in 0..500 {
            let seed = random_seed(&mut rng);
            assert_eq!(
                sha1prng::<16>(&seed).to_vec(),
                naive_sha1prng(&seed, 16),
                "{seed:02x?}"
            );
            assert_eq!(
                sha1prng::<32>(&seed).to_vec(),
                naive_sha1prng(&seed, 32),
                "{seed:02x?}"
            );
            assert_eq!(
                sha1prng::<60>(&seed).to_vec(),
                naive_sha1prng(&seed, 60),
                "{seed:02x?}"
            );
        }
    }

    #[test]
    fn update_state_agrees_with_the_naive_version_on_random_inputs() {
        let mut rng = rand::rng();
        for _ in 0..2000 {
            let state: [u8; 20] = rng.random();
            let output: [u8; 20] = rng.random();
            let mut ours = state;
            update_state(&mut ours, &output);
            let mut naive = state.to_vec();
            naive_update_state(&mut naive, &output);
            assert_eq!(
                ours.to_vec(),
                naive,
                "state {state:02x?} output {output:02x?}"
            );
        }
    }

    #[test]
    fn update_state_bumps_the_first_byte_when_the_sum_leaves_the_state_unchanged() {
        // Each output byte cancels the carry into its position, so state + output + 1 == state. The
        // 0x80 and 0xFF states only stay unchanged because of the sign extension (carry -1).
        let mut ones_after_ff = [0x01u8; 20];
        ones_after_ff[0] = 0xFF;
        let mut zeros_after_ff = [0x00u8; 20];
        zeros_after_ff[0] = 0xFF;
        let cases = [
            ([0x00u8; 20], zeros_after_ff, 0x01u8),
            ([0x80u8; 20], ones_after_ff, 0x81),
            ([0xFFu8; 20], ones_after_ff, 0x00),
        ];
        for (state, output, first) in cases {
            let mut expected = state;
            expected[0] = first;
            let mut ours = state;
            update_state(&mut ours, &output);
            assert_eq!(ours, expected, "production, state {state:02x?}");
            let mut naive = state.to_vec();
            naive_update_state(&mut naive, &output);
            assert_eq!(naive, expected.to_vec(), "naive, state {state:02x?}");
        }
    }
}
