//! The SMS login's steps — phone number, code, cloud password — shared by
//! the bot's commands and the provisioning API, which each only put them in
//! their own words. Owns a login in progress: its connection to MAX's auth
//! service and the step it waits at.

use maxproto::Token;
use maxproto::client::{AuthSession, ClientError, SmsChallenge, SmsLoginOutcome};

use super::login::client_config;
use crate::config::Config;

/// A login waiting for its next input.
pub enum SmsLogin {
    Phone {
        device_id: String,
    },
    Code {
        session: AuthSession,
        challenge: SmsChallenge,
        device_id: String,
    },
    Password {
        session: AuthSession,
        track_id: String,
        device_id: String,
    },
}

/// What a step waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wants {
    PhoneNumber,
    Code,
    Password,
}

impl Wants {
    /// In words, for messages.
    pub fn words(self) -> &'static str {
        match self {
            Wants::PhoneNumber => "phone number",
            Wants::Code => "code",
            Wants::Password => "password",
        }
    }
}

/// What one step came to.
pub enum Taken {
    /// MAX sent a code (of `digits` digits, when it says) to `phone`.
    CodeSent {
        next: SmsLogin,
        phone: String,
        digits: Option<i64>,
    },
    /// The account has a cloud password; MAX's hint for it, if any.
    PasswordAsked {
        next: SmsLogin,
        hint: Option<String>,
    },
    /// The input was not taken; the same step waits again.
    Refused { again: SmsLogin, why: Refusal },
    /// Logged in: the token, issued for `device_id`.
    LoggedIn { token: Token, device_id: String },
    /// The phone number has no MAX account: the login is over.
    NoAccount,
}

/// Why an input was not taken.
pub enum Refusal {
    /// Not shaped like a phone number; not sent to MAX.
    NotAPhone,
    /// MAX could not be reached.
    Unreachable(ClientError),
    /// MAX said no (a wrong code or password, a refused number).
    Max(ClientError),
}

impl SmsLogin {
    /// A login that waits for the phone number; `device_id` is the one MAX
    /// will tie the token to (a user's earlier one, so MAX sees one device).
    pub fn start(device_id: String) -> SmsLogin {
        SmsLogin::Phone { device_id }
    }

    /// What the step waits for.
    pub fn wants(&self) -> Wants {
        match self {
            SmsLogin::Phone { .. } => Wants::PhoneNumber,
            SmsLogin::Code { .. } => Wants::Code,
            SmsLogin::Password { .. } => Wants::Password,
        }
    }

    /// Whether the input it waits for is a secret (to be removed from
    /// wherever it was typed).
    pub fn wants_secret(&self) -> bool {
        !matches!(self, SmsLogin::Phone { .. })
    }

    /// Ends the login, closing its connection to MAX.
    pub async fn close(self) {
        if let SmsLogin::Code { session, .. } | SmsLogin::Password { session, .. } = self {
            session.close().await;
        }
    }

    /// Takes `input` for the step the login waits at.
    pub async fn take(self, config: &Config, input: &str) -> Taken {
        match self {
            SmsLogin::Phone { device_id } => {
                if !looks_like_phone(input) {
                    let again = SmsLogin::Phone { device_id };
                    return Taken::Refused {
                        again,
                        why: Refusal::NotAPhone,
                    };
                }
                let phone = normalize_phone(input);
                let session = match AuthSession::connect(client_config(config, &device_id)).await {
                    Ok(session) => session,
                    Err(error) => {
                        let again = SmsLogin::Phone { device_id };
                        let why = Refusal::Unreachable(error);
                        return Taken::Refused { again, why };
                    }
                };
                match session.start_sms_login(&phone).await {
                    Ok(challenge) => Taken::CodeSent {
                        digits: challenge.code_length,
                        next: SmsLogin::Code {
                            session,
                            challenge,
                            device_id,
                        },
                        phone,
                    },
                    Err(error) => {
                        session.close().await;
                        let again = SmsLogin::Phone { device_id };
                        let why = Refusal::Max(error);
                        Taken::Refused { again, why }
                    }
                }
            }
            SmsLogin::Code {
                session,
                challenge,
                device_id,
            } => {
                let code: String = input.chars().filter(|c| !c.is_whitespace()).collect();
                match session.check_sms_code(&challenge, &code).await {
                    Ok(outcome) => outcome_of(session, outcome, device_id).await,
                    Err(error) => Taken::Refused {
                        again: SmsLogin::Code {
                            session,
                            challenge,
                            device_id,
                        },
                        why: Refusal::Max(error),
                    },
                }
            }
            SmsLogin::Password {
                session,
                track_id,
                device_id,
            } => match session.check_password(&track_id, input.trim()).await {
                Ok(outcome) => outcome_of(session, outcome, device_id).await,
                Err(error) => Taken::Refused {
                    again: SmsLogin::Password {
                        session,
                        track_id,
                        device_id,
                    },
                    why: Refusal::Max(error),
                },
            },
        }
    }
}

async fn outcome_of(session: AuthSession, outcome: SmsLoginOutcome, device_id: String) -> Taken {
    match outcome {
        SmsLoginOutcome::LoggedIn { token, .. } => {
            session.close().await;
            Taken::LoggedIn { token, device_id }
        }
        SmsLoginOutcome::PasswordRequired { track_id, hint } => Taken::PasswordAsked {
            next: SmsLogin::Password {
                session,
                track_id,
                device_id,
            },
            hint,
        },
        SmsLoginOutcome::RegistrationRequired => {
            session.close().await;
            Taken::NoAccount
        }
    }
}

/// A phone number as people type it: digits with an optional leading `+`
/// and spaces, dashes, dots or parentheses between them; 10 to 15 digits
/// (E.164). Anything else is not sent to MAX.
pub fn looks_like_phone(text: &str) -> bool {
    let text = text.trim();
    let rest = text.strip_prefix('+').unwrap_or(text);
    let digits = rest.chars().filter(char::is_ascii_digit).count();
    rest.chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
        && (10..=15).contains(&digits)
}

fn normalize_phone(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    format!("+{digits}")
}
