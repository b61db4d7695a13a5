use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "must be one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// What a bookable resource is.
    ResourceKind {
        Desk => "desk",
        MeetingRoom => "meeting_room",
        Office => "office",
        EventRoom => "event_room",
        EvBay => "ev_bay",
    }
);

string_enum!(
    /// Where a booking is in its life cycle.
    BookingStatus {
        Confirmed => "confirmed",
        CheckedIn => "checked_in",
        Completed => "completed",
        Cancelled => "cancelled",
        Released => "released",
    }
);

string_enum!(
    /// What an account may do; site managers are further scoped to their sites.
    Role {
        Member => "member",
        CompanyAdmin => "company_admin",
        SiteManager => "site_manager",
        NetworkAdmin => "network_admin",
    }
);

string_enum!(
    /// What a building device is; fixes what it publishes and how often.
    DeviceClass {
        Gateway => "gateway",
        PvMeter => "pv_meter",
        GridMeter => "grid_meter",
        EvCharger => "ev_charger",
        EnvSensor => "env_sensor",
        PresenceSensor => "presence_sensor",
        DoorReader => "door_reader",
    }
);

string_enum!(
    /// A device's health as the service sees it.
    DeviceStatus {
        Online => "online",
        Offline => "offline",
        Unknown => "unknown",
    }
);

string_enum!(
    /// What an alarm is about.
    AlarmKind {
        DeviceOffline => "device_offline",
        Co2High => "co2_high",
        TemperatureOutOfBand => "temperature_out_of_band",
        DoorHeldOpen => "door_held_open",
        ChargerFault => "charger_fault",
        CounterBackwards => "counter_backwards",
    }
);

string_enum!(
    /// Where an alarm is in its life cycle: raised (open), seen by a person (acknowledged), over (cleared).
    AlarmState {
        Open => "open",
        Acknowledged => "acknowledged",
        Cleared => "cleared",
    }
);

impl DeviceClass {
    /// How often a device of this class reports when nothing changes, in seconds.
    pub fn report_interval_s(self) -> i32 {
        match self {
            DeviceClass::Gateway => 60,
            DeviceClass::PvMeter | DeviceClass::GridMeter => 10,
            DeviceClass::EvCharger => 30,
            DeviceClass::EnvSensor => 60,
            DeviceClass::PresenceSensor | DeviceClass::DoorReader => 300,
        }
    }
}

/// Silence longer than this many report intervals makes a device offline.
pub const OFFLINE_AFTER_INTERVALS: i64 = 3;

/// How long a device reporting every `report_interval_s` may stay silent before it is offline, in ms.
pub fn offline_after_ms(report_interval_s: i32) -> i64 {
    OFFLINE_AFTER_INTERVALS * i64::from(report_interval_s.max(1)) * 1000
}

impl BookingStatus {
    /// Statuses that hold the resource.
    pub const ACTIVE: [&'static str; 2] = ["confirmed", "checked_in"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for k in ResourceKind::ALL {
            assert_eq!(k.as_str().parse::<ResourceKind>().unwrap(), *k);
        }
        assert!("sofa".parse::<ResourceKind>().unwrap_err().contains("desk"));
        assert_eq!(
            serde_json::to_string(&BookingStatus::CheckedIn).unwrap(),
            "\"checked_in\""
        );
    }
}

string_enum!(
    /// Why a door refused a credential; sent to the reader in `cmd/deny` and kept in the access log.
    DenyReason {
        Malformed => "malformed",
        Replayed => "replayed",
        UnknownCredential => "unknown_credential",
        WrongSite => "wrong_site",
        WrongZone => "wrong_zone",
        NotYetValid => "not_yet_valid",
        Expired => "expired",
        Cancelled => "cancelled",
        Released => "released",
    }
);

string_enum!(
    /// What a zone's heating, cooling and lights are told to do.
    ClimateMode {
        Comfort => "comfort",
        Eco => "eco",
        Precondition => "precondition",
    }
);

string_enum!(
    /// How an EV booking's car is charged: only from the site's PV surplus, from the surplus
    /// first and then from the grid so the target is met by departure, or as fast as the site
    /// allows.
    ChargeMode {
        SolarOnly => "solar_only",
        SolarFirst => "solar_first",
        Fast => "fast",
    }
);

string_enum!(
    /// How an energy interval was obtained: from meter readings, spread over a gap in them, or
    /// not known at all.
    EnergyQuality {
        Measured => "measured",
        Estimated => "estimated",
        Missing => "missing",
    }
);
