//! NATS nkeys: an ed25519 key pair whose seed is written as base32 text
//! (`SU…` for a user) with a type prefix and a CRC-16 checksum. To
//! authenticate, the client signs the nonce the server sent in `INFO` and
//! sends the public key with the signature in `CONNECT`.
//! (<https://docs.nats.io/running-a-nats-service/configuration/securing_nats/auth_intro/nkey_auth>)

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use std::fmt;

/// The first base32 character of a seed ('S').
const PREFIX_SEED: u8 = 18 << 3;
/// Key types, as the first base32 character of their public key.
const PREFIX_USER: u8 = 20 << 3; // 'U'
const PREFIX_ACCOUNT: u8 = 0; // 'A'
const PREFIX_OPERATOR: u8 = 14 << 3; // 'O'
const PREFIX_SERVER: u8 = 13 << 3; // 'N'
const PREFIX_CLUSTER: u8 = 2 << 3; // 'C'

const CHECKSUM: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// A key pair read from a seed. Its `Debug` shows the public key only.
pub struct KeyPair {
    kind: u8,
    keys: ed25519_compact::KeyPair,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// A seed that cannot be used; never says what the seed was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedError(pub &'static str);

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an nkey seed: {}", self.0)
    }
}

impl std::error::Error for SeedError {}

impl KeyPair {
    /// Read a seed (`SU…`, `SA…`, …); surrounding whitespace (a trailing
    /// newline in a seed file) is ignored.
    pub fn from_seed(text: &str) -> Result<Self, SeedError> {
        let raw = BASE32_NOPAD
            .decode(text.trim().as_bytes())
            .map_err(|_| SeedError("it is not base32 text (A–Z, 2–7)"))?;
        let [b0, b1, seed @ .., c0, c1] = &raw[..] else {
            return Err(SeedError("it is too short"));
        };
        if CHECKSUM.checksum(&raw[..raw.len() - 2]) != u16::from_le_bytes([*c0, *c1]) {
            return Err(SeedError(
                "its checksum does not match (a character is wrong)",
            ));
        }
        if b0 & 0xf8 != PREFIX_SEED {
            return Err(SeedError(
                "it does not start with S (a public key is not a seed)",
            ));
        }
        let kind = ((b0 & 0x07) << 5) | ((b1 & 0xf8) >> 3);
        if ![
            PREFIX_USER,
            PREFIX_ACCOUNT,
            PREFIX_OPERATOR,
            PREFIX_SERVER,
            PREFIX_CLUSTER,
        ]
        .contains(&kind)
        {
            return Err(SeedError("its key type is unknown"));
        }
        let seed = ed25519_compact::Seed::from_slice(seed)
            .map_err(|_| SeedError("its key is not 32 bytes"))?;
        Ok(Self {
            kind,
            keys: ed25519_compact::KeyPair::from_seed(seed),
        })
    }

    /// The public key as NATS writes it (`U…` for a user).
    pub fn public_key(&self) -> String {
        let mut raw = Vec::with_capacity(35);
        raw.push(self.kind);
        raw.extend_from_slice(self.keys.pk.as_ref());
        let checksum = CHECKSUM.checksum(&raw);
        raw.extend_from_slice(&checksum.to_le_bytes());
        BASE32_NOPAD.encode(&raw)
    }

    /// The server's nonce signed, as `CONNECT`'s `sig` (base64url, no
    /// padding).
    pub fn sign_nonce(&self, nonce: &str) -> String {
        let signature = self.keys.sk.sign(nonce.as_bytes(), None);
        BASE64URL_NOPAD.encode(signature.as_ref())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use data_encoding::BASE64;

    // The published vectors of the Elixir nkeys library's tests.
    const SEED: &str = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU";

    #[test]
    fn a_user_seed_gives_its_public_key_and_signs_nonces_as_nats_does() {
        let pair = KeyPair::from_seed(&format!("{SEED}\n")).unwrap();
        assert_eq!(
            pair.public_key(),
            "UCK5N7N66OBOINFXAYC2ACJQYFSOD4VYNU6APEJTAVFZB2SVHLKGEW7L"
        );
        let signature = BASE64URL_NOPAD
            .decode(pair.sign_nonce("PXoWU7zWAMt75FY").as_bytes())
            .unwrap();
        assert_eq!(
            BASE64.encode(&signature),
            "ZaAiVDgB5CeYoXoQ7cBCmq+ZllzUnGUoDVb8C7PilWvCs8XKfUchAUhz2P4BYAF++Dg3w05CqyQFRDiGL6LrDw=="
        );
        assert_eq!(
            pair.sign_nonce("iBFByN3zQjAT7dQ"),
            "kagPGrixaWS5yuHqw9nTQrda1Q376fK3fRCGtYdF4_w2aSk-4O7Ca0JM0qvzm69HH6MoMps2yF6Q0Qs830JZCA"
        );
        assert!(!format!("{pair:?}").contains(SEED));
    }

    #[test]
    fn an_operator_seed_gives_its_public_key() {
        // From the NATS .NET nkeys library's README.
        let pair = KeyPair::from_seed("SOAELH6NJCEK4HST5644G4HK7TOAFZGRRJHNM4EUKUY7PPNDLIKO5IH4JM")
            .unwrap();
        assert_eq!(
            pair.public_key(),
            "ODPWIBQJVIQ42462QAFI2RKJC4RZHCQSIVPRDDHWFCJAP52NRZK6Z2YC"
        );
    }

    #[test]
    fn what_is_not_a_usable_seed_is_refused_saying_why() {
        let refused = |text: &str| KeyPair::from_seed(text).unwrap_err().0;
        assert!(refused("not base32!").contains("base32"));
        assert!(refused("SU").contains("short") || refused("SU").contains("base32"));
        // One character changed.
        let mut typo = SEED.to_owned();
        typo.replace_range(10..11, if &SEED[10..11] == "A" { "B" } else { "A" });
        assert!(refused(&typo).contains("checksum"));
        // A public key is not a seed.
        assert!(
            refused("UCK5N7N66OBOINFXAYC2ACJQYFSOD4VYNU6APEJTAVFZB2SVHLKGEW7L").contains("with S")
        );
    }
}
