//! The AWS credentials a Secret holds, read as Gloo reads them: pure. Below both the Secret
//! watches (`source`) and function discovery's state (`lambda`), which both speak of them.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;

/// Keys of the credentials Secret, as Gloo reads them.
pub const ACCESS_KEY_ID: &str = "aws_access_key_id";
pub const SECRET_ACCESS_KEY: &str = "aws_secret_access_key";
pub const SESSION_TOKEN: &str = "aws_session_token";

/// Static credentials from a Secret. Never printed: `Debug` shows only the access key's last
/// four characters, which AWS's own consoles show too.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail: String = self
            .access_key_id
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        write!(f, "StaticKeys(…{tail})")
    }
}

/// What a credentials Secret's watch saw.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretSeen {
    /// The Secret exists: its credentials, or the keys it lacks.
    Present(Result<StaticKeys, Vec<&'static str>>),
    /// The Secret does not exist (after a complete list, or deleted).
    Missing,
    /// The watch failed (it is retried with backoff); the message never holds Secret data.
    WatchError(String),
}

/// Reads the credentials out of a Secret's data; on failure, the names of the missing keys.
/// Values are trimmed: a Secret made from a file often ends in a newline.
pub fn keys_from_secret(
    data: Option<&BTreeMap<String, ByteString>>,
) -> Result<StaticKeys, Vec<&'static str>> {
    let value = |key: &str| {
        data.and_then(|d| d.get(key))
            .map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match (value(ACCESS_KEY_ID), value(SECRET_ACCESS_KEY)) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(StaticKeys {
            access_key_id,
            secret_access_key,
            session_token: value(SESSION_TOKEN),
        }),
        (id, secret) => Err([
            id.is_none().then_some(ACCESS_KEY_ID),
            secret.is_none().then_some(SECRET_ACCESS_KEY),
        ]
        .into_iter()
        .flatten()
        .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn secrets_give_keys_or_say_what_is_missing() {
        let keys = keys_from_secret(Some(&data(&[
            ("aws_access_key_id", "AKIDEXAMPLE1234\n"),
            ("aws_secret_access_key", "s3cr3t"),
        ])))
        .expect("complete");
        assert_eq!(keys.access_key_id, "AKIDEXAMPLE1234");
        assert_eq!(keys.session_token, None);
        assert_eq!(
            keys_from_secret(Some(&data(&[
                ("accessKey", "x"),
                ("aws_secret_access_key", "y")
            ]))),
            Err(vec![ACCESS_KEY_ID])
        );
        assert_eq!(
            keys_from_secret(None),
            Err(vec![ACCESS_KEY_ID, SECRET_ACCESS_KEY])
        );
        assert_eq!(
            keys_from_secret(Some(&data(&[
                ("aws_access_key_id", " "),
                ("aws_secret_access_key", "y")
            ]))),
            Err(vec![ACCESS_KEY_ID]),
            "blank is missing"
        );
    }
}
