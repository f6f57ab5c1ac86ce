//! Config tests: defaults, errors naming the key, and the README's table
//! against the keys serde actually reads.
use super::*;

fn load(text: &str) -> Result<Settings, ConfigError> {
    let dir = std::env::temp_dir().join(format!("wisp-cfg-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wisp.toml");
    std::fs::write(&path, text).unwrap();
    let r = Settings::load(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    r
}

const MIN: &str =
    "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n[dispatcher]\nlist_file = \"d.list\"\n[policy]\nfile = \"p.wasm\"\n";

#[test]
fn minimal_file_gets_defaults_and_relative_paths() {
    let s = load(MIN).unwrap();
    assert_eq!(s.proxy.timers.fr_timer, Duration::from_secs(2));
    assert_eq!(s.proxy.timers.fr_inv_timer, Duration::from_secs(30));
    assert_eq!(s.policy.limits.max_call_ms, 10);
    assert!(s.proxy.prober.is_none(), "ping_interval 0: no keepalives");
    // Relative to the config file's folder, not to the working directory.
    let folder = s.policy.file.parent().unwrap();
    assert!(folder.file_name().unwrap().to_string_lossy().starts_with("wisp-cfg-"), "{}", s.policy.file.display());
    assert!(matches!(&s.dispatcher.source, crate::dispatcher::ListSource::File(f) if *f == folder.join("d.list")));
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (format!("{MIN}[transaction]\nfr_timer_ms = 0\n"), "transaction.fr_timer_ms"),
        (format!("{MIN}[log]\nfoo = 1\n"), "unknown field `foo`"),
        (MIN.replace("udp:127.0.0.1:5060", "udp:nowhere"), "sip.listen"),
        (format!("{MIN}[policy.x]\n"), "policy"),
        (
            MIN.replace("[dispatcher]\n", "[dispatcher]\nping_reply_codes = \"501,403\"\n"),
            "dispatcher.ping_reply_codes",
        ),
        (MIN.replace("[dispatcher]\n", "[dispatcher]\nping_timeout_ms = 0\n"), "dispatcher.ping_timeout_ms"),
        (MIN.replace("file = \"p.wasm\"\n", "file = \"p.wasm\"\non_error = 200\n"), "policy.on_error"),
        (format!("{MIN}[control]\nlisten = \"0.0.0.0:5065\"\n"), "set control.token"),
        (format!("{MIN}[tcp]\nconnect_timeout_ms = 0\n"), "`tcp.connect_timeout_ms`"),
        (format!("{MIN}[tcp]\nidle_timeout_s = 0\n"), "`tcp.idle_timeout_s`"),
        (MIN.replace("[dispatcher]\n", "[dispatcher]\nprobing_mode = 7\n"), "`dispatcher.probing_mode`"),
        (format!("{MIN}[transaction]\nmax_branches = 70000\n"), "`transaction.max_branches`"),
    ];
    for (text, want) in cases {
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: got {err}");
    }
}

#[test]
fn keepalive_settings_are_checked_even_when_keepalives_are_off() {
    let bad = MIN.replace("[dispatcher]\n", "[dispatcher]\nping_interval = 0\nping_reply_codes = \"code=9\"\n");
    assert!(load(&bad).unwrap_err().to_string().contains("dispatcher.ping_reply_codes"));
    let on = MIN.replace("[dispatcher]\n", "[dispatcher]\nping_interval = 5\nping_reply_codes = \"code=404\"\n");
    let prober = load(&on).unwrap().proxy.prober.expect("keepalives on");
    assert_eq!(prober.interval, Duration::from_secs(5));
    assert!(prober.reply_codes.is_success(404));
}

/// Every key of wisp.toml, as `section.key`, read from the serde
/// definitions themselves: a deserializer that records the fields each
/// struct asks for and hands every leaf a dummy value.
fn config_keys() -> Vec<String> {
    use serde::de::value::{Error, StrDeserializer};
    use serde::de::{DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};

    struct Keys<'a> {
        key: String,
        out: &'a mut Vec<String>,
    }
    struct Fields<'a> {
        prefix: String,
        fields: std::slice::Iter<'static, &'static str>,
        current: &'static str,
        out: &'a mut Vec<String>,
    }
    struct Empty;
    impl<'de> SeqAccess<'de> for Empty {
        type Error = Error;
        fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, _: T) -> Result<Option<T::Value>, Error> {
            Ok(None)
        }
    }
    impl<'de> MapAccess<'de> for Empty {
        type Error = Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, _: K) -> Result<Option<K::Value>, Error> {
            Ok(None)
        }
        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, _: V) -> Result<V::Value, Error> {
            Err(serde::de::Error::custom("no value"))
        }
    }
    impl<'de> MapAccess<'de> for Fields<'_> {
        type Error = Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
            let Some(f) = self.fields.next() else { return Ok(None) };
            self.current = f;
            let name: StrDeserializer<'_, Error> = f.into_deserializer();
            seed.deserialize(name).map(Some)
        }
        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            let key = format!("{}{}", self.prefix, self.current);
            seed.deserialize(Keys { key, out: self.out })
        }
    }
    impl Keys<'_> {
        fn leaf(self) {
            self.out.push(self.key);
        }
    }
    impl<'de> Deserializer<'de> for Keys<'_> {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.leaf();
            v.visit_u64(1)
        }
        fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.leaf();
            v.visit_bool(false)
        }
        fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.leaf();
            v.visit_f64(1.0)
        }
        fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.leaf();
            v.visit_str("")
        }
        fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.deserialize_str(v)
        }
        fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            v.visit_some(self)
        }
        fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            self.leaf();
            v.visit_seq(Empty)
        }
        fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
            if self.key == "policy.config" || self.key == "sip.advertise" {
                // A free-form table (the policy's own settings): one key.
                self.leaf();
                return v.visit_map(Empty);
            }
            // Named entries (`[tables.NAME]`): one, named NAME.
            let prefix = format!("{}.", self.key);
            v.visit_map(Fields { prefix, fields: ["NAME"].iter(), current: "", out: self.out })
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, Error> {
            let prefix = if self.key.is_empty() { String::new() } else { format!("{}.", self.key) };
            v.visit_map(Fields { prefix, fields: fields.iter(), current: "", out: self.out })
        }
        serde::forward_to_deserialize_any! {
            i8 i16 i32 i64 u8 u16 u32 u64 f32 char bytes byte_buf unit unit_struct
            newtype_struct tuple tuple_struct enum identifier ignored_any
        }
    }
    let mut out = Vec::new();
    Config::deserialize(Keys { key: String::new(), out: &mut out }).expect("every key visited");
    out
}

/// Keys the README's configuration table documents (`t1_ms` / `t2_ms`
/// in one cell share the first key's section).
fn readme_keys() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let start = readme.find("## Configuration: `wisp.toml`").expect("README has a configuration section");
    let table = &readme[start..];
    let end = table[3..].find("\n#").map_or(table.len(), |i| i + 3);
    let mut keys = Vec::new();
    for line in table[..end].lines().filter(|l| l.starts_with("| `")) {
        let cell = line.split('|').nth(1).unwrap_or_default();
        let mut section = String::new();
        for name in cell.split('`').skip(1).step_by(2) {
            match name.split_once('.') {
                Some((sec, _)) => {
                    section = sec.to_string();
                    keys.push(name.to_string());
                }
                None => keys.push(format!("{section}.{name}")),
            }
        }
    }
    keys
}

#[test]
fn every_config_key_is_in_the_readme_and_every_readme_key_exists() {
    let code = config_keys();
    assert!(code.contains(&"sip.listen".to_string()) && code.contains(&"transaction.t2_ms".to_string()), "{code:?}");
    let readme = readme_keys();
    let missing: Vec<_> = code.iter().filter(|k| !readme.contains(k)).collect();
    let unknown: Vec<_> = readme.iter().filter(|k| !code.contains(k)).collect();
    assert!(missing.is_empty(), "keys of wisp.toml missing from the README's table: {missing:?}");
    assert!(unknown.is_empty(), "README documents keys wisp.toml does not have: {unknown:?}");
}

#[test]
fn cluster_settings_are_checked_and_default_sensibly() {
    let s = load(&format!("{MIN}[cluster]\nurl = \"nats://127.0.0.1:4222\"\nnode = \"a\"\nshare = [1, 2]\n")).unwrap();
    let c = s.cluster.unwrap();
    assert_eq!(
        (c.name.as_str(), c.heartbeat, c.member_timeout),
        ("wisp", Duration::from_secs(1), Duration::from_secs(3))
    );
    assert_eq!(c.share, crate::cluster::Share::Sets(vec![1, 2]));
    assert!(c.state_dir.ends_with("cluster-a"), "{}", c.state_dir.display());
    assert!(load(MIN).unwrap().cluster.is_none(), "no [cluster]: a lone node");
    let bad = [
        ("url = \"http://x\"\n", "cluster.url"),
        ("url = \"nats://x:1\"\nnode = \"a b\"\n", "cluster.node"),
        ("url = \"nats://x:1\"\nshare = \"some\"\n", "cluster.share"),
        ("url = \"nats://x:1\"\nheartbeat_ms = 2000\nmember_timeout_ms = 3000\n", "cluster.member_timeout_ms"),
        ("url = \"nats://x:1\"\ntoken = \"t\"\nuser = \"u\"\npassword = \"p\"\n", "cluster.token"),
        ("url = \"nats://x:1\"\nuser = \"u\"\n", "cluster.user"),
        ("url = \"nats://x:1\"\nkv_prefixes = [\"\"]\n", "cluster.kv_prefixes"),
        ("url = \"nats://x:1\"\nca = \"missing.pem\"\n", "cluster.ca"),
    ];
    for (section, key) in bad {
        let err = load(&format!("{MIN}[cluster]\n{section}")).unwrap_err().to_string();
        assert!(err.contains(key), "{section}: {err}");
    }
    // The password never shows in a debug print of the settings.
    let s = load(&format!("{MIN}[cluster]\nurl = \"nats://x:1\"\nuser = \"u\"\npassword = \"hunter2\"\n")).unwrap();
    assert!(!format!("{:?}", s.cluster).contains("hunter2"));
}
