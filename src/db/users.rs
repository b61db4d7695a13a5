//! Accounts, organizations, sessions and the tokens that prove them.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::models::{EmailVerification, Organization, OutboxRow, RefreshToken, Session, User};
use super::schema::{
    email_verifications, organizations, outbox, refresh_tokens, sessions, site_managers, users,
};
use super::{write_transaction, DbConnection, DbError};

pub fn by_email(conn: &mut DbConnection, email: &str) -> Result<Option<User>, DbError> {
    Ok(users::table
        .filter(users::email.eq(email))
        .select(User::as_select())
        .first(conn)
        .optional()?)
}

pub fn by_id(conn: &mut DbConnection, id: &str) -> Result<Option<User>, DbError> {
    Ok(users::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .optional()?)
}

/// Creates an account and queues its email in one transaction; `Duplicate` if the email is taken.
pub fn create(
    conn: &mut DbConnection,
    user: &User,
    verification: Option<&EmailVerification>,
    managed_sites: &[String],
    mail: Option<&OutboxRow>,
) -> Result<(), DbError> {
    write_transaction(conn, |conn| {
        on_backend!(conn, |c| {
            diesel::insert_into(users::table).values(user).execute(c)?;
            if let Some(v) = verification {
                diesel::insert_into(email_verifications::table)
                    .values(v)
                    .execute(c)?;
            }
            for site in managed_sites {
                diesel::insert_into(site_managers::table)
                    .values((
                        site_managers::user_id.eq(&user.id),
                        site_managers::site_id.eq(site),
                    ))
                    .execute(c)?;
            }
            if let Some(m) = mail {
                diesel::insert_into(outbox::table).values(m).execute(c)?;
            }
        });
        Ok(())
    })
}

/// A signup for an address already registered: an unverified account gets a fresh link (carrying
/// the new password), a verified one only a notice. Returns whether the account was verified.
pub fn signup_again(
    conn: &mut DbConnection,
    email: &str,
    verification: &EmailVerification,
    link_mail: &OutboxRow,
    notice: &OutboxRow,
) -> Result<bool, DbError> {
    write_transaction(conn, |conn| {
        let user = by_email(conn, email)?.ok_or(DbError::NotFound)?;
        if user.verified_at.is_some() {
            queue_mail(conn, notice)?;
            return Ok(true);
        }
        let v = EmailVerification {
            user_id: user.id,
            ..verification.clone()
        };
        on_backend!(conn, |c| diesel::insert_into(email_verifications::table)
            .values(&v)
            .execute(c)?);
        queue_mail(conn, link_mail)?;
        Ok(false)
    })
}

/// Queues a mail on its own, e.g. the notice sent when someone signs up with a taken email.
pub fn queue_mail(conn: &mut DbConnection, mail: &OutboxRow) -> Result<(), DbError> {
    on_backend!(conn, |c| diesel::insert_into(outbox::table)
        .values(mail)
        .execute(c)?);
    Ok(())
}

/// Marks the account behind a valid, unused verification token as verified.
pub fn verify_email(
    conn: &mut DbConnection,
    token_hash: &str,
    now: NaiveDateTime,
) -> Result<bool, DbError> {
    write_transaction(conn, |conn| {
        let row: Option<EmailVerification> = email_verifications::table
            .find(token_hash)
            .select(EmailVerification::as_select())
            .first(conn)
            .optional()?;
        let Some(row) = row.filter(|r| r.used_at.is_none() && r.expires_at > now) else {
            return Ok(false);
        };
        diesel::update(email_verifications::table.find(token_hash))
            .set(email_verifications::used_at.eq(Some(now)))
            .execute(conn)?;
        diesel::update(
            users::table
                .find(&row.user_id)
                .filter(users::verified_at.is_null()),
        )
        .set((
            users::verified_at.eq(Some(now)),
            users::password_hash.eq(&row.password_hash),
        ))
        .execute(conn)?;
        Ok(true)
    })
}

pub fn managed_sites(conn: &mut DbConnection, user_id: &str) -> Result<Vec<String>, DbError> {
    Ok(site_managers::table
        .filter(site_managers::user_id.eq(user_id))
        .select(site_managers::site_id)
        .order(site_managers::site_id)
        .load(conn)?)
}

pub fn organization(conn: &mut DbConnection, id: &str) -> Result<Option<Organization>, DbError> {
    Ok(organizations::table
        .find(id)
        .select(Organization::as_select())
        .first(conn)
        .optional()?)
}

pub fn create_organization(conn: &mut DbConnection, org: &Organization) -> Result<(), DbError> {
    on_backend!(conn, |c| diesel::insert_into(organizations::table)
        .values(org)
        .execute(c)?);
    Ok(())
}

/// The account behind a live session, or `None` if the session ended or was revoked.
pub fn session_user(
    conn: &mut DbConnection,
    session_id: &str,
    user_id: &str,
    now: NaiveDateTime,
) -> Result<Option<(User, Vec<String>)>, DbError> {
    let user: Option<User> = sessions::table
        .inner_join(users::table)
        .filter(sessions::id.eq(session_id))
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now))
        .select(User::as_select())
        .first(conn)
        .optional()?;
    match user {
        Some(u) if u.role == "site_manager" => {
            let sites = managed_sites(conn, &u.id)?;
            Ok(Some((u, sites)))
        }
        Some(u) => Ok(Some((u, Vec::new()))),
        None => Ok(None),
    }
}

/// Opens a session with its first refresh token.
pub fn start_session(
    conn: &mut DbConnection,
    session: &Session,
    token: &RefreshToken,
) -> Result<(), DbError> {
    write_transaction(conn, |conn| {
        on_backend!(conn, |c| {
            diesel::insert_into(sessions::table)
                .values(session)
                .execute(c)?;
            diesel::insert_into(refresh_tokens::table)
                .values(token)
                .execute(c)?;
        });
        Ok(())
    })
}

#[derive(Debug)]
pub enum Rotation {
    /// The token was live: it is spent now and `next` replaces it.
    Rotated {
        user_id: String,
        session_id: String,
    },
    /// The token had been spent before: the whole session has been revoked.
    Reused,
    Invalid,
}

/// Spends a refresh token and stores its successor; a second use revokes the family.
pub fn rotate_refresh(
    conn: &mut DbConnection,
    token_hash: &str,
    next_hash: &str,
    now: NaiveDateTime,
    next_expires: NaiveDateTime,
) -> Result<Rotation, DbError> {
    write_transaction(conn, |conn| {
        let found: Option<(RefreshToken, Session)> = refresh_tokens::table
            .inner_join(sessions::table)
            .filter(refresh_tokens::token_hash.eq(token_hash))
            .select((RefreshToken::as_select(), Session::as_select()))
            .first(conn)
            .optional()?;
        let Some((token, session)) = found else {
            return Ok(Rotation::Invalid);
        };
        if session.revoked_at.is_some() || session.expires_at <= now || token.expires_at <= now {
            return Ok(Rotation::Invalid);
        }
        let spent = diesel::update(
            refresh_tokens::table
                .find(token_hash)
                .filter(refresh_tokens::spent_at.is_null()),
        )
        .set(refresh_tokens::spent_at.eq(Some(now)))
        .execute(conn)?;
        if spent == 0 {
            revoke_session(conn, &session.id, now)?;
            return Ok(Rotation::Reused);
        }
        let next = RefreshToken {
            token_hash: next_hash.to_string(),
            session_id: session.id.clone(),
            created_at: now,
            expires_at: next_expires.min(session.expires_at),
            spent_at: None,
        };
        on_backend!(conn, |c| diesel::insert_into(refresh_tokens::table)
            .values(&next)
            .execute(c)?);
        Ok(Rotation::Rotated {
            user_id: session.user_id,
            session_id: session.id,
        })
    })
}

pub fn revoke_session(
    conn: &mut DbConnection,
    session_id: &str,
    now: NaiveDateTime,
) -> Result<(), DbError> {
    diesel::update(
        sessions::table
            .find(session_id)
            .filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(Some(now)))
    .execute(conn)?;
    Ok(())
}
