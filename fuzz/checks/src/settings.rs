//! The settings parser: every layer of `Settings::resolve` (TOML file,
//! environment, command line, host and global datastore settings) and each
//! setting's value parser.
//!
//! Input: lines (or one bare value, tried on every setting). A line `g:Name=value` is a global datastore setting,
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
    // Values to try on their own: (the setting a line names, if any; value).
    let mut values: Vec<(Option<Setting>, String)> = Vec::new();
    if !text.contains('\n') {
        values.push((None, text.to_string()));
    }
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
            values.push((named(k), v.to_owned()));
        }
    }
    if !file.trim().is_empty() {
        inputs.config_file = Some(file);
    }
    if let Ok(resolved) = Settings::resolve(&inputs) {
        re_render(&resolved.settings);
    }
    let base = Settings::defaults("fuzz-host");
    for (setting, value) in &values {
        match setting {
            Some(one) => set_and_render(&base, *one, value),
            None => Setting::all().for_each(|s| set_and_render(&base, s, value)),
        }
    }
}

/// The setting a key names in any layer's spelling.
fn named(key: &str) -> Option<Setting> {
    Setting::from_key(key)
        .or_else(|| Setting::from_datastore_name(key))
        .or_else(|| Setting::from_env_var(key))
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

fn set_and_render(base: &Settings, setting: Setting, value: &str) {
    let mut s = base.clone();
    if s.set(setting, value).is_err() {
        return;
    }
    let t = s.text(setting);
    let mut again = base.clone();
    again
        .set(setting, &t)
        .unwrap_or_else(|e| panic!("{setting:?}: {value:?} renders as {t:?}, rejected: {e}"));
    assert_eq!(again, s, "{setting:?}: {value:?} → {t:?} is another value");
    assert_eq!(again.text(setting), t, "{setting:?}: rendering not stable");
}
