use super::*;

fn grant(site: &str, zone: &str, from: i64, until: i64, state: GrantState) -> Grant {
    Grant {
        booking_id: format!("b-{site}-{zone}-{from}"),
        user_id: "u".into(),
        site_id: site.into(),
        zone_id: zone.into(),
        resource_id: "r".into(),
        token_sha256: credential_hash("t"),
        pin_sha256: credential_hash("123456"),
        starts_ms: from + ENTRY_EARLY.num_milliseconds(),
        ends_ms: until - EXIT_GRACE.num_milliseconds(),
        valid_from_ms: from,
        valid_until_ms: until,
        state,
    }
}

const ENTRANCE: Door = Door {
    site_id: "s1",
    zone_id: None,
};

#[test]
fn a_grant_inside_its_window_opens_the_entrance_and_its_zone_door_only() {
    let g = grant("s1", "z1", 1_000, 2_000, GrantState::Active);
    assert!(decide([&g], ENTRANCE, 1_000).is_ok());
    let zone_door = Door {
        site_id: "s1",
        zone_id: Some("z1"),
    };
    assert!(decide([&g], zone_door, 1_999).is_ok());
    let other = Door {
        site_id: "s1",
        zone_id: Some("z2"),
    };
    assert_eq!(decide([&g], other, 1_500), Err(DenyReason::WrongZone));
}

#[test]
fn each_refusal_has_its_reason() {
    let g = grant("s1", "z1", 1_000, 2_000, GrantState::Active);
    assert_eq!(decide([&g], ENTRANCE, 999), Err(DenyReason::NotYetValid));
    assert_eq!(decide([&g], ENTRANCE, 2_000), Err(DenyReason::Expired));
    let c = grant("s1", "z1", 1_000, 2_000, GrantState::Cancelled);
    assert_eq!(decide([&c], ENTRANCE, 1_500), Err(DenyReason::Cancelled));
    let r = grant("s1", "z1", 1_000, 2_000, GrantState::Released);
    assert_eq!(decide([&r], ENTRANCE, 1_500), Err(DenyReason::Released));
    let elsewhere = grant("s2", "z9", 1_000, 2_000, GrantState::Active);
    assert_eq!(
        decide([&elsewhere], ENTRANCE, 1_500),
        Err(DenyReason::WrongSite)
    );
    assert_eq!(
        decide(std::iter::empty::<&Grant>(), ENTRANCE, 1_500),
        Err(DenyReason::UnknownCredential)
    );
}

#[test]
fn among_shared_pins_a_valid_grant_wins_and_otherwise_the_nearest_window_speaks() {
    let old = grant("s1", "z1", 0, 100, GrantState::Active);
    let now = grant("s1", "z1", 1_000, 2_000, GrantState::Active);
    assert_eq!(
        decide([&old, &now], ENTRANCE, 1_500).map(|g| g.valid_from_ms),
        Ok(1_000)
    );
    let later = grant("s1", "z1", 5_000, 6_000, GrantState::Active);
    assert_eq!(
        decide([&old, &later], ENTRANCE, 4_900),
        Err(DenyReason::NotYetValid)
    );
    assert_eq!(
        decide([&old, &later], ENTRANCE, 150),
        Err(DenyReason::Expired)
    );
}

#[test]
fn credentials_are_checked_for_shape() {
    assert_eq!(check_credential(""), Err(DenyReason::Malformed));
    assert_eq!(check_credential("12 34"), Err(DenyReason::Malformed));
    assert_eq!(check_credential("pin\n"), Err(DenyReason::Malformed));
    assert_eq!(
        check_credential(&"x".repeat(129)),
        Err(DenyReason::Malformed)
    );
    assert_eq!(check_credential("123456"), Ok("123456"));
    let token = token_from([0xab; 16]);
    assert_eq!(token.len(), 37);
    assert!(token.starts_with(TOKEN_PREFIX));
    assert_eq!(check_credential(&token), Ok(token.as_str()));
    assert_eq!(pin_from(42), "000042");
    assert_eq!(pin_from(4_294_967_295), "967295");
}

#[test]
fn the_hash_is_sha256_hex() {
    assert_eq!(
        credential_hash("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn a_replayed_or_stale_scan_is_refused() {
    let mut guard = ReplayGuard::default();
    let now = 1_000_000;
    assert!(guard.check("d1", 7, now - 10, now).is_ok());
    assert_eq!(
        guard.check("d1", 7, now - 10, now + 5),
        Err(DenyReason::Replayed)
    );
    assert!(
        guard.check("d2", 7, now - 10, now).is_ok(),
        "doors are apart"
    );
    assert!(guard.check("d1", 8, now, now).is_ok());
    assert_eq!(
        guard.check("d1", 9, now - REPLAY_WINDOW_MS - 1, now),
        Err(DenyReason::Replayed)
    );
    assert_eq!(
        guard.check("d1", 10, now + CLOCK_SKEW_MS + 1, now),
        Err(DenyReason::Replayed)
    );
}

#[test]
fn a_grant_list_holds_active_grants_of_the_horizon_and_decides_alone() {
    let now = 10_000;
    let active = grant("s1", "z1", 9_000, 20_000, GrantState::Active);
    let cancelled = grant("s1", "z1", 9_000, 20_000, GrantState::Cancelled);
    let past = grant("s1", "z1", 0, 5_000, GrantState::Active);
    let far = {
        let mut g = grant("s1", "z1", 0, 0, GrantState::Active);
        g.valid_from_ms = now + GRANT_HORIZON.num_milliseconds() + 1;
        g.valid_until_ms = g.valid_from_ms + 1_000;
        g
    };
    let list = GrantList::build(3, now, [&active, &cancelled, &past, &far], |z| {
        vec!["s1-door-main".into(), format!("{z}-door")]
    });
    assert_eq!(list.version, 3);
    assert_eq!(list.grants.len(), 2, "token and PIN of the active grant");
    assert!(list.decide("s1-door-main", "t", 9_000).is_ok());
    assert!(list.decide("z1-door", "123456", 19_999).is_ok());
    assert_eq!(
        list.decide("z2-door", "t", 12_000),
        Err(DenyReason::WrongZone)
    );
    assert_eq!(
        list.decide("z1-door", "t", 8_999),
        Err(DenyReason::NotYetValid)
    );
    assert_eq!(
        list.decide("z1-door", "t", 20_000),
        Err(DenyReason::Expired)
    );
    assert_eq!(
        list.decide("z1-door", "nope", 12_000),
        Err(DenyReason::UnknownCredential)
    );
    assert_eq!(
        list.decide("z1-door", "", 12_000),
        Err(DenyReason::Malformed)
    );
}

#[test]
fn a_door_never_executes_a_late_or_repeated_unlock() {
    let mut lock = DoorLock::default();
    let cmd = UnlockCommand {
        nonce: "n1".into(),
        exp: 1_000,
        badge_seq: 1,
        duration_s: 5,
    };
    assert_eq!(lock.unlock(&cmd, 1_000), Err(CommandRefusal::Expired));
    assert!(!lock.is_unlocked(1_000));
    assert!(lock.unlock(&cmd, 999).is_ok());
    assert!(lock.is_unlocked(5_998));
    assert!(!lock.is_unlocked(5_999));
    assert_eq!(lock.unlock(&cmd, 999), Err(CommandRefusal::Duplicate));
}

#[test]
fn the_zone_mode_follows_bookings_and_presence() {
    use chrono::TimeZone;
    let t = |m: i64| Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap() + Duration::minutes(m);
    let now = t(0);
    assert_eq!(
        zone_mode(now, [(t(-10), t(50))], false),
        ClimateMode::Comfort
    );
    assert_eq!(
        zone_mode(now, [(t(30), t(90))], false),
        ClimateMode::Precondition
    );
    assert_eq!(zone_mode(now, [(t(31), t(90))], false), ClimateMode::Eco);
    assert_eq!(zone_mode(now, [(t(-60), t(0))], false), ClimateMode::Eco);
    assert_eq!(zone_mode(now, [(t(31), t(90))], true), ClimateMode::Comfort);
    assert_eq!(setpoint(ClimateMode::Eco, 21.0, 16.0), (16.0, false));
    assert_eq!(
        setpoint(ClimateMode::Precondition, 21.0, 16.0),
        (21.0, false)
    );
}

#[test]
fn occupied_spans_hold_each_sample_until_the_next_but_not_forever() {
    let s = [(100, true), (200, false), (300, true), (400, true)];
    assert_eq!(
        occupied_spans(None, &s, 0, 1_000, 1_000),
        vec![(100, 200), (300, 1_000)]
    );
    assert_eq!(
        occupied_spans(None, &s, 0, 1_000, 50),
        vec![(100, 150), (300, 350), (400, 450)]
    );
    assert_eq!(
        occupied_spans(Some((-50, true)), &s, 0, 1_000, 1_000)[0],
        (0, 200)
    );
    let booked = merge_spans(vec![(150, 350), (0, 120), (340, 360)]);
    assert_eq!(booked, vec![(0, 120), (150, 360)]);
    let occ = occupied_spans(None, &s, 0, 1_000, 1_000);
    assert_eq!(spans_total(&occ, 0, 1_000), 800);
    assert_eq!(overlap_total(&occ, &booked, 0, 1_000), 20 + 50 + 60);
}
