//! Plex's private codec names and what libav can do instead.
//!
//! | Plex name (decoder) | libav decoder | why |
//! |---|---|---|
//! | `eac3_eae`, `ac3_eae`, `truehd_eae`, `mlp_eae` | `eac3`, `ac3`, `truehd`, `mlp` | EasyAudioEncoder is a separate licensed process on the PMS host; libav decodes these natively |
//! | `aac_lc` | `aac` | Plex's name for the AAC-LC profile of the native decoder |
//!
//! | Plex name (encoder) | libav encoder | why |
//! |---|---|---|
//! | `eac3_eae`, `ac3_eae` | `eac3`, `ac3` | libav's native (E-)AC-3 encoders produce the same bitstream format |
//! | `aac_lc` | `aac` | the native AAC encoder writes AAC-LC |

/// Which side of the codec a name is used on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecSide {
    Decoder,
    Encoder,
}

/// The libav name to use for a Plex codec name, when it differs.
pub fn native_codec(name: &str, side: CodecSide) -> Option<&'static str> {
    match (side, name) {
        (_, "aac_lc") => Some("aac"),
        (_, "eac3_eae") => Some("eac3"),
        (_, "ac3_eae") => Some("ac3"),
        (CodecSide::Decoder, "truehd_eae") => Some("truehd"),
        (CodecSide::Decoder, "mlp_eae") => Some("mlp"),
        _ => None,
    }
}

/// True for EasyAudioEncoder codec names (decoder or encoder).
pub fn is_eae(name: &str) -> bool {
    name.ends_with("_eae")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plex_names_map_to_native() {
        assert_eq!(native_codec("eac3_eae", CodecSide::Decoder), Some("eac3"));
        assert_eq!(
            native_codec("truehd_eae", CodecSide::Decoder),
            Some("truehd")
        );
        assert_eq!(native_codec("truehd_eae", CodecSide::Encoder), None);
        assert_eq!(native_codec("ac3_eae", CodecSide::Encoder), Some("ac3"));
        assert_eq!(native_codec("aac_lc", CodecSide::Encoder), Some("aac"));
        assert_eq!(native_codec("libx264", CodecSide::Encoder), None);
        assert!(is_eae("mlp_eae") && !is_eae("aac"));
    }
}
