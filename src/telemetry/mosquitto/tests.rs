use std::path::Path;
use std::process::Command;

use super::*;

const MOSQUITTO_PASSWD: &str = "mosquitto_passwd";

/// Runs the real `mosquitto_passwd -b`; a machine without it fails the test rather than skip it.
fn mosquitto_passwd(args: &[&str]) {
    let status = Command::new(MOSQUITTO_PASSWD)
        .args(args)
        .status()
        .unwrap_or_else(|e| {
            panic!("`{MOSQUITTO_PASSWD}` could not be run ({e}); install Mosquitto 2.0 (the mosquitto package)")
        });
    assert!(
        status.success(),
        "mosquitto_passwd {args:?} failed: {status}"
    );
}

fn hash_of(path: &Path, username: &str) -> String {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{username}:")))
        .unwrap_or_else(|| panic!("no line for {username} in {text}"))
        .to_string()
}

fn identity(username: &str, site: &str, device: &str, gateway: bool) -> AclIdentity {
    AclIdentity {
        username: username.into(),
        site_id: site.into(),
        device_id: device.into(),
        gateway,
    }
}

#[test]
fn hash_has_mosquittos_format_and_verifies() {
    let hash = hash_password("correct horse");
    let parts: Vec<&str> = hash.split('$').collect();
    assert_eq!(parts.len(), 5, "{hash}");
    assert_eq!((parts[0], parts[1], parts[2]), ("", "7", "101"));
    assert_eq!(STANDARD.decode(parts[3]).unwrap().len(), 12);
    assert_eq!(parts[3].len(), 16);
    assert_eq!(STANDARD.decode(parts[4]).unwrap().len(), 64);
    assert_eq!(parts[4].len(), 88);
    assert!(parts[4].ends_with("=="));

    assert!(verify_password(&hash, "correct horse"));
    assert!(verify_password(&format!("alice:{hash}\n"), "correct horse"));
    assert!(!verify_password(&hash, "correct horse "));
    assert!(!verify_password(&hash, ""));
}

#[test]
fn each_hash_has_its_own_salt() {
    assert_ne!(hash_password("same"), hash_password("same"));
}

#[test]
fn a_known_vector_verifies() {
    let salt = [7u8; 12];
    let hash = hash_with_salt("s3cret", &salt, PBKDF2_ITERATIONS);
    assert!(hash.starts_with("$7$101$BwcHBwcHBwcHBwcH$"), "{hash}");
    assert!(verify_password(&hash, "s3cret"));
}

#[test]
fn malformed_hashes_never_verify() {
    let good = hash_password("pw");
    let parts: Vec<&str> = good.split('$').collect();
    for bad in [
        String::new(),
        "pw".into(),
        "$7$".into(),
        format!("$7$0${}${}", parts[3], parts[4]),
        format!("$7$999999999${}${}", parts[3], parts[4]),
        format!("$7$abc${}${}", parts[3], parts[4]),
        format!("$7$101$!!!${}", parts[4]),
        format!("$7$101${}$", parts[3]),
        format!("$7$101${}${}$extra", parts[3], parts[4]),
        format!("$8$101${}${}", parts[3], parts[4]),
        format!("$7$101${}${}", parts[3], &parts[4][..40]),
    ] {
        assert!(!verify_password(&bad, "pw"), "{bad:?} verified");
    }
}

#[test]
fn a_line_made_by_mosquitto_passwd_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let file_s = file.to_str().unwrap();
    mosquitto_passwd(&["-c", "-b", file_s, "alice", "alice-Pa55"]);
    mosquitto_passwd(&["-b", file_s, "bob", "b0b:with:colons"]);
    let alice = hash_of(&file, "alice");
    assert!(alice.starts_with("$7$101$"), "{alice}");
    assert!(verify_password(&alice, "alice-Pa55"));
    assert!(!verify_password(&alice, "alice-pa55"));
    let bob = hash_of(&file, "bob");
    assert!(verify_password(&bob, "b0b:with:colons"));
    assert!(verify_password(&format!("bob:{bob}"), "b0b:with:colons"));
}

#[test]
fn a_legacy_sha512_line_made_by_mosquitto_passwd_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    mosquitto_passwd(&[
        "-H",
        "sha512",
        "-c",
        "-b",
        file.to_str().unwrap(),
        "carol",
        "old-style",
    ]);
    let carol = hash_of(&file, "carol");
    assert!(carol.starts_with("$6$"), "{carol}");
    assert!(verify_password(&carol, "old-style"));
    assert!(!verify_password(&carol, "new-style"));
}

#[test]
fn generated_passwords_are_long_url_safe_and_distinct() {
    let a = generate_password();
    let b = generate_password();
    assert!(a.len() >= 24, "{a}");
    assert_ne!(a, b);
    for p in [&a, &b] {
        assert!(
            p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{p}"
        );
    }
    // Over many draws every symbol of the alphabet shows up: no bias towards a subset.
    let mut seen = [false; 256];
    for _ in 0..200 {
        for c in generate_password().bytes() {
            seen[usize::from(c)] = true;
        }
    }
    assert!(URL_SAFE.iter().all(|&c| seen[usize::from(c)]));
}

#[test]
fn usernames_that_would_break_a_file_are_invalid() {
    for ok in ["torino-env-01", "spazi-service", "Ops.Admin_2", "a"] {
        assert!(is_valid_username(ok), "{ok}");
    }
    let long = "x".repeat(129);
    for bad in ["", "a:b", "a b", "a\nb", "a\tb", "#admin", "città", &long] {
        assert!(!is_valid_username(bad), "{bad:?}");
    }
}

#[test]
fn a_device_may_write_its_own_topics_and_read_its_commands() {
    let acl = device_acl(&identity("torino-env-01", "torino", "torino-env-01", false));
    let lines: Vec<&str> = acl.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "user torino-env-01",
            "topic write spazi/v1/torino/torino-env-01/status",
            "topic write spazi/v1/torino/torino-env-01/meta",
            "topic write spazi/v1/torino/torino-env-01/tele/+",
            "topic write spazi/v1/torino/torino-env-01/evt/+",
            "topic write spazi/v1/torino/torino-env-01/cmd/+/res",
            "topic read spazi/v1/torino/torino-env-01/cmd/+",
        ]
    );
}

#[test]
fn a_gateway_speaks_for_its_site_but_never_writes_commands() {
    let acl = device_acl(&identity("torino-gw", "torino", "torino-gw", true));
    let lines: Vec<&str> = acl.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "user torino-gw",
            "topic write spazi/v1/torino/+/status",
            "topic write spazi/v1/torino/+/meta",
            "topic write spazi/v1/torino/+/tele/+",
            "topic write spazi/v1/torino/+/evt/+",
            "topic write spazi/v1/torino/+/cmd/+/res",
            "topic read spazi/v1/torino/+/cmd/+",
        ]
    );
    assert!(!acl.contains("write spazi/v1/torino/+/cmd/+\n"));
}

#[test]
fn the_service_reads_everything_and_writes_commands_and_its_status() {
    assert_eq!(
        service_acl("spazi-service"),
        "# the service\n\
         user spazi-service\n\
         topic read spazi/v1/#\n\
         topic write spazi/v1/+/+/cmd/+\n\
         topic write spazi/v1/_server/status\n\
         topic write spazi/v1/_server/grants\n"
    );
}

#[test]
fn an_invalid_identity_grants_nothing() {
    for id in [
        identity("evil\ntopic readwrite #", "torino", "x", false),
        identity("x", "torino/+", "x", false),
        identity("x", "torino", "#", false),
        identity("x", "_server", "x", true),
        identity("x", "Torino", "x", false),
        identity("x", "torino", "", false),
    ] {
        let acl = device_acl(&id);
        assert!(acl.lines().all(|l| l.starts_with('#')), "{acl}");
    }
    assert!(service_acl("a b").lines().all(|l| l.starts_with('#')));
}

#[test]
fn the_acl_file_has_the_service_then_every_device() {
    let devices = [
        identity("torino-env-01", "torino", "torino-env-01", false),
        identity("bari-gw", "bari", "bari-gw", true),
    ];
    let text = acl_file(SERVICE_USER, &devices);
    let users: Vec<&str> = text.lines().filter(|l| l.starts_with("user ")).collect();
    assert_eq!(
        users,
        ["user spazi-service", "user torino-env-01", "user bari-gw"]
    );
    // Nothing is granted before the first `user` line (it would apply to every client).
    let first_user = text.find("\nuser ").unwrap();
    assert!(!text[..first_user].contains("topic "));
    assert!(text.contains(&service_acl(SERVICE_USER)));
    for d in &devices {
        assert!(text.contains(&device_acl(d)));
    }
    assert!(text.ends_with('\n'));
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn upsert_creates_the_file_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    upsert_password(&path, "alice", "one").unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(verify_password(&hash_of(&path, "alice"), "one"));
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn upsert_replaces_one_user_and_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let path_s = path.to_str().unwrap();
    mosquitto_passwd(&["-c", "-b", path_s, "alice", "alice-pw"]);
    fs::write(
        &path,
        format!(
            "# operators: keep this comment\n{}\nalice-2:{}\n",
            fs::read_to_string(&path).unwrap().trim_end(),
            hash_password("alice-2-pw")
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    }
    upsert_password(&path, "bob", "bob-pw").unwrap();
    upsert_password(&path, "alice", "alice-new").unwrap();

    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "# operators: keep this comment");
    assert!(lines[1].starts_with("alice:"), "alice keeps her place");
    assert!(lines[2].starts_with("alice-2:"));
    assert!(lines[3].starts_with("bob:"));
    assert!(verify_password(lines[1], "alice-new"));
    assert!(!verify_password(lines[1], "alice-pw"));
    assert!(verify_password(lines[2], "alice-2-pw"));
    assert!(verify_password(lines[3], "bob-pw"));
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o640, "an existing file keeps its permissions");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    // mosquitto_passwd reads the result as its own file: it can update a user in it.
    mosquitto_passwd(&["-b", path_s, "bob", "bob-pw-2"]);
    assert!(verify_password(&hash_of(&path, "bob"), "bob-pw-2"));
    assert!(verify_password(&hash_of(&path, "alice"), "alice-new"));
}

#[test]
fn upsert_drops_a_duplicate_line_of_the_same_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    fs::write(
        &path,
        format!(
            "carol:{}\ndave:{}\ncarol:{}",
            hash_password("a"),
            hash_password("d"),
            hash_password("b")
        ),
    )
    .unwrap();
    upsert_password(&path, "carol", "c").unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let carols: Vec<&str> = text.lines().filter(|l| l.starts_with("carol:")).collect();
    assert_eq!(carols.len(), 1, "{text}");
    assert!(verify_password(carols[0], "c"));
    assert!(verify_password(&hash_of(&path, "dave"), "d"));
    assert!(text.ends_with('\n'));
}

#[test]
fn upsert_refuses_a_username_that_would_break_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    for bad in ["", "a:b", "a\nb", "a b"] {
        let err = upsert_password(&path, bad, "pw").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
    assert!(!path.exists());
}
