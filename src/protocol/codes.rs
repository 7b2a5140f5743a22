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
    /// `000100`–`000107`: the product cannot be provided to this order (no resource,
    /// phone or e-mail taken, sold out …), as the merchant's app reports it; the number
    /// is the last three digits, 100 to 107.
    Unavailable(u8),
    /// `000901`: `getLicenseAsync` outside the order's validity window (§6.2).
    OutsideValidity,
    /// `000902`: a period License applied for without `expireTime`.
    PeriodNeedsExpiry,
    /// `000903`: the device fingerprint is required.
    FingerprintRequired,
}

/// The `Unavailable` codes the spec's table lists (§5).
pub const UNAVAILABLE: std::ops::RangeInclusive<u8> = 100..=107;

impl ResultCode {
    /// The six-digit wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable(100) => "000100",
            Self::Unavailable(101) => "000101",
            Self::Unavailable(102) => "000102",
            Self::Unavailable(103) => "000103",
            Self::Unavailable(104) => "000104",
            Self::Unavailable(105) => "000105",
            Self::Unavailable(106) => "000106",
            // Built only through `parse` or `unavailable`, which keep to 100..=107.
            Self::Unavailable(_) => "000107",
            Self::Success => "000000",
            Self::AuthFailed => "000001",
            Self::InvalidParam => "000002",
            Self::NotFound => "000003",
            Self::Processing => "000004",
            Self::Internal => "000005",
            Self::OutsideValidity => "000901",
            Self::PeriodNeedsExpiry => "000902",
            Self::FingerprintRequired => "000903",
        }
    }

    /// `000100`–`000107` from its wire form; `None` for any other code.
    pub fn unavailable(code: &str) -> Option<Self> {
        let n: u8 = code.strip_prefix("000")?.parse().ok()?;
        (code.len() == 6 && UNAVAILABLE.contains(&n)).then_some(Self::Unavailable(n))
    }

    /// Parses the wire form; `None` for codes koogate does not produce.
    pub fn parse(code: &str) -> Option<Self> {
        if let Some(code) = Self::unavailable(code) {
            return Some(code);
        }
        [
            Self::Success,
            Self::AuthFailed,
            Self::InvalidParam,
            Self::NotFound,
            Self::Processing,
            Self::Internal,
            Self::OutsideValidity,
            Self::PeriodNeedsExpiry,
            Self::FingerprintRequired,
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
            ResultCode::OutsideValidity,
            ResultCode::PeriodNeedsExpiry,
            ResultCode::FingerprintRequired,
        ] {
            assert_eq!(ResultCode::parse(code.as_str()), Some(code));
            assert_eq!(code.as_str().len(), 6);
        }
        for n in UNAVAILABLE {
            let code = ResultCode::Unavailable(n);
            assert_eq!(code.as_str(), format!("000{n}"));
            assert_eq!(ResultCode::parse(code.as_str()), Some(code));
        }
        for outside in ["000099", "000108", "000999", "0001000", "00010a", "100"] {
            assert_eq!(ResultCode::unavailable(outside), None, "{outside}");
        }
    }
}
