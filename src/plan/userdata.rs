//! The generated cloud-init user-data (contract §2.6). Every value enters it through the
//! crate's one YAML encoder ([`crate::yaml::yaml_string`]): cloud-init reads user-data with
//! PyYAML (YAML 1.1), where a raw line break (`\n`, `\r`, NEL, U+2028, U+2029) starts a new
//! key and `yes`/`no`/`on`/`0x10`/`1e3` are not strings, so a value is written plain only
//! when it is provably a string in YAML 1.1 and 1.2 (what upstream writes for host names),
//! else double-quoted with escapes. Pure text; knows nothing about Proxmox or HTTP.

use std::fmt::Write as _;

use crate::yaml::yaml_string;

/// How [`yaml_scalar`] may write a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YamlStyle {
    /// Plain when that reads back as the same string in YAML 1.1 and 1.2, else quoted.
    PlainIfSafe,
    /// Always double-quoted (what Terraform's `yamlencode` does for the `users:` block).
    Quoted,
}

/// A value for cloud-init YAML, through the crate's one encoder: a scalar that any YAML 1.1
/// or 1.2 parser reads back as exactly `s`, on one line. `Quoted` only adds the quotes the
/// encoder leaves off a plain-safe string (plain-safe strings need no escapes).
pub fn yaml_scalar(s: &str, style: YamlStyle) -> String {
    let encoded = yaml_string(s);
    if style == YamlStyle::Quoted && !encoded.starts_with('"') {
        format!("\"{encoded}\"")
    } else {
        encoded
    }
}

/// True when `text` has a top-level `users:` key (`(?m)^\s*users\s*:`, contract §2.6).
fn has_users_line(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim_start();
        t.strip_prefix("users")
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    })
}

/// Contract §2.6: the generated `#cloud-config` for one VM (or the operator's `base_override`),
/// with the `users:` block appended when keys exist and the base has no `users:` line. Every
/// value goes through [`yaml_scalar`].
pub fn generated_user_data(
    hostname: &str,
    dns_domain: &str,
    ssh_username: &str,
    ssh_keys: &[String],
    base_override: Option<&str>,
) -> String {
    let base = match base_override {
        Some(b) => b.to_string(),
        None => format!(
            "#cloud-config\nhostname: {}\nfqdn: {}\npreserve_hostname: false\nmanage_etc_hosts: true\nruncmd:\n  - touch /var/lib/cloud/instance/ansible-ready\n",
            yaml_scalar(hostname, YamlStyle::PlainIfSafe),
            yaml_scalar(&format!("{hostname}.{dns_domain}"), YamlStyle::PlainIfSafe),
        ),
    };
    if ssh_keys.is_empty() || has_users_line(&base) {
        return base;
    }
    let mut block = String::from("\"users\":\n");
    let _ = writeln!(
        block,
        "- \"name\": {}",
        yaml_scalar(ssh_username, YamlStyle::Quoted)
    );
    block.push_str("  \"ssh_authorized_keys\":\n");
    for k in ssh_keys {
        let _ = writeln!(block, "  - {}", yaml_scalar(k, YamlStyle::Quoted));
    }
    format!("{}\n{}", base.trim(), block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_appends_users_block_when_keys_exist() {
        let ud = generated_user_data(
            "app-01",
            "hybzone.local",
            "opsadmin",
            &["ssh-ed25519 AAA x@y".into()],
            None,
        );
        assert!(ud.starts_with("#cloud-config\nhostname: app-01\nfqdn: app-01.hybzone.local\n"));
        assert!(ud.contains("\"users\":\n- \"name\": \"opsadmin\"\n  \"ssh_authorized_keys\":\n  - \"ssh-ed25519 AAA x@y\"\n"));
    }

    #[test]
    fn user_data_keeps_operator_users_block() {
        let base = "#cloud-config\nusers:\n  - name: me\n";
        let ud = generated_user_data("a", "d", "u", &["k".into()], Some(base));
        assert_eq!(ud, base);
    }

    #[test]
    fn user_data_without_keys_has_no_users_block() {
        let ud = generated_user_data("a", "d", "u", &[], None);
        assert!(!ud.contains("users"));
    }

    #[test]
    fn a_newline_in_dns_domain_stays_inside_the_fqdn_value() {
        let ud = generated_user_data("a", "x\nruncmd: [touch /x]", "u", &[], None);
        assert!(ud.contains("fqdn: \"a.x\\nruncmd: [touch /x]\"\n"), "{ud}");
        assert_eq!(ud.lines().filter(|l| l.starts_with("runcmd")).count(), 1);
    }

    #[test]
    fn yaml_1_1_words_and_numbers_are_quoted() {
        for s in [
            "yes", "No", "on", "OFF", "null", "0x1F", "1e3", "12", "1.5", ".inf",
        ] {
            assert!(
                yaml_scalar(s, YamlStyle::PlainIfSafe).starts_with('"'),
                "{s}"
            );
        }
        assert_eq!(yaml_scalar("app-01", YamlStyle::PlainIfSafe), "app-01");
    }
}
