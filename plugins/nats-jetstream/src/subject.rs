//! The subject each event is published on, from the configured template
//! (default `safd.{agent}.{stream}`).
//!
//! A subject is tokens separated by `.`; a token may not be empty nor hold
//! whitespace, and `*` and `>` are wildcards, which a publish may not use.
//! The template's own text is checked once (a problem names the place); a
//! placeholder's value — an agent id, a stream name, an attribute an EMS
//! event carries — is made a valid token by replacing what it may not
//! hold with `_`, so no event can produce a subject the server refuses or
//! that lands on another stream's subjects by a stray `.`.

use std::fmt;

/// The default template.
pub const DEFAULT: &str = "safd.{agent}.{stream}";

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Agent,
    Stream,
    Severity,
    Attribute(String),
}

/// What one event contributes to its subject.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    pub agent: &'a str,
    pub stream: &'a str,
    pub severity: &'a str,
    pub attributes: &'a [(&'a str, &'a str)],
}

/// A template that cannot make valid subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let bad = |why: String| TemplateError(format!("subject template `{text}`: {why}"));
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                parts.push(Part::Text(rest.to_owned()));
                break;
            };
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(bad("a `{` without its `}`".to_owned()));
            };
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "agent" => Part::Agent,
                "stream" => Part::Stream,
                "severity" => Part::Severity,
                _ => match name.strip_prefix("attr:") {
                    Some(attribute) if !attribute.is_empty() => {
                        Part::Attribute(attribute.to_owned())
                    }
                    _ => {
                        return Err(bad(format!(
                            "unknown placeholder `{{{name}}}`; use {{agent}}, {{stream}}, \
                             {{severity}} or {{attr:NAME}}"
                        )));
                    }
                },
            });
            rest = &rest[open + close + 1..];
        }
        for part in &parts {
            if let Part::Text(literal) = part {
                if literal.contains('}') {
                    return Err(bad("a `}` without its `{`".to_owned()));
                }
                if let Some(c) = literal
                    .chars()
                    .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '>'))
                {
                    return Err(bad(format!(
                        "{c:?} may not appear in a subject (whitespace and the wildcards `*` \
                         and `>` are not allowed)"
                    )));
                }
            }
        }
        let template = Self { parts };
        // Placeholders are never empty (see `token`), so a sample shows
        // whether the literal dots leave an empty token.
        let sample = template.render(&Values {
            agent: "a",
            stream: "s",
            severity: "info",
            attributes: &[],
        });
        if sample.split('.').any(str::is_empty) {
            return Err(bad(
                "it makes an empty token (a leading, trailing or doubled `.`)".to_owned(),
            ));
        }
        Ok(template)
    }

    /// The subject for one event.
    pub fn render(&self, values: &Values<'_>) -> String {
        let mut subject = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => subject.push_str(text),
                Part::Agent => push_token(&mut subject, values.agent),
                Part::Stream => push_token(&mut subject, values.stream),
                Part::Severity => push_token(&mut subject, values.severity),
                Part::Attribute(name) => push_token(
                    &mut subject,
                    values
                        .attributes
                        .iter()
                        .find(|(k, _)| k == name)
                        .map_or("", |(_, v)| v),
                ),
            }
        }
        subject
    }

    /// Whether subjects depend on the event (severity, attributes) rather
    /// than only on the agent and the stream.
    pub fn varies_per_event(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Severity | Part::Attribute(_)))
    }
}

/// `value` as one subject token: `_` for what a token may not hold, and
/// for an empty value.
fn push_token(subject: &mut String, value: &str) {
    if value.is_empty() {
        subject.push('_');
        return;
    }
    subject.extend(value.chars().map(|c| {
        if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
            '_'
        } else {
            c
        }
    }));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn values<'a>(attributes: &'a [(&'a str, &'a str)]) -> Values<'a> {
        Values {
            agent: "nsk.prod 1",
            stream: "ems",
            severity: "major",
            attributes,
        }
    }

    #[test]
    fn the_default_puts_agent_and_stream_in_their_own_tokens() {
        let template = Template::parse(DEFAULT).unwrap();
        assert_eq!(template.render(&values(&[])), "safd.nsk_prod_1.ems");
        assert!(!template.varies_per_event());
    }

    #[test]
    fn severity_and_attributes_are_tokens_whatever_they_hold() {
        let template = Template::parse("ems.{severity}.{attr:subsystem}.{attr:cpu}").unwrap();
        assert!(template.varies_per_event());
        assert_eq!(
            template.render(&values(&[("subsystem", "TMF.*>\t\u{7}x"), ("other", "y")])),
            "ems.major.TMF_____x._"
        );
    }

    #[test]
    fn a_template_that_cannot_make_a_subject_is_refused_naming_why() {
        let refused = |text: &str| Template::parse(text).unwrap_err().to_string();
        assert!(refused("safd.{host}").contains("unknown placeholder `{host}`"));
        assert!(refused("safd.{attr:}").contains("unknown placeholder"));
        assert!(refused("safd.{agent").contains("without its `}`"));
        assert!(refused("safd.agent}").contains("without its `{`"));
        assert!(refused("safd.*").contains("wildcards"));
        assert!(refused("safd.>").contains("wildcards"));
        assert!(refused("safd .{agent}").contains("whitespace"));
        assert!(refused(".safd.{agent}").contains("empty token"));
        assert!(refused("safd..{agent}").contains("empty token"));
        assert!(refused("safd.{agent}.").contains("empty token"));
        assert!(refused("").contains("empty token"));
    }
}
