//! Outgoing email: invitations. A provider trait with a log-only default
//! (nothing leaves the function; the local stack's way to read a link)
//! and Amazon SES (`ses` feature, so only the functions that send mail
//! carry its client).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::config::{InvitationConfig, MailProvider};

/// One plain-text email to one recipient.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
}

pub trait Mailer: Send + Sync {
    /// The provider's name, for logs.
    fn name(&self) -> &str;
    /// Hands `email` to the provider; an error means it was not accepted.
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// The configured provider. `aws` is needed for SES only.
pub fn build(
    config: &InvitationConfig,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match config.mail_provider {
        MailProvider::Log => Arc::new(LogMailer),
        MailProvider::Ses => ses_mailer(config, aws)?,
    })
}

#[cfg(feature = "ses")]
fn ses_mailer(
    config: &InvitationConfig,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Arc<dyn Mailer>> {
    use anyhow::Context;
    let aws = aws.context("the ses mail provider needs the AWS SDK configuration")?;
    let from = config
        .mail_from
        .clone()
        .context("MAIL_FROM is required for ses")?;
    Ok(Arc::new(SesMailer {
        client: aws_sdk_sesv2::Client::new(aws),
        from,
    }))
}

#[cfg(not(feature = "ses"))]
fn ses_mailer(
    _config: &InvitationConfig,
    _aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Arc<dyn Mailer>> {
    anyhow::bail!("this function was built without the ses mail provider")
}

/// Writes the email to the log, at info level, and sends nothing.
pub struct LogMailer;

impl Mailer for LogMailer {
    fn name(&self) -> &str {
        "log"
    }

    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            tracing::info!(
                to = %email.to,
                subject = %email.subject,
                text = %email.text,
                "email not sent (MAIL_PROVIDER=log)"
            );
            Ok(())
        })
    }
}

/// Amazon SES v2 `SendEmail` with simple (subject and text) content.
#[cfg(feature = "ses")]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    from: String,
}

#[cfg(feature = "ses")]
impl Mailer for SesMailer {
    fn name(&self) -> &str {
        "ses"
    }

    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, anyhow::Result<()>> {
        use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
        Box::pin(async move {
            let content = |text: &str| {
                Content::builder()
                    .data(text)
                    .charset("UTF-8")
                    .build()
                    .map_err(anyhow::Error::from)
            };
            let message = Message::builder()
                .subject(content(&email.subject)?)
                .body(Body::builder().text(content(&email.text)?).build())
                .build();
            self.client
                .send_email()
                .from_email_address(&self.from)
                .destination(Destination::builder().to_addresses(&email.to).build())
                .content(EmailContent::builder().simple(message).build())
                .send()
                .await
                .map_err(|e| anyhow::anyhow!(aws_sdk_sesv2::error::DisplayErrorContext(e)))?;
            Ok(())
        })
    }
}
