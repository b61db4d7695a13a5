//! Mosquitto's side of the device identities: password file lines and the ACL file.
//!
//! In production every device connects to Mosquitto as its own user (username = device id) and the
//! service as `spazi-service`; the broker's `acl_file` confines each identity to its own topics of
//! the contract in `mqtt-config/CONTRACT.md`. This module writes both files. It does no network I/O
//! and needs no runtime.
//!
//! Password lines use Mosquitto 2.0's default format, the one `mosquitto_passwd` writes:
//!
//! ```text
//! username:$7$101$<base64 salt, 12 bytes>$<base64 PBKDF2-HMAC-SHA512, 64 bytes>
//! ```
//!
//! (`101` is the iteration count; base64 is the standard alphabet with padding.)

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

pub use crate::domain::telemetry::valid_id;

/// The username of the service's own broker identity.
pub const SERVICE_USER: &str = "spazi-service";

/// Iterations Mosquitto 2.0 uses for `$7$` hashes.
pub const PBKDF2_ITERATIONS: u32 = 101;

/// Topic root of contract v1.
pub const TOPIC_ROOT: &str = "spazi/v1";

const SALT_LEN: usize = 12;
const HASH_LEN: usize = 64;
/// A line with more iterations than this is refused rather than computed: a hostile file must not
/// be able to stall a verification.
const MAX_ITERATIONS: u32 = 1_000_000;
const PASSWORD_LEN: usize = 32;
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const MAX_USERNAME_LEN: usize = 128;
/// The topic level under which the service publishes its own status.
const SERVER_BRANCH: &str = "_server";

/// Hashes `password` into Mosquitto's `$7$` format with a fresh random salt.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    hash_with_salt(password, &salt, PBKDF2_ITERATIONS)
}

fn hash_with_salt(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

/// The full password file line for `username`: `username:$7$…`.
pub fn passwd_line(username: &str, password: &str) -> String {
    format!("{username}:{}", hash_password(password))
}

/// Checks `password` against a hash as stored in a Mosquitto password file.
///
/// `line_hash` is the part after `username:`; a whole line is accepted too, and surrounding
/// whitespace is ignored. Both formats Mosquitto reads are understood: `$7$` (PBKDF2-HMAC-SHA512,
/// the 2.0 default) and `$6$` (salted SHA-512, the 1.6 default). Anything malformed is `false`.
pub fn verify_password(line_hash: &str, password: &str) -> bool {
    let line = line_hash.trim();
    // Base64 and the `$` separators never contain ':', so whatever precedes the last one is a
    // username.
    let hash = line.rsplit(':').next().unwrap_or(line);
    let mut parts = hash.split('$');
    if parts.next() != Some("") {
        return false;
    }
    match parts.next() {
        Some("7") => {
            let (Some(iterations), Some(salt), Some(expected), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            let Ok(iterations) = iterations.parse::<u32>() else {
                return false;
            };
            if iterations == 0 || iterations > MAX_ITERATIONS {
                return false;
            }
            let (Ok(salt), Ok(expected)) = (STANDARD.decode(salt), STANDARD.decode(expected))
            else {
                return false;
            };
            if expected.len() != HASH_LEN {
                return false;
            }
            let mut out = [0u8; HASH_LEN];
            pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, iterations, &mut out);
            out.ct_eq(&expected).into()
        }
        Some("6") => {
            let (Some(salt), Some(expected), None) = (parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            let (Ok(salt), Ok(expected)) = (STANDARD.decode(salt), STANDARD.decode(expected))
            else {
                return false;
            };
            let mut digest = Sha512::new();
            digest.update(password.as_bytes());
            digest.update(&salt);
            let out = digest.finalize();
            out[..].ct_eq(&expected).into()
        }
        _ => false,
    }
}

/// A fresh password for a broker identity: 32 characters of the URL-safe alphabet
/// (`A–Z a–z 0–9 - _`, 192 bits) from the operating system's CSPRNG.
pub fn generate_password() -> String {
    let mut bytes = [0u8; PASSWORD_LEN];
    OsRng.fill_bytes(&mut bytes);
    // 64 symbols: the low six bits of a uniform byte pick one uniformly.
    bytes
        .iter()
        .map(|b| URL_SAFE[usize::from(b & 63)] as char)
        .collect()
}

/// Whether `username` can stand in the password file and in an ACL `user` line: 1 to 128
/// printable ASCII characters without spaces and without `:` (the password file's separator),
/// not starting with `#` (a comment line to Mosquitto). Line breaks, which would add lines of
/// their own to either file, are thereby excluded.
pub fn is_valid_username(username: &str) -> bool {
    (1..=MAX_USERNAME_LEN).contains(&username.len())
        && !username.starts_with('#')
        && username.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Whether an identity's ids may be written into the ACL: the username as
/// [`is_valid_username`], the site and device ids as the contract's ids
/// ([`valid_id`]: which keeps MQTT wildcards and topic separators out), and a site never
/// `_server`, the service's own branch of the topic tree.
fn is_valid_identity(id: &AclIdentity) -> bool {
    is_valid_username(&id.username)
        && valid_id(&id.site_id)
        && valid_id(&id.device_id)
        && id.site_id != SERVER_BRANCH
}

/// A device's (or a gateway's) broker identity, as the ACL needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclIdentity {
    /// The Mosquitto username; by convention the device id.
    pub username: String,
    /// The site id of the HTTP API, the `{site}` level of the topics.
    pub site_id: String,
    /// The device id of the HTTP API, the `{device}` level of the topics.
    pub device_id: String,
    /// A site gateway speaks for every device of its site, not only for itself.
    pub gateway: bool,
}

/// The ACL block of one device: `user …`, then the topics it may write (`status`, `meta`,
/// `tele/+`, `evt/+`, `cmd/+/res`) and read (`cmd/+`). A gateway gets the same sub-paths for every
/// device of its own site (`spazi/v1/{site}/+/…`), and never `cmd/+` for writing.
///
/// An identity with an unusable username or id (see [`is_valid_username`] and the contract's
/// [`valid_id`]) grants nothing: the block is a single
/// comment line.
pub fn device_acl(id: &AclIdentity) -> String {
    if !is_valid_identity(id) {
        return "# skipped: an identity with an invalid username, site or device id\n".into();
    }
    let device = if id.gateway { "+" } else { &id.device_id };
    let base = format!("{TOPIC_ROOT}/{}/{device}", id.site_id);
    let mut out = String::new();
    if id.gateway {
        let _ = writeln!(
            out,
            "# gateway {} of site {}: speaks for every device of its site",
            id.device_id, id.site_id
        );
    } else {
        let _ = writeln!(out, "# device {} at site {}", id.device_id, id.site_id);
    }
    let _ = writeln!(out, "user {}", id.username);
    for sub in ["status", "meta", "tele/+", "evt/+", "cmd/+/res"] {
        let _ = writeln!(out, "topic write {base}/{sub}");
    }
    let _ = writeln!(out, "topic read {base}/cmd/+");
    out
}

/// The ACL block of the service: it reads the whole v1 tree (also through shared subscriptions
/// `$share/spazi/spazi/v1/…`), writes commands to any device and its own birth / last will.
pub fn service_acl(username: &str) -> String {
    if !is_valid_username(username) {
        return "# skipped: the service identity has an invalid username\n".into();
    }
    format!(
        "# the service\n\
         user {username}\n\
         topic read {TOPIC_ROOT}/#\n\
         topic write {TOPIC_ROOT}/+/+/cmd/+\n\
         topic write {TOPIC_ROOT}/{SERVER_BRANCH}/status\n\
         topic write {TOPIC_ROOT}/{SERVER_BRANCH}/grants\n"
    )
}

/// A whole Mosquitto `acl_file`: the service's block, then one block per device. No topic is
/// granted outside a `user` block, so an anonymous client (were one ever allowed) gets nothing.
pub fn acl_file(service_user: &str, devices: &[AclIdentity]) -> String {
    let mut out = String::from(
        "# Mosquitto acl_file for the Spazi device contract v1 (mqtt-config/CONTRACT.md).\n\
         # Generated by `spazi mqtt credentials`; reload Mosquitto with SIGHUP after a change.\n\n",
    );
    out.push_str(&service_acl(service_user));
    for device in devices {
        out.push('\n');
        out.push_str(&device_acl(device));
    }
    out
}

/// Sets `username`'s password in the Mosquitto password file at `path`.
///
/// The file is created with mode 0600 if absent. An existing line for the user is replaced (a
/// duplicate one dropped); every other line, comments included, is kept as it was. The new file is
/// written beside the old one and renamed over it, so Mosquitto never reads a half-written file; an
/// existing file's permissions (and, when allowed, its owner) carry over.
pub fn upsert_password(path: &Path, username: &str, password: &str) -> io::Result<()> {
    if !is_valid_username(username) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a broker username is 1 to 128 printable ASCII characters without spaces or ':'",
        ));
    }
    let (old, metadata) = match fs::read_to_string(path) {
        Ok(text) => (text, Some(fs::metadata(path)?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), None),
        Err(e) => return Err(e),
    };
    let new_line = passwd_line(username, password);
    let mut replaced = false;
    let mut text = String::with_capacity(old.len() + new_line.len() + 1);
    for line in old.lines() {
        if line.split(':').next() == Some(username) && line.contains(':') {
            if !replaced {
                text.push_str(&new_line);
                text.push('\n');
                replaced = true;
            }
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    if !replaced {
        text.push_str(&new_line);
        text.push('\n');
    }
    write_atomically(path, text.as_bytes(), metadata.as_ref())
}

fn write_atomically(
    path: &Path,
    contents: &[u8],
    previous: Option<&fs::Metadata>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut suffix = [0u8; 6];
    OsRng.fill_bytes(&mut suffix);
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        suffix.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    ));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        if let Some(previous) = previous {
            file.set_permissions(previous.permissions())?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                // Only root may give a file away; otherwise it stays ours, as the old one was.
                let _ =
                    std::os::unix::fs::fchown(&file, Some(previous.uid()), Some(previous.gid()));
            }
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every platform can open a directory.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests;
