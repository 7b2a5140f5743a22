//! The merchant's `resultCode` values (spec §5).

use serde::{Serialize, Serializer};

/// A result code the merchant returns to KooGallery. Only the codes koogate itself
/// produces are listed; the rest of spec §5 belongs to merchant-specific provisioners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// `000000`: success (V2 `newInstance`: provisioned synchronously).
    Success,
    /// `000001`: authentication failed.
    AuthFailed,
    /// `000002`: invalid request parameter.
    InvalidParam,
    /// `000003`: the instance (or license code) does not exist.
    NotFound,
    /// `000004`: accepted, being processed asynchronously.
    Processing,
    /// `000005`: other internal error.
    Internal,
}

impl ResultCode {
    /// The six-digit wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "000000",
            Self::AuthFailed => "000001",
            Self::InvalidParam => "000002",
            Self::NotFound => "000003",
            Self::Processing => "000004",
            Self::Internal => "000005",
        }
    }

    /// Parses the wire form; `None` for codes koogate does not produce.
    pub fn parse(code: &str) -> Option<Self> {
        [
            Self::Success,
            Self::AuthFailed,
            Self::InvalidParam,
            Self::NotFound,
            Self::Processing,
            Self::Internal,
        ]
        .into_iter()
        .find(|c| c.as_str() == code)
    }

    /// Whether KooGallery treats the answer as accepted (spec §5: `000000`, or `000004`
    /// where asynchronous processing is allowed).
    pub const fn is_accepted(self) -> bool {
        matches!(self, Self::Success | Self::Processing)
    }
}

impl Serialize for ResultCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_form() {
        for code in [
            ResultCode::Success,
            ResultCode::AuthFailed,
            ResultCode::InvalidParam,
            ResultCode::NotFound,
            ResultCode::Processing,
            ResultCode::Internal,
        ] {
            assert_eq!(ResultCode::parse(code.as_str()), Some(code));
            assert_eq!(code.as_str().len(), 6);
        }
        assert_eq!(ResultCode::parse("000100"), None);
    }
}
