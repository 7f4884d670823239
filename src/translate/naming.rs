//! Upstream names, exactly as Gloo's discovery computes them, so that switching to this daemon
//! renames nothing.

use md5::{Digest, Md5};

/// Longest name Kubernetes accepts for a DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;
/// Bytes of the sanitized name kept in front of the hash when it is too long.
const HASHED_PREFIX_LEN: usize = 31;

/// The name of the Upstream for one port of a Service: `<namespace>-<service>-<port>`,
/// sanitized.
pub fn upstream_name(service_namespace: &str, service_name: &str, port: i32) -> String {
    sanitize_name(&format!("{service_namespace}-{service_name}-{port}"))
}

/// Gloo's `SanitizeNameV2`: replaces or removes the characters Kubernetes refuses, hashes names
/// over 63 characters, lower-cases the result.
pub fn sanitize_name(raw: &str) -> String {
    sanitize_name_hashed(raw).0
}

/// [`sanitize_name`], and whether the name was too long and so hashed.
pub fn sanitize_name_hashed(raw: &str) -> (String, bool) {
    let mut name: String = raw
        .chars()
        .filter_map(|c| match c {
            '*' | '/' | '.' | ':' | '_' | ' ' => Some('-'),
            '[' | ']' | '"' | '\'' | '\n' => None,
            other => Some(other),
        })
        .collect();
    let hashed = name.len() > MAX_NAME_LEN;
    if hashed {
        // Gloo hashes the string before lower-casing it, and cuts bytes, not characters.
        let digest = Md5::digest(name.as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        let prefix = String::from_utf8_lossy(&name.as_bytes()[..HASHED_PREFIX_LEN]).into_owned();
        let hex_len = MAX_NAME_LEN - HASHED_PREFIX_LEN - 1;
        name = format!("{prefix}-{}", &hex[..hex_len]);
    }
    (name.replace('.', "-").to_lowercase(), hashed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn design_vectors() {
        let cases = [
            ("default-petstore-8080".to_string(), "default-petstore-8080"),
            (
                "a".repeat(300),
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-4e5475d125a33c6190718e75adc1b70",
            ),
            (
                "payments-production-eu-west-transaction-authorization-gateway-8443".to_string(),
                "payments-production-eu-west-tra-3280707d2beaa613e35a16dbfb55484",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitize_name(&raw), want, "sanitize({raw})");
        }
        assert_eq!(
            upstream_name(
                "payments-production",
                "eu-west-transaction-authorization-gateway",
                8443
            ),
            "payments-production-eu-west-tra-3280707d2beaa613e35a16dbfb55484"
        );
    }

    #[test]
    fn replaced_and_removed_characters() {
        let cases = [
            ("a*b/c.d:e_f g", "a-b-c-d-e-f-g"),
            ("a[b]c\"d'e\nf", "abcdef"),
            ("MixedCase-Name", "mixedcase-name"),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitize_name(raw), want, "sanitize({raw:?})");
        }
    }

    #[test]
    fn hash_is_taken_before_lower_casing() {
        let upper = format!("{}-80", "A".repeat(70));
        let lower = format!("{}-80", "a".repeat(70));
        let (upper_name, lower_name) = (sanitize_name(&upper), sanitize_name(&lower));
        assert_eq!(upper_name.len(), MAX_NAME_LEN);
        assert_eq!(upper_name[..31], lower_name[..31]);
        assert_ne!(
            upper_name, lower_name,
            "the hash must see the original case"
        );
    }

    #[test]
    fn multibyte_input_never_panics() {
        let name = sanitize_name(&"é".repeat(40));
        assert!(name.len() <= MAX_NAME_LEN + 3);
    }

    /// Gloo's scheme joins namespace and name with `-`, so `a-b`/`c` and `a`/`b-c` share a name.
    /// This test pins that known ambiguity: it is Gloo's behaviour, which we must keep.
    #[test]
    fn known_ambiguity_of_the_joined_form() {
        assert_eq!(upstream_name("a-b", "c", 80), upstream_name("a", "b-c", 80));
    }

    fn dns1123_label() -> impl Strategy<Value = String> {
        "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
    }

    fn dns1035_label() -> impl Strategy<Value = String> {
        "[a-z]([-a-z0-9]{0,61}[a-z0-9])?"
    }

    fn is_dns1123_label(name: &str) -> bool {
        let bytes = name.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_NAME_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    }

    proptest! {
        #[test]
        fn names_are_dns1123_labels(ns in dns1123_label(), svc in dns1035_label(), port in 1i32..=65535) {
            let name = upstream_name(&ns, &svc, port);
            prop_assert!(is_dns1123_label(&name), "{name:?} from {ns}/{svc}:{port}");
        }
    }

    proptest! {
        // Each case is a large set already; a few cases cover plenty of pairs.
        #![proptest_config(ProptestConfig::with_cases(8))]

        #[test]
        fn distinct_inputs_never_share_a_name(
            inputs in prop::collection::hash_set((dns1123_label(), dns1035_label(), 1i32..=65535), 4000)
        ) {
            // Inputs whose joined form is equal are Gloo's known ambiguity (see above); every
            // other pair of distinct inputs must get distinct names, long or short.
            let mut seen: HashMap<String, String> = HashMap::new();
            let mut joined_seen = HashSet::new();
            for (ns, svc, port) in &inputs {
                let joined = format!("{ns}-{svc}-{port}");
                if !joined_seen.insert(joined.clone()) {
                    continue;
                }
                let name = upstream_name(ns, svc, *port);
                if let Some(previous) = seen.insert(name.clone(), joined.clone()) {
                    prop_assert!(false, "{previous} and {joined} both named {name}");
                }
            }
        }
    }
}
