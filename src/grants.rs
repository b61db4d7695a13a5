//! Every door credential that matters now (windows ending within the last day or later), in
//! memory, so a badge is decided without a database round trip. The API and the release job
//! change it the moment a booking changes; the grant publisher republishes the sites marked here
//! and announces the changed bookings on `spazi/v1/_server/grants`, so every other instance
//! reloads them from the database within moments.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use crate::db::access::GrantRow;
use crate::domain::access_control::{Grant, GrantState};
use crate::domain::BookingStatus;

#[derive(Default)]
struct Inner {
    by_hash: HashMap<String, Vec<Arc<Grant>>>,
    by_booking: HashMap<String, Arc<Grant>>,
    /// Per site, its bookings by the start of their window, so that what opens in the next
    /// hours is found without visiting the site's whole future.
    by_site: HashMap<String, BTreeSet<(i64, String)>>,
    /// Bookings revoked (here or by a peer) and when, epoch ms: a grant read from the database
    /// before the revocation but loaded after it stays revoked, since a cancelled or released
    /// booking never opens a door again.
    revoked: HashMap<String, (GrantState, i64)>,
}

impl Inner {
    fn remove(&mut self, booking_id: &str) {
        let Some(old) = self.by_booking.remove(booking_id) else {
            return;
        };
        for hash in [&old.token_sha256, &old.pin_sha256] {
            if let Some(list) = self.by_hash.get_mut(hash) {
                list.retain(|g| g.booking_id != booking_id);
                if list.is_empty() {
                    self.by_hash.remove(hash);
                }
            }
        }
        if let Some(set) = self.by_site.get_mut(&old.site_id) {
            set.remove(&(old.valid_from_ms, old.booking_id.clone()));
            if set.is_empty() {
                self.by_site.remove(&old.site_id);
            }
        }
    }

    fn insert(&mut self, mut g: Grant) {
        match (g.state, self.revoked.get(&g.booking_id)) {
            (GrantState::Active, Some((state, _))) => g.state = *state,
            (GrantState::Active, None) => {}
            (state, _) => {
                self.revoked
                    .entry(g.booking_id.clone())
                    .or_insert((state, now_ms()));
            }
        }
        self.remove(&g.booking_id);
        let g = Arc::new(g);
        self.by_hash
            .entry(g.token_sha256.clone())
            .or_default()
            .push(g.clone());
        if g.pin_sha256 != g.token_sha256 {
            self.by_hash
                .entry(g.pin_sha256.clone())
                .or_default()
                .push(g.clone());
        }
        self.by_site
            .entry(g.site_id.clone())
            .or_default()
            .insert((g.valid_from_ms, g.booking_id.clone()));
        self.by_booking.insert(g.booking_id.clone(), g);
    }
}

use crate::domain::epoch::now_ms;

/// The credentials doors are decided against, and the sites whose grant list must be republished.
#[derive(Default)]
pub struct Grants {
    inner: RwLock<Inner>,
    dirty: Mutex<HashSet<String>>,
    /// Bookings already checked in by this instance (so a second scan does not write again).
    checked_in: Mutex<HashSet<String>>,
    /// Bookings changed here, to be announced to the other instances.
    announce: Mutex<Vec<String>>,
    wake: tokio::sync::Notify,
}

/// A stored credential as doors see it; `None` for a booking that never opens a door again.
pub fn grant_of(row: &GrantRow) -> Grant {
    let state = match row.status.as_str() {
        s if s == BookingStatus::Cancelled.as_str() => GrantState::Cancelled,
        s if s == BookingStatus::Released.as_str() => GrantState::Released,
        _ => GrantState::Active,
    };
    Grant {
        booking_id: row.booking_id.clone(),
        user_id: row.user_id.clone(),
        site_id: row.site_id.clone(),
        zone_id: row.zone_id.clone(),
        resource_id: row.resource_id.clone(),
        token_sha256: row.token_sha256.clone(),
        pin_sha256: row.pin_sha256.clone(),
        starts_ms: crate::domain::epoch::naive_ms(row.starts_at),
        ends_ms: crate::domain::epoch::naive_ms(row.ends_at),
        valid_from_ms: crate::domain::epoch::naive_ms(row.valid_from),
        valid_until_ms: crate::domain::epoch::naive_ms(row.valid_until),
        state,
    }
}

impl Grants {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces every grant (all sites) and marks every site for republishing.
    pub fn load_all(&self, rows: &[GrantRow], sites: impl IntoIterator<Item = String>) {
        // Revocations known now, and those made while the rows were read, are kept.
        let mut fresh = Inner {
            revoked: self.read().revoked.clone(),
            ..Inner::default()
        };
        for r in rows {
            fresh.insert(grant_of(r));
        }
        let mut inner = self.write();
        for (id, (state, at)) in std::mem::take(&mut inner.revoked) {
            if fresh.revoked.insert(id.clone(), (state, at)).is_none() {
                if let Some(g) = fresh.by_booking.get(&id).filter(|g| g.state != state) {
                    let mut g = (**g).clone();
                    g.state = state;
                    fresh.insert(g);
                }
            }
        }
        *inner = fresh;
        drop(inner);
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        dirty.extend(sites);
        drop(dirty);
        self.wake.notify_one();
    }

    /// Adds or replaces one booking's grant after a change made here: marks its site and
    /// announces the change to the other instances.
    pub fn upsert(&self, row: &GrantRow) {
        self.upsert_from_peer(row);
        self.note(&row.booking_id);
    }

    /// Adds or replaces one booking's grant after another instance announced a change.
    pub fn upsert_from_peer(&self, row: &GrantRow) {
        self.write().insert(grant_of(row));
        self.mark(&row.site_id);
    }

    fn note(&self, booking_id: &str) {
        self.announce
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(booking_id.to_owned());
        self.wake.notify_one();
    }

    /// Puts back announcements that could not be sent, for the next round.
    pub fn reannounce(&self, bookings: Vec<String>) {
        let mut announce = self.announce.lock().unwrap_or_else(|p| p.into_inner());
        let newer = std::mem::replace(&mut *announce, bookings);
        announce.extend(newer);
    }

    /// The bookings changed here since the last call.
    pub fn take_announcements(&self) -> Vec<String> {
        std::mem::take(&mut *self.announce.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reloads one booking's grant from the database (after the API created or changed it).
    pub async fn refresh(&self, db: &crate::db::Db, booking_id: &str) {
        let id = booking_id.to_owned();
        match db.run(move |c| crate::db::access::grant(c, &id)).await {
            Ok(Some(row)) => self.upsert(&row),
            Ok(None) => {}
            Err(e) => tracing::warn!(booking = booking_id, error = %e, "grant not refreshed"),
        }
    }

    /// A booking stops opening doors at once (cancelled or released): its site is marked, and
    /// the change announced to the other instances whether or not this one had loaded the grant
    /// (a grant it loads later stays revoked).
    pub fn revoke(&self, booking_id: &str, state: GrantState) {
        let site = {
            let mut inner = self.write();
            inner
                .revoked
                .insert(booking_id.to_owned(), (state, now_ms()));
            inner.by_booking.get(booking_id).cloned().map(|old| {
                let mut g = (*old).clone();
                g.state = state;
                let site = g.site_id.clone();
                inner.insert(g);
                site
            })
        };
        if let Some(site) = site {
            self.mark(&site);
        }
        self.note(booking_id);
    }

    /// The grants whose token or PIN hashes to `hash`.
    pub fn candidates(&self, hash: &str) -> Vec<Arc<Grant>> {
        self.read().by_hash.get(hash).cloned().unwrap_or_default()
    }

    pub fn get(&self, booking_id: &str) -> Option<Arc<Grant>> {
        self.read().by_booking.get(booking_id).cloned()
    }

    /// The grants of a site whose window opens before `until_ms` (epoch ms), oldest first:
    /// the cost follows what opens before then, not how far ahead the site is booked.
    pub fn site_opening_before(&self, site_id: &str, until_ms: i64) -> Vec<Arc<Grant>> {
        let inner = self.read();
        let Some(ids) = inner.by_site.get(site_id) else {
            return Vec::new();
        };
        ids.iter()
            .take_while(|(from, _)| *from < until_ms)
            .filter_map(|(_, id)| inner.by_booking.get(id).cloned())
            .collect()
    }

    /// The active grant of a resource whose booking is on at `ts`, or else the next one starting
    /// within the check-in lead, for a presence sensor's check-in.
    pub fn booked_at(
        &self,
        site_id: &str,
        resource_id: &str,
        ts: i64,
        lead_ms: i64,
    ) -> Option<Arc<Grant>> {
        // A booking on at `ts` (or starting within the lead) has a window opening before
        // `ts + lead_ms`, since its window opens no later than the booking starts.
        self.site_opening_before(site_id, ts.saturating_add(lead_ms).saturating_add(1))
            .into_iter()
            .filter(|g| {
                g.resource_id == resource_id
                    && g.state == GrantState::Active
                    && g.starts_ms - lead_ms <= ts
                    && ts < g.ends_ms
            })
            .min_by_key(|g| (g.starts_ms > ts, g.starts_ms))
    }

    /// Forgets that this instance checked a booking in (its write failed), so it is tried again.
    pub fn check_in_failed(&self, booking_id: &str) {
        self.checked_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(booking_id);
    }

    /// Whether this instance has not yet checked this booking in; records that it now has.
    pub fn first_check_in(&self, booking_id: &str) -> bool {
        self.checked_in
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(booking_id.to_owned())
    }

    /// Forgets grants whose window ended before `before_ms`.
    pub fn prune(&self, before_ms: i64) {
        let mut inner = self.write();
        let old: Vec<String> = inner
            .by_booking
            .values()
            .filter(|g| g.valid_until_ms < before_ms)
            .map(|g| g.booking_id.clone())
            .collect();
        let mut seen = self.checked_in.lock().unwrap_or_else(|p| p.into_inner());
        for id in old {
            inner.remove(&id);
            seen.remove(&id);
        }
        inner.revoked.retain(|_, (_, at)| *at >= before_ms);
    }

    pub fn len(&self) -> usize {
        self.read().by_booking.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks a site's grant list for republishing and wakes the publisher.
    pub fn mark(&self, site_id: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(site_id.to_owned());
        self.wake.notify_one();
    }

    pub fn take_dirty(&self) -> HashSet<String> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until a site is marked.
    pub async fn changed(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration};

    fn row(booking: &str, site: &str, resource: &str, starts: DateTime<chrono::Utc>) -> GrantRow {
        let ends = starts + Duration::hours(1);
        GrantRow {
            booking_id: booking.into(),
            site_id: site.into(),
            token_sha256: format!("t-{booking}"),
            pin_sha256: format!("p-{booking}"),
            valid_from: (starts - Duration::minutes(15)).naive_utc(),
            valid_until: (ends + Duration::minutes(15)).naive_utc(),
            user_id: "u".into(),
            resource_id: resource.into(),
            zone_id: "z".into(),
            status: BookingStatus::Confirmed.as_str().into(),
            starts_at: starts.naive_utc(),
            ends_at: ends.naive_utc(),
        }
    }

    #[test]
    fn a_site_lists_what_opens_before_a_moment_oldest_first() {
        let grants = Grants::default();
        let now = chrono::Utc::now();
        for day in (0..30).rev() {
            grants.upsert(&row(
                &format!("b{day}"),
                "roma",
                "desk",
                now + Duration::days(day),
            ));
        }
        grants.upsert(&row("other", "milano", "desk", now));
        let until = (now + Duration::days(2) - Duration::hours(1)).timestamp_millis();
        let ids: Vec<String> = grants
            .site_opening_before("roma", until)
            .iter()
            .map(|g| g.booking_id.clone())
            .collect();
        assert_eq!(ids, ["b0", "b1"]);
        assert_eq!(grants.site_opening_before("roma", i64::MAX).len(), 30);

        // A booking moved later leaves its old place in the order.
        grants.upsert(&row("b0", "roma", "desk", now + Duration::days(40)));
        let ids: Vec<String> = grants
            .site_opening_before("roma", until)
            .iter()
            .map(|g| g.booking_id.clone())
            .collect();
        assert_eq!(ids, ["b1"]);
        assert_eq!(grants.site_opening_before("roma", i64::MAX).len(), 30);
        assert_eq!(
            grants
                .site_opening_before("roma", i64::MAX)
                .last()
                .unwrap()
                .booking_id,
            "b0"
        );
    }

    #[test]
    fn the_booking_on_now_is_found_among_a_long_future() {
        let grants = Grants::default();
        let now = chrono::Utc::now();
        for day in 1..200 {
            grants.upsert(&row(
                &format!("b{day}"),
                "roma",
                "desk",
                now + Duration::days(day),
            ));
        }
        grants.upsert(&row("now", "roma", "desk", now - Duration::minutes(10)));
        let lead = Duration::minutes(15).num_milliseconds();
        let ts = now.timestamp_millis();
        assert_eq!(
            grants
                .booked_at("roma", "desk", ts, lead)
                .map(|g| g.booking_id.clone()),
            Some("now".to_owned())
        );
        assert!(grants.booked_at("roma", "room", ts, lead).is_none());
        let soon = now + Duration::days(1) - Duration::minutes(5);
        assert_eq!(
            grants
                .booked_at("roma", "desk", soon.timestamp_millis(), lead)
                .map(|g| g.booking_id.clone()),
            Some("b1".to_owned())
        );
    }
}
