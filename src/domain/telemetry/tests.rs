use super::*;

const NOW: i64 = 1_795_000_000_000;

fn tele(kind: TeleKind, payload: &str) -> Result<Decoded, Reject> {
    decode(TopicKind::Tele(kind), payload.as_bytes(), NOW).map_err(|r| r.reason)
}

#[test]
fn topics_follow_the_contract() {
    let t = parse_topic("spazi/v1/bologna/bologna-pv/tele/power").unwrap();
    assert_eq!((t.site, t.device), ("bologna", "bologna-pv"));
    assert_eq!(t.kind, TopicKind::Tele(TeleKind::Power));
    assert_eq!(
        parse_topic("spazi/v1/a/b/cmd/unlock/res").unwrap().kind,
        TopicKind::CmdResult("unlock")
    );
    for bad in [
        "spazi/v1/a/b/cmd/unlock",
        "spazi/v1/_server/status",
        "spazi/v2/a/b/status",
        "spazi/v1/A/b/status",
        "spazi/v1/a/b/tele/humour",
        "spazi/v1/a/b/tele/env/extra",
        "spazi/v1/a//status",
    ] {
        assert!(parse_topic(bad).is_none(), "{bad}");
    }
}

#[test]
fn good_payloads_become_readings() {
    let d = tele(
        TeleKind::Energy,
        &format!(r#"{{"v":1,"ts":{NOW},"seq":7,"m":{{"e_imp_wh":1200.5,"meter_epoch":2}}}}"#),
    )
    .unwrap();
    assert_eq!(
        d,
        Decoded::Readings {
            ts: NOW,
            seq: 7,
            values: vec![(Metric::EImpWh, 1200.5), (Metric::MeterEpoch, 2.0)]
        }
    );
    let d = tele(
        TeleKind::Charger,
        &format!(r#"{{"v":1,"ts":{NOW},"seq":1,"m":{{"state":"fault","p_w":0}}}}"#),
    )
    .unwrap();
    let Decoded::Readings { values, .. } = d else {
        panic!()
    };
    assert!(values.contains(&(Metric::ChargerState, CHARGER_FAULT)));
}

#[test]
fn each_kind_of_bad_message_has_its_reason() {
    let ok = |m: &str| format!(r#"{{"v":1,"ts":{NOW},"seq":1,"m":{m}}}"#);
    assert_eq!(tele(TeleKind::Env, "not json"), Err(Reject::NotJson));
    assert_eq!(
        tele(TeleKind::Env, &ok(r#"{"t_c":NaN}"#)),
        Err(Reject::NonFinite)
    );
    assert_eq!(
        tele(TeleKind::Env, &ok(r#"{"t_c":1e999}"#)),
        Err(Reject::NonFinite)
    );
    assert_eq!(
        tele(TeleKind::Env, &ok(r#"{"t_c":"21"}"#)),
        Err(Reject::Schema)
    );
    assert_eq!(
        tele(TeleKind::Env, &ok(r#"{"smell":1}"#)),
        Err(Reject::Schema)
    );
    assert_eq!(tele(TeleKind::Env, &ok(r#"{}"#)), Err(Reject::Schema));
    assert_eq!(tele(TeleKind::Env, "[1,2]"), Err(Reject::Schema));
    assert_eq!(
        tele(
            TeleKind::Env,
            &format!(r#"{{"v":1,"ts":{NOW},"seq":-1,"m":{{"t_c":1}}}}"#)
        ),
        Err(Reject::Schema)
    );
    assert_eq!(
        tele(
            TeleKind::Env,
            &format!(r#"{{"v":2,"ts":{NOW},"seq":1,"m":{{"t_c":1}}}}"#)
        ),
        Err(Reject::Schema)
    );
    let big = format!(
        r#"{{"v":1,"ts":{NOW},"seq":1,"m":{{"t_c":1}},"pad":"{}"}}"#,
        "x".repeat(5000)
    );
    assert_eq!(tele(TeleKind::Env, &big), Err(Reject::Oversized));
    let future = NOW + MAX_FUTURE_MS + 1000;
    assert_eq!(
        tele(
            TeleKind::Env,
            &format!(r#"{{"v":1,"ts":{future},"seq":1,"m":{{"t_c":1}}}}"#)
        ),
        Err(Reject::FutureTimestamp)
    );
    let old = NOW - MAX_AGE_MS - 1000;
    assert_eq!(
        tele(
            TeleKind::Env,
            &format!(r#"{{"v":1,"ts":{old},"seq":1,"m":{{"t_c":1}}}}"#)
        ),
        Err(Reject::StaleTimestamp)
    );
    assert_eq!(
        tele(TeleKind::Presence, &ok(r#"{"occupied":1}"#)),
        Err(Reject::Schema)
    );
}

#[test]
fn status_meta_and_events() {
    assert_eq!(
        decode(TopicKind::Status, br#"{"online":false}"#, NOW).unwrap(),
        Decoded::Status {
            online: false,
            ts: None
        }
    );
    let meta = decode(
        TopicKind::Meta,
        br#"{"v":1,"class":"env_sensor","zone":"bologna-open-1","report_interval_s":30,"units":{"t_c":"C"}}"#,
        NOW,
    )
    .unwrap();
    let Decoded::Meta(meta) = meta else { panic!() };
    assert_eq!(meta.class, DeviceClass::EnvSensor);
    assert_eq!(meta.report_interval_s, Some(30));
    assert!(decode(TopicKind::Meta, br#"{"v":1,"class":"toaster"}"#, NOW).is_err());
    let door = decode(
        TopicKind::Evt(EvtKind::Door),
        format!(r#"{{"v":1,"ts":{NOW},"seq":3,"m":{{"open":true}}}}"#).as_bytes(),
        NOW,
    )
    .unwrap();
    let Decoded::Event { values, kind, .. } = door else {
        panic!()
    };
    assert_eq!(kind, EvtKind::Door);
    assert_eq!(values, vec![(Metric::DoorOpen, 1.0)]);
}

#[test]
fn metric_codes_round_trip() {
    for m in Metric::ALL {
        assert_eq!(Metric::from_code(m.code()), Some(m));
        assert_eq!(Metric::from_name(m.name()), Some(m));
    }
}

#[test]
fn badge_credentials_are_kept_only_as_a_hash() {
    let d = decode(
        TopicKind::Evt(EvtKind::Badge),
        format!(r#"{{"v":1,"ts":{NOW},"seq":4,"m":{{"credential":"QR-SECRET-1234"}}}}"#).as_bytes(),
        NOW,
    )
    .unwrap();
    let Decoded::Event { body, .. } = d else {
        panic!()
    };
    assert!(!body.contains("QR-SECRET-1234"), "{body}");
    assert!(body.contains("credential_sha256"), "{body}");
}

#[test]
fn a_badge_scan_needs_its_envelope_to_carry_a_credential() {
    let ok = read_badge(br#"{"v":1,"ts":5,"seq":7,"m":{"credential":"123456"}}"#);
    assert_eq!((ok.seq, ok.ts), (Some(7), Some(5)));
    assert_eq!(ok.credential.as_deref(), Ok("123456"));
    for bad in [
        &br#"{"v":1,"ts":5,"m":{"credential":"123456"}}"#[..],
        br#"{"v":2,"ts":5,"seq":7,"m":{"credential":"123456"}}"#,
        br#"{"v":1,"ts":5,"seq":7,"m":{"credential":123456}}"#,
        br#"{"v":1,"ts":5,"seq":7,"m":{"credential":"1","x":1}}"#,
        br#"{"v":1,"ts":5,"seq":7,"m":{"credential":""}}"#,
        b"not json",
    ] {
        assert_eq!(
            read_badge(bad).credential,
            Err(crate::domain::DenyReason::Malformed),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(read_badge(br#"{"v":1,"ts":5,"m":{}}"#).seq, None);
}
