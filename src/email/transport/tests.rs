use super::*;

fn sample(calendar: Option<(String, String)>) -> OutgoingMail {
    OutgoingMail {
        message_id: "booking-42-confirmed@spazi.poste.it".to_owned(),
        from: "Spazi per l'Italia <noreply@spazi.poste.it>".to_owned(),
        to: "Mario Rossi <mario.rossi@example.it>".to_owned(),
        subject: "Booking confirmed - Spazi Bologna Centro".to_owned(),
        text: "Ciao Mario,\nthe booking is confirmed.\n".to_owned(),
        calendar,
        image: None,
    }
}

fn ics() -> String {
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:booking-42@spazi.poste.it\r\nSUMMARY:Spazi – Scrivania D-12\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n".to_owned()
}

fn eml_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn file_transport_writes_eml_with_invitation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("mail");
    let config = MailConfig::parse(&format!("file://{}", dir.display())).unwrap();
    let mailer = Mailer::new(&config).unwrap();
    assert!(dir.is_dir(), "directory is created");

    mailer
        .send(&sample(Some(("REQUEST".to_owned(), ics()))))
        .unwrap();

    let files = eml_files(&dir);
    assert_eq!(files.len(), 1);
    let eml = &files[0];
    assert!(
        eml.contains("Subject: Booking confirmed - Spazi Bologna Centro"),
        "{eml}"
    );
    assert!(eml.contains("the booking is confirmed."));
    assert!(eml.contains("BEGIN:VCALENDAR"));
    assert!(eml.contains("Message-ID: <booking-42-confirmed@spazi.poste.it>"));
    assert!(eml.contains("multipart/mixed"));
    assert!(eml.contains("multipart/alternative"));
    assert!(eml.contains("Content-Type: text/plain; charset=utf-8"));
    // The mime crate lowercases the charset value, which is case-insensitive anyway.
    let lower = eml.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/calendar; charset=utf-8; method=request"));
    assert!(lower.contains("content-type: text/calendar; method=request; charset=utf-8"));
    assert!(eml.contains("filename=\"invite.ics\""));
    // Inline part and attachment both carry the calendar.
    assert_eq!(eml.matches("BEGIN:VCALENDAR").count(), 2);
}

#[test]
fn file_transport_text_only_and_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(&MailConfig::File {
        dir: tmp.path().to_path_buf(),
    })
    .unwrap();
    let mut mail = sample(None);
    mail.subject = "Prenotazione confermata / Booking confirmed – Spazi".to_owned();
    mail.text = "la tua prenotazione è confermata\n".to_owned();
    mailer.send(&mail).unwrap();

    let files = eml_files(tmp.path());
    assert_eq!(files.len(), 1);
    let eml = &files[0];
    assert!(!eml.contains("text/calendar"));
    assert!(!eml.contains("multipart"));
    let subject = eml.lines().find(|l| l.starts_with("Subject:")).unwrap();
    assert!(subject.contains("=?utf-8?"), "{subject}");
    assert!(eml.contains("Content-Transfer-Encoding: quoted-printable"));
    assert!(eml.contains("=C3=A8 confermata"), "{eml}");
}

#[test]
fn message_id_is_stable_and_normalized() {
    let mut mail = sample(None);
    let a = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
    let b = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
    let id_line = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("Message-ID:"))
            .unwrap()
            .to_owned()
    };
    assert_eq!(id_line(&a), id_line(&b));
    assert_eq!(
        id_line(&a),
        "Message-ID: <booking-42-confirmed@spazi.poste.it>"
    );

    mail.message_id = "<already@bracketed.example>".to_owned();
    let c = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
    assert_eq!(id_line(&c), "Message-ID: <already@bracketed.example>");

    mail.message_id = "booking-42-cancelled".to_owned();
    let d = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
    assert_eq!(
        id_line(&d),
        "Message-ID: <booking-42-cancelled@spazi.poste.it>"
    );

    for bad in ["", "a b@c", "x\r\nBcc: y@z", "a@b@c", "@x", "<a<b>"] {
        mail.message_id = bad.to_owned();
        assert!(
            matches!(build_message(&mail), Err(MailError::InvalidMessage(_))),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn cancel_method_and_bad_method() {
    let mail = sample(Some(("cancel".to_owned(), ics())));
    let eml = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
    assert!(eml.contains("text/calendar; charset=utf-8; method=CANCEL"));

    let mail = sample(Some(("REQUEST; x=1".to_owned(), ics())));
    assert!(matches!(
        build_message(&mail),
        Err(MailError::InvalidMessage(_))
    ));
}

#[test]
fn bad_addresses_are_rejected() {
    let mut mail = sample(None);
    mail.to = "not an address".to_owned();
    let err = build_message(&mail).unwrap_err();
    assert!(
        matches!(err, MailError::Address { field: "to", .. }),
        "{err}"
    );
}

#[test]
fn subject_cannot_inject_headers() {
    let mut mail = sample(None);
    mail.subject = "Hello\r\nBcc: evil@example.com".to_owned();
    let eml = String::from_utf8(build_message(&mail).unwrap().formatted()).unwrap();
    assert!(!eml.lines().any(|l| l.starts_with("Bcc:")), "{eml}");
}

fn smtp(url: &str) -> SmtpSettings {
    match MailConfig::parse(url) {
        Ok(MailConfig::Smtp { url }) => SmtpSettings::parse(&url).unwrap(),
        other => panic!("{url}: {other:?}"),
    }
}

#[test]
fn parse_accepts_valid_urls() {
    let s = smtp("smtp://127.0.0.1:2525");
    assert_eq!(
        (s.host.as_str(), s.port, s.security),
        ("127.0.0.1", 2525, Security::None)
    );
    assert!(s.credentials.is_none());

    let s = smtp("smtp://mail.example.it");
    assert_eq!((s.port, s.security), (25, Security::None));

    let s = smtp("smtps://smtp.example.it:465");
    assert_eq!((s.port, s.security), (465, Security::Implicit));
    assert_eq!(smtp("smtps://smtp.example.it").port, 465);

    let s = smtp("smtp://user%40poste.it:p%40ss%3Aw0rd@smtp.example.it:587?tls=required");
    assert_eq!((s.port, s.security), (587, Security::StartTls));
    assert_eq!(
        s.credentials,
        Some(("user@poste.it".to_owned(), "p@ss:w0rd".to_owned()))
    );
    assert_eq!(smtp("smtp://h?tls=required").port, 587);
    assert_eq!(
        smtp("smtp://h:26?tls=opportunistic").security,
        Security::Opportunistic
    );
    assert_eq!(smtp("smtp://h:26?tls=none").security, Security::None);
    assert_eq!(smtp("smtp://[::1]:2525").host, "::1");
    assert_eq!(smtp("  smtp://h:1/  ").port, 1);

    match MailConfig::parse("file://./mail").unwrap() {
        MailConfig::File { dir } => assert_eq!(dir, PathBuf::from("./mail")),
        other => panic!("{other:?}"),
    }
    match MailConfig::parse("file:///var/spool/spazi").unwrap() {
        MailConfig::File { dir } => assert_eq!(dir, PathBuf::from("/var/spool/spazi")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn parse_rejects_invalid_urls() {
    for bad in [
        "",
        "file://",
        "http://example.com",
        "smtp://",
        "smtp:///nohost",
        "smtp://h:99999",
        "smtp://h?tls=maybe",
        "smtp://h?tls=none&tls=required",
        "smtp://h?foo=bar",
        "smtp://h/ehlo-name",
        "smtps://h?tls=required",
        "smtp://user@h",
        "smtp://:secret@h",
        "not a url",
    ] {
        assert!(
            matches!(MailConfig::parse(bad), Err(MailError::InvalidUrl { .. })),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn errors_and_debug_never_show_passwords() {
    let secret = "S3cr3tPa55";
    for url in [
        format!("smtp://user:{secret}@h?tls=maybe"),
        format!("smtp://user:{secret}@h/path"),
        format!("smtp://user:{secret}@h:99999"),
        format!("smtp://user:{secret}@h:port"),
        format!("ftp://user:{secret}@h"),
        format!("user:{secret}@h"),
        format!("smtp://user:{secret}@h?x=a@b"),
    ] {
        let err = MailConfig::parse(&url).unwrap_err();
        assert!(!err.to_string().contains(secret), "{err}");
        assert!(!format!("{err:?}").contains(secret), "{err:?}");
    }

    let config = MailConfig::parse(&format!("smtp://user:{secret}@127.0.0.1:2525")).unwrap();
    assert!(!format!("{config:?}").contains(secret));
    assert!(!config.describe().contains(secret));
    let mailer = Mailer::new(&config).unwrap();
    assert!(!format!("{mailer:?}").contains(secret));
    assert!(!mailer.target().contains(secret));
}

#[test]
fn smtp_mailer_builds_for_every_security_mode() {
    for url in [
        "smtp://127.0.0.1:2525",
        "smtp://localhost:2525?tls=opportunistic",
        "smtp://u:p@localhost:2587?tls=required",
        "smtps://localhost:2465",
    ] {
        Mailer::new(&MailConfig::parse(url).unwrap()).unwrap();
    }
}

/// Minimal plain-SMTP sink that accepts one message and returns its DATA.
fn smtp_sink() -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        writer.write_all(b"220 sink ESMTP\r\n").unwrap();
        let mut data = String::new();
        let mut in_data = false;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    writer.write_all(b"250 queued\r\n").unwrap();
                } else {
                    data.push_str(&line);
                }
                continue;
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 sink\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    writer.write_all(b"221 bye\r\n").unwrap();
                    break;
                }
                _ => b"250 ok\r\n",
            };
            writer.write_all(reply).unwrap();
        }
        data
    });
    (port, handle)
}

#[test]
fn plain_smtp_delivers_message() {
    let (port, sink) = smtp_sink();
    let mailer =
        Mailer::new(&MailConfig::parse(&format!("smtp://127.0.0.1:{port}")).unwrap()).unwrap();
    mailer
        .send(&sample(Some(("CANCEL".to_owned(), ics()))))
        .unwrap();
    let data = sink.join().unwrap();
    assert!(
        data.contains("Message-ID: <booking-42-confirmed@spazi.poste.it>"),
        "{data}"
    );
    assert!(data.contains("Subject: Booking confirmed - Spazi Bologna Centro"));
    assert!(data.contains("method=CANCEL"));
    assert!(data.contains("BEGIN:VCALENDAR"));
}

#[test]
fn smtp_send_to_closed_port_fails_cleanly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mailer =
        Mailer::new(&MailConfig::parse(&format!("smtp://127.0.0.1:{port}")).unwrap()).unwrap();
    let err = mailer.send(&sample(None)).unwrap_err();
    assert!(matches!(err, MailError::Smtp(_)), "{err}");
}
