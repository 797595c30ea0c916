//! The settings parser: every layer of `Settings::resolve` (TOML file,
//! environment, command line, host and global datastore settings) and each
//! setting's value parser.
//!
//! Input: lines. A line `g:Name=value` is a global datastore setting,
//! `h:Name=value` one of this host, `e:VAR=value` an environment variable,
//! `c:key=value` a command-line option; all other lines form the config
//! file's TOML text. Properties: no panic; a value that `Settings::set`
//! accepts renders (`Settings::text`) to text that sets the same value
//! again; a successful resolution re-renders to itself the same way.

use margay_config::{Inputs, Setting, Settings};

/// The fuzz target `settings`.
pub fn settings(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut inputs = Inputs {
        kernel_hostname: Some("fuzz-host".to_owned()),
        ..Inputs::default()
    };
    let mut file = String::new();
    let mut values = vec![text.to_string()];
    for line in text.lines() {
        let map = match line.get(..2) {
            Some("g:") => &mut inputs.global_config,
            Some("h:") => &mut inputs.host_config,
            Some("e:") => &mut inputs.environment,
            Some("c:") => &mut inputs.command_line,
            _ => {
                file.push_str(line);
                file.push('\n');
                continue;
            }
        };
        if let Some((k, v)) = line[2..].split_once('=') {
            map.insert(k.to_owned(), v.to_owned());
            values.push(v.to_owned());
        }
    }
    if !file.trim().is_empty() {
        inputs.config_file = Some(file);
    }
    if let Ok(resolved) = Settings::resolve(&inputs) {
        re_render(&resolved.settings);
    }
    for value in &values {
        for setting in Setting::all() {
            set_and_render(setting, value);
        }
    }
}

/// Every setting's text sets the value it came from.
fn re_render(s: &Settings) {
    let mut copy = s.clone();
    for setting in Setting::all() {
        let t = s.text(setting);
        copy.set(setting, &t)
            .unwrap_or_else(|e| panic!("{setting:?}: own text {t:?} rejected: {e}"));
    }
    assert_eq!(&copy, s, "re-rendered settings differ");
}

fn set_and_render(setting: Setting, value: &str) {
    let mut s = Settings::defaults("fuzz-host");
    if s.set(setting, value).is_err() {
        return;
    }
    let t = s.text(setting);
    let mut again = Settings::defaults("fuzz-host");
    again
        .set(setting, &t)
        .unwrap_or_else(|e| panic!("{setting:?}: {value:?} renders as {t:?}, rejected: {e}"));
    assert_eq!(again, s, "{setting:?}: {value:?} → {t:?} is another value");
    assert_eq!(again.text(setting), t, "{setting:?}: rendering not stable");
}
