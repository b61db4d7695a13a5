//! Access control driven by bookings: credential windows and formats, the door's decision, the
//! grant list a gateway decides from when the service is out of reach, the door's own rule for
//! commands, and the climate a zone's bookings call for.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::policy::CHECK_IN_EARLY;
use super::{ClimateMode, DenyReason, TimeRange};

/// A credential opens doors from this long before its booking starts (as check-in does)…
pub const ENTRY_EARLY: Duration = CHECK_IN_EARLY;
/// …until this long after it ends, so a member can come back for a forgotten coat.
pub const EXIT_GRACE: Duration = Duration::minutes(15);
/// A badge event older than this (or this far ahead of the service's clock) is a replay.
pub const REPLAY_WINDOW_MS: i64 = 30_000;
/// How far a badge event may be ahead of the service's clock.
pub const CLOCK_SKEW_MS: i64 = 5_000;
/// The longest credential a reader may send, in bytes (the contract's limit).
pub const MAX_CREDENTIAL_BYTES: usize = 128;
/// Digits of a PIN.
pub const PIN_DIGITS: usize = 6;
/// QR tokens start with this, so a reader or a person can tell them from badge ids.
pub const TOKEN_PREFIX: &str = "spz1.";
/// A zone is pre-conditioned when a booking starts within this.
pub const PRECONDITION_LEAD: Duration = Duration::minutes(30);
/// Most credentials in one grant list (the soonest windows win), so a list stays under 1 MiB,
/// the largest packet the broker passes.
pub const MAX_GRANT_ENTRIES: usize = 4_000;
/// How far ahead a grant list reaches.
pub const GRANT_HORIZON: Duration = Duration::hours(24);

/// The half-open window in which a booking's credential opens doors.
pub fn credential_window(booking: &TimeRange) -> (DateTime<Utc>, DateTime<Utc>) {
    (booking.start() - ENTRY_EARLY, booking.end() + EXIT_GRACE)
}

/// Lower-case hex SHA-256 of a credential, as stored, logged and put in grant lists.
pub fn credential_hash(credential: &str) -> String {
    let digest = Sha256::digest(credential.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    hex
}

/// A QR token from 16 random bytes: `spz1.` and 32 lower-case hex digits.
pub fn token_from(bytes: [u8; 16]) -> String {
    let mut t = String::with_capacity(TOKEN_PREFIX.len() + 32);
    t.push_str(TOKEN_PREFIX);
    for b in bytes {
        t.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        t.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    t
}

/// The QR code of a token as an SVG document (error correction M, 8 px modules, quiet zone).
pub fn qr_svg(token: &str) -> String {
    use qrcode::render::svg;
    match qrcode::QrCode::with_error_correction_level(token.as_bytes(), qrcode::EcLevel::M) {
        Ok(code) => code
            .render::<svg::Color>()
            .min_dimensions(256, 256)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
        // A token is 37 bytes; a QR code holds far more, so this does not happen.
        Err(_) => String::from(
            r#"<?xml version="1.0" standalone="yes"?><svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>"#,
        ),
    }
}

/// A PIN of [`PIN_DIGITS`] digits from a random number.
pub fn pin_from(n: u32) -> String {
    format!("{:06}", n % 1_000_000)
}

/// What a reader sent, if it can be a credential at all: 1 to 128 bytes of printable ASCII with
/// no spaces. Anything else is `malformed`.
pub fn check_credential(raw: &str) -> Result<&str, DenyReason> {
    if raw.is_empty()
        || raw.len() > MAX_CREDENTIAL_BYTES
        || !raw.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(DenyReason::Malformed);
    }
    Ok(raw)
}

/// Where a credential stands, apart from its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GrantState {
    Active,
    Cancelled,
    Released,
}

/// One booking's credential as doors see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub booking_id: String,
    pub user_id: String,
    pub site_id: String,
    pub zone_id: String,
    pub resource_id: String,
    pub token_sha256: String,
    pub pin_sha256: String,
    /// The booking itself, epoch ms.
    pub starts_ms: i64,
    pub ends_ms: i64,
    /// The credential's window, epoch ms, half-open.
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub state: GrantState,
}

/// A door: its site, and the zone it closes (`None` for a site's entrance, which admits every
/// booking at the site).
#[derive(Debug, Clone, Copy)]
pub struct Door<'a> {
    pub site_id: &'a str,
    pub zone_id: Option<&'a str>,
}

/// Why one grant does not open this door now, or `None` if it does.
fn refusal(g: &Grant, door: Door, now_ms: i64) -> Option<DenyReason> {
    if g.site_id != door.site_id {
        return Some(DenyReason::WrongSite);
    }
    match g.state {
        GrantState::Cancelled => return Some(DenyReason::Cancelled),
        GrantState::Released => return Some(DenyReason::Released),
        GrantState::Active => {}
    }
    if now_ms < g.valid_from_ms {
        return Some(DenyReason::NotYetValid);
    }
    if now_ms >= g.valid_until_ms {
        return Some(DenyReason::Expired);
    }
    if let Some(zone) = door.zone_id {
        if zone != g.zone_id {
            return Some(DenyReason::WrongZone);
        }
    }
    None
}

/// The door's decision among the grants whose token or PIN hashes to what the reader sent.
///
/// A grant that opens the door wins. Otherwise the reason is the one of the grant at this site
/// whose window is nearest to now (a PIN may be shared by bookings at different times), or
/// `wrong_site` when the credential belongs to another site only.
pub fn decide<'g>(
    candidates: impl IntoIterator<Item = &'g Grant>,
    door: Door,
    now_ms: i64,
) -> Result<&'g Grant, DenyReason> {
    let mut best: Option<(i64, DenyReason)> = None;
    let mut elsewhere = false;
    for g in candidates {
        match refusal(g, door, now_ms) {
            None => return Ok(g),
            Some(DenyReason::WrongSite) => elsewhere = true,
            Some(reason) => {
                let distance = if now_ms < g.valid_from_ms {
                    g.valid_from_ms - now_ms
                } else {
                    (now_ms - g.valid_until_ms).max(0)
                };
                if best.is_none_or(|(d, _)| distance < d) {
                    best = Some((distance, reason));
                }
            }
        }
    }
    Err(match best {
        Some((_, reason)) => reason,
        None if elsewhere => DenyReason::WrongSite,
        None => DenyReason::UnknownCredential,
    })
}

/// Badge events already answered, per door: the same `(seq, ts)` again, or an event older than
/// [`REPLAY_WINDOW_MS`], is a replay and opens nothing.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<String, VecDeque<(i64, i64)>>,
}

impl ReplayGuard {
    pub fn check(&mut self, door: &str, seq: i64, ts: i64, now_ms: i64) -> Result<(), DenyReason> {
        if ts < now_ms - REPLAY_WINDOW_MS || ts > now_ms + CLOCK_SKEW_MS {
            return Err(DenyReason::Replayed);
        }
        let seen = self.seen.entry(door.to_owned()).or_default();
        while seen
            .front()
            .is_some_and(|&(_, t)| t < now_ms - REPLAY_WINDOW_MS)
        {
            seen.pop_front();
        }
        if seen.iter().any(|&(s, t)| s == seq && t == ts) {
            return Err(DenyReason::Replayed);
        }
        seen.push_back((seq, ts));
        Ok(())
    }
}

/// One entry of a grant list: a hashed credential, when it opens, and which doors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantEntry {
    /// SHA-256 (lower-case hex) of the QR token or the PIN.
    pub credential_sha256: String,
    /// Epoch ms, half-open `[from, until)`.
    pub from: i64,
    pub until: i64,
    /// The doors it opens.
    pub doors: Vec<String>,
}

/// The grant list a site's gateway keeps for its doors (`m` of `cmd/grants`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantList {
    /// Grows with every list published for the site; a gateway ignores an older one.
    pub version: i64,
    /// The span the list covers, epoch ms.
    pub valid_from: i64,
    pub valid_until: i64,
    pub grants: Vec<GrantEntry>,
}

impl GrantList {
    /// The list for a site's doors: every active grant whose window meets the next
    /// [`GRANT_HORIZON`], with the entrance and its zone's door.
    pub fn build<'g>(
        version: i64,
        now_ms: i64,
        grants: impl IntoIterator<Item = &'g Grant>,
        doors_of_zone: impl Fn(&str) -> Vec<String>,
    ) -> GrantList {
        let until = now_ms + GRANT_HORIZON.num_milliseconds();
        let mut entries = Vec::new();
        for g in grants {
            if g.state != GrantState::Active
                || g.valid_until_ms <= now_ms
                || g.valid_from_ms >= until
            {
                continue;
            }
            let doors = doors_of_zone(&g.zone_id);
            for hash in [&g.token_sha256, &g.pin_sha256] {
                entries.push(GrantEntry {
                    credential_sha256: hash.clone(),
                    from: g.valid_from_ms,
                    until: g.valid_until_ms,
                    doors: doors.clone(),
                });
            }
        }
        entries.sort_by(|a, b| (a.from, &a.credential_sha256).cmp(&(b.from, &b.credential_sha256)));
        entries.truncate(MAX_GRANT_ENTRIES);
        GrantList {
            version,
            valid_from: now_ms,
            valid_until: until,
            grants: entries,
        }
    }

    /// A door's decision from this list alone, as a gateway makes it when the service is out
    /// of reach: the credential's hash must be listed for this door and now inside its window.
    pub fn decide(&self, door_id: &str, credential: &str, now_ms: i64) -> Result<(), DenyReason> {
        let credential = check_credential(credential)?;
        let hash = credential_hash(credential);
        let mut reason = DenyReason::UnknownCredential;
        for e in self.grants.iter().filter(|e| e.credential_sha256 == hash) {
            if !e.doors.iter().any(|d| d == door_id) {
                reason = DenyReason::WrongZone;
            } else if now_ms < e.from {
                reason = DenyReason::NotYetValid;
            } else if now_ms >= e.until {
                reason = DenyReason::Expired;
            } else {
                return Ok(());
            }
        }
        Err(reason)
    }
}

/// An unlock command as a door reads it (`cmd/unlock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockCommand {
    pub nonce: String,
    pub exp: i64,
    pub badge_seq: i64,
    pub duration_s: i64,
}

/// Why a door did not carry out a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandRefusal {
    /// It arrived at or after its `exp`.
    Expired,
    /// Its nonce was already executed.
    Duplicate,
}

impl CommandRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandRefusal::Expired => "expired",
            CommandRefusal::Duplicate => "duplicate",
        }
    }
}

/// A door lock's rule for commands: never after `exp`, each nonce at most once.
#[derive(Debug, Default)]
pub struct DoorLock {
    /// Nonces executed, with their `exp`: forgotten once past, since a command after its `exp`
    /// is refused anyway.
    executed: HashMap<String, i64>,
    /// Until when the door is unlocked, epoch ms.
    pub unlocked_until: i64,
}

impl DoorLock {
    pub fn unlock(&mut self, cmd: &UnlockCommand, now_ms: i64) -> Result<(), CommandRefusal> {
        if now_ms >= cmd.exp {
            return Err(CommandRefusal::Expired);
        }
        self.executed.retain(|_, exp| *exp > now_ms);
        if self.executed.insert(cmd.nonce.clone(), cmd.exp).is_some() {
            return Err(CommandRefusal::Duplicate);
        }
        self.unlocked_until = now_ms + cmd.duration_s.clamp(1, 3600) * 1000;
        Ok(())
    }

    pub fn is_unlocked(&self, now_ms: i64) -> bool {
        now_ms < self.unlocked_until
    }
}

/// What a zone's climate should be: comfort while a booking is on or someone is there,
/// pre-conditioning when a booking starts within [`PRECONDITION_LEAD`], eco otherwise.
/// `bookings` are the zone's active bookings as `[start, end)`.
pub fn zone_mode(
    now: DateTime<Utc>,
    bookings: impl IntoIterator<Item = (DateTime<Utc>, DateTime<Utc>)>,
    presence: bool,
) -> ClimateMode {
    let mut soon = false;
    for (start, end) in bookings {
        if start <= now && now < end {
            return ClimateMode::Comfort;
        }
        if start > now && start - now <= PRECONDITION_LEAD {
            soon = true;
        }
    }
    if presence {
        ClimateMode::Comfort
    } else if soon {
        ClimateMode::Precondition
    } else {
        ClimateMode::Eco
    }
}

/// The setpoint sent for a mode: temperature in °C and whether the lights are on.
pub fn setpoint(mode: ClimateMode, comfort_c: f64, eco_c: f64) -> (f64, bool) {
    match mode {
        ClimateMode::Comfort => (comfort_c, true),
        ClimateMode::Precondition => (comfort_c, false),
        ClimateMode::Eco => (eco_c, false),
    }
}

/// Occupied spans `[start, end)` in epoch ms from a presence sensor's samples in time order
/// (`initial` is the last sample before the first). A sample holds until the next one, but no
/// longer than `hold_ms`: a silent sensor counts as unknown, not as occupied.
pub fn occupied_spans(
    initial: Option<(i64, bool)>,
    samples: &[(i64, bool)],
    from: i64,
    to: i64,
    hold_ms: i64,
) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = Vec::new();
    let all = initial.iter().chain(samples.iter());
    let points: Vec<&(i64, bool)> = all.collect();
    for (i, &&(ts, occupied)) in points.iter().enumerate() {
        if !occupied {
            continue;
        }
        let next = points.get(i + 1).map_or(to, |p| p.0);
        let (a, b) = (ts.max(from), next.min(ts + hold_ms).min(to));
        if a < b {
            match spans.last_mut() {
                Some(last) if last.1 >= a => last.1 = last.1.max(b),
                _ => spans.push((a, b)),
            }
        }
    }
    spans
}

/// Merges spans into a sorted list of disjoint ones.
pub fn merge_spans(mut spans: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    spans.retain(|s| s.0 < s.1);
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if last.1 >= s.0 => last.1 = last.1.max(s.1),
            _ => out.push(s),
        }
    }
    out
}

/// Total length of disjoint spans clipped to `[from, to)`.
pub fn spans_total(spans: &[(i64, i64)], from: i64, to: i64) -> i64 {
    spans
        .iter()
        .map(|&(a, b)| (b.min(to) - a.max(from)).max(0))
        .sum()
}

/// Total length of the overlap of two lists of disjoint sorted spans, clipped to `[from, to)`.
pub fn overlap_total(a: &[(i64, i64)], b: &[(i64, i64)], from: i64, to: i64) -> i64 {
    let (mut i, mut j, mut total) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0).max(from);
        let hi = a[i].1.min(b[j].1).min(to);
        total += (hi - lo).max(0);
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}

#[cfg(test)]
mod tests;
