//! Response bodies shared by several handlers.

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::network::{ResourceEntry, SiteEntry};
use crate::domain::ResourceKind;

/// `{items, next_cursor}`: every list in the API.
#[derive(Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

pub fn utc_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn local_text(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

#[derive(Serialize, ToSchema)]
pub struct ZoneRef {
    pub id: String,
    pub name: String,
    pub floor: i32,
}

#[derive(Serialize, ToSchema)]
pub struct ResourceView {
    pub id: String,
    pub site_id: String,
    pub kind: ResourceKind,
    pub name: String,
    pub capacity: i32,
    pub zone: ZoneRef,
    pub amenities: Vec<String>,
}

impl ResourceView {
    pub fn new(e: &ResourceEntry) -> Self {
        let (r, z) = (&e.resource, &e.zone);
        ResourceView {
            id: r.id.clone(),
            site_id: r.site_id.clone(),
            kind: e.kind,
            name: r.name.clone(),
            capacity: r.capacity,
            zone: ZoneRef {
                id: z.id.clone(),
                name: z.name.clone(),
                floor: z.floor,
            },
            amenities: e.amenities.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SiteRef {
    pub id: String,
    pub name: String,
    pub comune: String,
    pub address: String,
    pub timezone: String,
}

impl SiteRef {
    pub fn new(s: &SiteEntry) -> Self {
        SiteRef {
            id: s.site.id.clone(),
            name: s.site.name.clone(),
            comune: s.site.comune.clone(),
            address: s.site.address.clone(),
            timezone: s.site.timezone.clone(),
        }
    }
}

/// An opaque cursor holding an offset, for lists whose order is stable.
pub mod offset_cursor {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use crate::domain::FieldError;

    pub fn encode(offset: usize) -> String {
        URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
    }

    pub fn decode(cursor: Option<&str>) -> Result<usize, FieldError> {
        let Some(c) = cursor else { return Ok(0) };
        URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("o:").and_then(|n| n.parse::<u32>().ok()))
            .map(|n| n as usize)
            .ok_or_else(|| FieldError::new("cursor", "is not a cursor returned by this list"))
    }
}

/// Keyset cursors for lists ordered by a time and an id (newest first or oldest first).
pub mod time_cursor {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use chrono::NaiveDateTime;

    use crate::domain::FieldError;

    pub fn encode(at: NaiveDateTime, id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.and_utc().timestamp_micros()))
    }

    pub fn decode(c: &str) -> Result<(NaiveDateTime, String), FieldError> {
        let bad = || FieldError::new("cursor", "is not a cursor returned by this list");
        let text =
            String::from_utf8(URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
        let (micros, id) = text.split_once('|').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let at = chrono::DateTime::from_timestamp_micros(micros)
            .filter(|t| (1..=9999).contains(&chrono::Datelike::year(t)))
            .ok_or_else(bad)?;
        if id.is_empty() || id.contains('\0') {
            return Err(bad());
        }
        Ok((at.naive_utc(), id.to_string()))
    }
}
