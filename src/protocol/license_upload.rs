//! The body of 字符串/文件流上传 (koogallery.md §8.3): `multipart/form-data` with the
//! `isvUpdateFileReq` JSON part and, for `FILE`, the `file` part. The bytes are built
//! deterministically — the same License gives the same body, boundary included — because
//! the APIG signature covers the exact bytes sent (§8.1), and a retried upload should be
//! the same request.

use super::order::UploadRequest;
use sha2::{Digest, Sha256};

/// `characters` holds at most this many characters (§8.3, newer revisions): a longer
/// License goes as `FILE`.
pub const MAX_CHARACTERS: usize = 1024;

/// `file_name` is String(1024) (§8.3).
pub const MAX_FILE_NAME: usize = 1024;

/// How a License travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// `CHARACTERS`: a string of at most [`MAX_CHARACTERS`] characters.
    Characters(String),
    /// `FILE`: bytes under a name.
    File { name: String, bytes: Vec<u8> },
}

impl Content {
    /// A License string: as `CHARACTERS` when it fits, otherwise as a `FILE` named
    /// `{fallback_name}`.
    pub fn from_string(license: String, fallback_name: &str) -> Self {
        if license.chars().count() <= MAX_CHARACTERS {
            Self::Characters(license)
        } else {
            Self::File {
                name: fallback_name.to_owned(),
                bytes: license.into_bytes(),
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Characters(_) => "CHARACTERS",
            Self::File { .. } => "FILE",
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Characters(text) => text.as_bytes(),
            Self::File { bytes, .. } => bytes,
        }
    }

    /// Lowercase hex SHA-256 of the content, as `sha256` carries it.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.bytes()))
    }
}

/// Why a file name cannot be sent: it goes into a `Content-Disposition` header as the
/// part's `filename`, so quotes, backslashes, path separators and control characters
/// are refused rather than escaped in a way the receiver may read differently.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("is empty".into());
    }
    if name.chars().count() > MAX_FILE_NAME {
        return Err(format!("is longer than {MAX_FILE_NAME} characters"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || matches!(c, '"' | '\\' | '/'))
    {
        return Err("may not hold quotes, backslashes, slashes or control characters".into());
    }
    Ok(())
}

/// A multipart body ready to sign and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Builds the upload body of `content`. The boundary is derived from the content's hash,
/// and lengthened in the (astronomically unlikely) case that the content holds it.
#[expect(
    clippy::expect_used,
    reason = "the upload request is plain data with string keys"
)]
pub fn body(content: &Content) -> Body {
    let meta = match content {
        Content::Characters(text) => UploadRequest {
            kind: "CHARACTERS".into(),
            file_name: None,
            sha256: None,
            characters: Some(text.clone()),
        },
        // koogate sends `file_name` in the JSON and as the part's `filename`, and no
        // `characters` for FILE (§8.3, newer revisions).
        Content::File { name, .. } => UploadRequest {
            kind: "FILE".into(),
            file_name: Some(name.clone()),
            sha256: Some(content.sha256()),
            characters: None,
        },
    };
    let meta = serde_json::to_vec(&meta).expect("the upload request serialises");
    let digest = content.sha256();
    let mut boundary = format!("koogate-{}", &digest[..32]);
    let holds = |needle: &str| {
        let needle = needle.as_bytes();
        [&meta[..], content.bytes()]
            .iter()
            .any(|hay| hay.windows(needle.len()).any(|w| w == needle))
    };
    let mut extra = 32;
    while holds(&boundary) && extra < digest.len() {
        extra += 8;
        boundary = format!("koogate-{}", &digest[..extra]);
    }
    let mut bytes = Vec::with_capacity(meta.len() + content.bytes().len() + 400);
    bytes.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"isvUpdateFileReq\"\r\n\
             Content-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(b"\r\n");
    if let Content::File { name, bytes: file } = content {
        bytes.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        bytes.extend_from_slice(file);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Body {
        content_type: format!("multipart/form-data; boundary={boundary}"),
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_string_goes_as_characters_and_a_long_one_as_a_file() {
        let short = "x".repeat(MAX_CHARACTERS);
        assert_eq!(
            Content::from_string(short.clone(), "ev.lic"),
            Content::Characters(short)
        );
        let long = "许".repeat(MAX_CHARACTERS + 1);
        let Content::File { name, bytes } = Content::from_string(long.clone(), "ev.lic") else {
            panic!("1025 characters must go as a file")
        };
        assert_eq!((name.as_str(), bytes), ("ev.lic", long.into_bytes()));
    }

    #[test]
    fn the_characters_body_is_exactly_as_documented() {
        let body = body(&Content::Characters("LIC-123".into()));
        let digest = hex::encode(Sha256::digest(b"LIC-123"));
        let boundary = format!("koogate-{}", &digest[..32]);
        assert_eq!(
            body.content_type,
            format!("multipart/form-data; boundary={boundary}")
        );
        let expected = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"isvUpdateFileReq\"\r\n\
             Content-Type: application/json\r\n\r\n{{\"type\":\"CHARACTERS\",\"characters\":\"LIC-123\"}}\r\n\
             --{boundary}--\r\n"
        );
        assert_eq!(String::from_utf8(body.bytes).unwrap(), expected);
    }

    #[test]
    fn the_file_body_names_the_file_twice_and_carries_its_hash() {
        let content = Content::File {
            name: "device.lic".into(),
            bytes: b"\x00\xffbinary".to_vec(),
        };
        let first = body(&content);
        assert_eq!(first, body(&content), "deterministic, boundary included");
        let text = String::from_utf8_lossy(&first.bytes);
        let sha = content.sha256();
        assert!(
            text.contains(&format!(
                "{{\"type\":\"FILE\",\"file_name\":\"device.lic\",\"sha256\":\"{sha}\"}}"
            )),
            "{text}"
        );
        assert!(
            text.contains("name=\"file\"; filename=\"device.lic\""),
            "{text}"
        );
        assert!(!text.contains("characters"), "{text}");
    }

    #[test]
    fn file_names_that_would_break_the_header_are_refused() {
        assert!(check_file_name("license-01.lic").is_ok());
        assert!(check_file_name("许可证.lic").is_ok());
        for bad in ["", " ", "a\"b", "a\\b", "../x", "a\r\nb"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_file_name(&"n".repeat(1025)).is_err());
    }
}
