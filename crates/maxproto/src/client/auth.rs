//! The SMS login flow on an unauthenticated session (§2.1: 17 → 18 → 115),
//! exposed one step at a time so that a bridge can drive it from chat
//! commands ("send code", later "here is the code").

use super::{Client, ClientConfig, ClientError, ConnectionState};
use crate::opcode::Opcode;
use crate::token::Token;
use crate::types::{self, AuthCodeRequest, AuthResponse, AuthStartRequest, AuthStartType, Profile};
use serde_json::{Value, json};
use tokio::sync::watch;

/// An SMS code was sent; keep this to check the code.
#[derive(Debug, Clone)]
pub struct SmsChallenge {
    /// The short-lived token that AUTH (18) needs (redacted in `Debug`).
    pub token: Token,
    pub phone: String,
    /// Digits in the code, when the server says.
    pub code_length: Option<i64>,
    /// How long (ms) before another code may be requested.
    pub request_max_duration: Option<i64>,
    /// Codes that may still be requested.
    pub request_count_left: Option<i64>,
}

/// Where checking an SMS code (or a 2FA password) leaves the login.
#[derive(Debug, Clone)]
pub enum SmsLoginOutcome {
    /// Logged in: use the token with [`Client::login`] and persist it.
    LoggedIn {
        token: Token,
        profile: Option<Box<Profile>>,
    },
    /// The account has a 2FA password: call
    /// [`AuthSession::check_password`] with this track.
    PasswordRequired {
        track_id: String,
        hint: Option<String>,
    },
    /// The phone has no account; registering one is not supported here.
    RegistrationRequired,
}

/// An unauthenticated session for the SMS login flow. It reconnects like
/// a [`Client`] (without LOGIN) and closes when dropped.
#[derive(Debug, Clone)]
pub struct AuthSession {
    client: Client,
}

impl AuthSession {
    /// Connects and sends SESSION_INIT.
    pub async fn connect(config: ClientConfig) -> Result<AuthSession, ClientError> {
        // Pushes are not expected before login; the receiver is dropped and
        // anything that arrives is logged and discarded.
        let (client, _events, _) = Client::start(config, None).await?;
        Ok(AuthSession { client })
    }

    /// Asks the server to send an SMS code to `phone` (`+7…`), AUTH_REQUEST
    /// (17) `START_AUTH`.
    pub async fn start_sms_login(&self, phone: &str) -> Result<SmsChallenge, ClientError> {
        self.request_code(AuthStartRequest::start(phone)).await
    }

    /// Asks for another code (`RESEND`).
    pub async fn resend_sms_code(&self, phone: &str) -> Result<SmsChallenge, ClientError> {
        let mut request = AuthStartRequest::start(phone);
        request.kind = AuthStartType::Resend;
        self.request_code(request).await
    }

    async fn request_code(&self, request: AuthStartRequest) -> Result<SmsChallenge, ClientError> {
        let phone = request.phone.clone();
        let answer = self.client.call(&request).await?;
        Ok(SmsChallenge {
            token: answer.token,
            phone,
            code_length: answer.code_length,
            request_max_duration: answer.request_max_duration,
            request_count_left: answer.request_count_left,
        })
    }

    /// Checks the code the user received (AUTH, 18).
    pub async fn check_sms_code(
        &self,
        challenge: &SmsChallenge,
        code: &str,
    ) -> Result<SmsLoginOutcome, ClientError> {
        let request = AuthCodeRequest::new(challenge.token.clone(), code.trim());
        let answer = self.client.call(&request).await?;
        outcome(Opcode::AUTH, answer)
    }

    /// Checks the 2FA password (AUTH_LOGIN_CHECK_PASSWORD, 115).
    pub async fn check_password(
        &self,
        track_id: &str,
        password: &str,
    ) -> Result<SmsLoginOutcome, ClientError> {
        let payload = json!({"trackId": track_id, "password": password});
        let answer = self
            .client
            .request(Opcode::AUTH_LOGIN_CHECK_PASSWORD, payload)
            .await?;
        let answer: AuthResponse =
            types::from_payload(answer).map_err(|e| ClientError::UnexpectedAnswer {
                opcode: Opcode::AUTH_LOGIN_CHECK_PASSWORD,
                detail: e.to_string(),
            })?;
        outcome(Opcode::AUTH_LOGIN_CHECK_PASSWORD, answer)
    }

    /// Any other request on the unauthenticated session (e.g. 224 captcha).
    pub async fn request(&self, opcode: Opcode, payload: Value) -> Result<Value, ClientError> {
        self.client.request(opcode, payload).await
    }

    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.client.state()
    }

    pub async fn close(&self) {
        self.client.close().await;
    }
}

fn outcome(opcode: Opcode, answer: AuthResponse) -> Result<SmsLoginOutcome, ClientError> {
    if let Some(token) = answer.login_token() {
        return Ok(SmsLoginOutcome::LoggedIn {
            token: token.clone(),
            profile: answer.profile.map(Box::new),
        });
    }
    if let Some(challenge) = answer.password_challenge {
        let track_id = challenge
            .track_id
            .ok_or_else(|| ClientError::UnexpectedAnswer {
                opcode,
                detail: "passwordChallenge without trackId".to_owned(),
            })?;
        return Ok(SmsLoginOutcome::PasswordRequired {
            track_id,
            hint: challenge.hint,
        });
    }
    if answer.register_token().is_some() {
        return Ok(SmsLoginOutcome::RegistrationRequired);
    }
    Err(ClientError::UnexpectedAnswer {
        opcode,
        detail: "neither a login token, a password challenge nor a registration".to_owned(),
    })
}
