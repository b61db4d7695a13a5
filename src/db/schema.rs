//! Table definitions shared by both backends; the migrations in `migrations/{sqlite,postgres}` must match.

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        monthly_allowance_minutes -> Integer,
        created_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        name -> Text,
        password_hash -> Text,
        role -> Text,
        organization_id -> Nullable<Text>,
        verified_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    email_verifications (token_hash) {
        token_hash -> Text,
        user_id -> Text,
        password_hash -> Text,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        session_id -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        spent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    sites (id) {
        id -> Text,
        name -> Text,
        comune -> Text,
        istat_code -> Text,
        province -> Text,
        province_code -> Text,
        region -> Text,
        population -> Integer,
        small_town -> Bool,
        address -> Text,
        latitude -> Double,
        longitude -> Double,
        timezone -> Text,
        size -> Text,
        area_m2 -> Integer,
        opening_hours -> Text,
        no_show_grace_minutes -> Integer,
        pv_kwp -> Double,
        contracted_power_w -> Integer,
    }
}

diesel::table! {
    site_closures (site_id, day) {
        site_id -> Text,
        day -> Text,
        reason -> Text,
    }
}

diesel::table! {
    site_managers (user_id, site_id) {
        user_id -> Text,
        site_id -> Text,
    }
}

diesel::table! {
    zones (id) {
        id -> Text,
        site_id -> Text,
        name -> Text,
        floor -> Integer,
    }
}

diesel::table! {
    resources (id) {
        id -> Text,
        site_id -> Text,
        zone_id -> Text,
        kind -> Text,
        name -> Text,
        capacity -> Integer,
        amenities -> Text,
    }
}

diesel::table! {
    bookings (id) {
        id -> Text,
        resource_id -> Text,
        site_id -> Text,
        user_id -> Text,
        organization_id -> Nullable<Text>,
        starts_at -> Timestamp,
        ends_at -> Timestamp,
        status -> Text,
        attendees -> Integer,
        note -> Nullable<Text>,
        charged_minutes -> Integer,
        allowance_month -> Nullable<Text>,
        sequence -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        checked_in_at -> Nullable<Timestamp>,
        cancelled_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    allowance_usage (organization_id, month) {
        organization_id -> Text,
        month -> Text,
        used_minutes -> Integer,
    }
}

diesel::table! {
    idempotency_keys (user_id, key) {
        user_id -> Text,
        key -> Text,
        request_hash -> Text,
        status_code -> Nullable<Integer>,
        response_body -> Nullable<Text>,
        location -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    outbox (id) {
        id -> Text,
        kind -> Text,
        payload -> Text,
        created_at -> Timestamp,
        available_at -> Timestamp,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    devices (num) {
        num -> Integer,
        id -> Text,
        site_id -> Text,
        class -> Text,
        zone_id -> Nullable<Text>,
        resource_id -> Nullable<Text>,
        gateway_id -> Nullable<Text>,
        model -> Nullable<Text>,
        firmware -> Nullable<Text>,
        report_interval_s -> Integer,
        status -> Text,
        last_seen_at -> Nullable<Timestamp>,
        status_changed_at -> Nullable<Timestamp>,
        source -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    readings (minute, device, metric, seq) {
        minute -> Integer,
        device -> Integer,
        metric -> SmallInt,
        seq -> BigInt,
        ts -> BigInt,
        value -> Double,
    }
}

diesel::table! {
    device_events (device, ts, seq) {
        device -> Integer,
        seq -> BigInt,
        ts -> BigInt,
        kind -> Text,
        body -> Text,
    }
}

diesel::table! {
    readings_15m (device, metric, bucket) {
        device -> Integer,
        metric -> SmallInt,
        bucket -> BigInt,
        n -> Integer,
        min -> Double,
        max -> Double,
        sum -> Double,
        last -> Double,
        last_ts -> BigInt,
        delta -> Nullable<Double>,
        epoch -> Nullable<BigInt>,
    }
}

diesel::table! {
    alarms (id) {
        id -> Text,
        site_id -> Text,
        device_id -> Text,
        zone_id -> Nullable<Text>,
        kind -> Text,
        severity -> Text,
        state -> Text,
        message -> Text,
        value -> Nullable<Double>,
        raised_at -> Timestamp,
        acknowledged_at -> Nullable<Timestamp>,
        acknowledged_by -> Nullable<Text>,
        cleared_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    energy_15m (site_id, bucket) {
        site_id -> Text,
        bucket -> BigInt,
        pv_wh -> Double,
        import_wh -> Double,
        export_wh -> Double,
        ev_wh -> Double,
        load_wh -> Double,
        quality -> SmallInt,
    }
}

diesel::table! {
    energy_region_15m (region, bucket) {
        region -> Text,
        bucket -> BigInt,
        pv_wh -> Double,
        import_wh -> Double,
        export_wh -> Double,
        ev_wh -> Double,
        load_wh -> Double,
        sites -> Integer,
        measured -> Integer,
        estimated -> Integer,
    }
}

diesel::table! {
    emission_factors (version) {
        version -> Integer,
        value -> Double,
        unit -> Text,
        source -> Text,
        valid_from -> Timestamp,
        created_at -> Timestamp,
        created_by -> Nullable<Text>,
    }
}

diesel::table! {
    ev_plans (booking_id) {
        booking_id -> Text,
        mode -> Text,
        target_wh -> Nullable<Double>,
        expected_wh -> Double,
        expected_solar_wh -> Double,
        feasible -> Bool,
        created_at -> Timestamp,
    }
}

diesel::joinable!(users -> organizations (organization_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::table! {
    access_credentials (booking_id) {
        booking_id -> Text,
        site_id -> Text,
        token -> Text,
        pin -> Text,
        token_sha256 -> Text,
        pin_sha256 -> Text,
        valid_from -> Timestamp,
        valid_until -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    access_log (id) {
        id -> Text,
        site_id -> Text,
        door_id -> Text,
        zone_id -> Nullable<Text>,
        at -> Timestamp,
        badge_ts -> Nullable<Timestamp>,
        badge_seq -> Nullable<BigInt>,
        credential_sha256 -> Nullable<Text>,
        booking_id -> Nullable<Text>,
        user_id -> Nullable<Text>,
        decision -> Text,
        reason -> Nullable<Text>,
        nonce -> Nullable<Text>,
        latency_us -> BigInt,
        anonymised -> Bool,
    }
}

diesel::table! {
    climate_commands (nonce) {
        nonce -> Text,
        site_id -> Text,
        zone_id -> Text,
        device_id -> Text,
        mode -> Text,
        t_c -> Double,
        lights -> Bool,
        issued_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::joinable!(zones -> sites (site_id));
diesel::joinable!(energy_15m -> sites (site_id));
diesel::joinable!(ev_plans -> bookings (booking_id));
diesel::joinable!(access_credentials -> bookings (booking_id));
diesel::joinable!(resources -> zones (zone_id));
diesel::joinable!(resources -> sites (site_id));
diesel::joinable!(bookings -> resources (resource_id));
diesel::joinable!(bookings -> sites (site_id));
diesel::joinable!(bookings -> users (user_id));
diesel::joinable!(devices -> sites (site_id));
diesel::joinable!(alarms -> sites (site_id));

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    users,
    email_verifications,
    sessions,
    refresh_tokens,
    sites,
    site_closures,
    site_managers,
    zones,
    resources,
    bookings,
    allowance_usage,
    idempotency_keys,
    outbox,
    devices,
    readings,
    device_events,
    readings_15m,
    alarms,
    access_credentials,
    access_log,
    climate_commands,
    energy_15m,
    energy_region_15m,
    emission_factors,
    ev_plans,
);
