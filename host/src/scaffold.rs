//! `wisp policy new NAME`: a policy crate that builds anywhere, with an
//! offline test, for authors outside this repository.

use std::path::{Path, PathBuf};

/// Where the new crate gets the SDK from.
pub enum Sdk {
    /// A local checkout's `guest-sdk` folder.
    Path(PathBuf),
    /// A git repository holding the wisp workspace (`package = "wisp-policy"`).
    Git(String),
}

impl Sdk {
    /// The guest SDK of the checkout this `wisp` was built from.
    pub fn of_this_build() -> Sdk {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
        Sdk::Path(sdk.canonicalize().unwrap_or(sdk))
    }

    fn dependency(&self) -> String {
        match self {
            Sdk::Path(p) => format!("wisp-policy = {{ path = {:?} }}", p.display().to_string()),
            Sdk::Git(url) => format!("wisp-policy = {{ git = {url:?}, package = \"wisp-policy\" }}"),
        }
    }
}

/// Write the crate `name` into `parent/name`; refuses to touch an existing folder.
pub fn new_policy(parent: &Path, name: &str, sdk: &Sdk) -> anyhow::Result<PathBuf> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    anyhow::ensure!(
        valid,
        "`{name}`: a policy name is lower-case letters, digits, `-` and `_`, starting with a letter"
    );
    let dir = parent.join(name);
    anyhow::ensure!(!dir.exists(), "{} exists already", dir.display());
    let lib = name.replace('-', "_");
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("tests"))?;
    let fill = |t: &str| t.replace("{name}", name).replace("{lib}", &lib).replace("{sdk}", &sdk.dependency());
    std::fs::write(dir.join("Cargo.toml"), fill(CARGO_TOML))?;
    std::fs::write(dir.join("src/lib.rs"), fill(LIB_RS))?;
    std::fs::write(dir.join("tests/offline.rs"), fill(TEST_RS))?;
    std::fs::write(dir.join("README.md"), fill(README))?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    Ok(dir)
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# The wisp guest SDK (`wisp policy new --sdk PATH` or `--sdk-git URL` to change it).
{sdk}
serde = { version = "1", features = ["derive"] }

[profile.release]
opt-level = "s"
strip = true

# A workspace of its own, wherever it is put.
[workspace]
"#;

const LIB_RS: &str = r#"//! {name}: a wisp routing policy.
//!
//! Carriers in one dispatcher set (round-robin), failover on a carrier's
//! failure, the set taken from wisp.toml:
//!
//! ```toml
//! [policy]
//! file = "target/wasm32-wasip2/release/{lib}.wasm"
//! [policy.config]
//! carriers = 1
//! ```
use serde::Deserialize;
use wisp_policy::{dispatcher, failover, Action, Algorithm, Config, DstState, Message, Method, Policy, Settings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Routing {
    /// The dispatcher set of the carriers.
    carriers: u32,
}

impl Default for Routing {
    fn default() -> Self {
        Routing { carriers: 1 }
    }
}

static ROUTING: Settings<Routing> = Settings::new();

struct Route;

impl Policy for Route {
    fn init(config: &Config) -> Result<(), String> {
        ROUTING.set(config.parse()?);
        Ok(())
    }

    fn request_route(req: &Message) -> Action {
        if req.has_to_tag() {
            return Action::Relay; // in-dialog: follow Route / request-URI
        }
        if req.method() != Method::Invite {
            return Action::reply(405, "Method Not Allowed");
        }
        match dispatcher::select_dst(ROUTING.get().carriers, Algorithm::RoundRobin, None) {
            Some(_) => Action::Relay,
            None => Action::reply(503, "No route available"),
        }
    }

    fn failure_route(req: &Message) -> Action {
        if req.has_to_tag() {
            return Action::GiveUp;
        }
        failover::next_carrier(DstState::Inactive)
    }
}

wisp_policy::export_policy!(Route);
"#;

const TEST_RS: &str = r#"//! The policy run offline by `wisp policy test` (the `wisp` binary from
//! WISP_BIN or the PATH): builds the component first.

use std::path::PathBuf;

const INVITE: &str = "INVITE sip:+15550100@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-offline
From: <sip:alice@127.0.0.1>;tag=1
To: <sip:+15550100@127.0.0.1>
Call-ID: offline-1
CSeq: 1 INVITE
Max-Forwards: 70
Content-Length: 0

";

fn component() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the component builds");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("wasm32-wasip2/release/{lib}.wasm")
}

#[test]
fn calls_go_to_the_carriers_and_fail_over() {
    let wasm = component();
    let list = "1 sip:127.0.0.1:5071\n1 sip:127.0.0.1:5072\n";
    let o = wisp_policy::testing::run(&wasm, INVITE, list, "request", &[]).unwrap();
    assert!(o.decision.starts_with("relay to sip:127.0.0.1:507"), "{o:?}");
    let o = wisp_policy::testing::run(&wasm, INVITE, list, "failure", &["--failure", "503"]).unwrap();
    assert!(o.host_calls.iter().any(|c| c.starts_with("dispatcher.mark-dst")), "{o:?}");
    assert!(o.decision.starts_with("relay to"), "the other carrier: {o:?}");
    let o = wisp_policy::testing::run(&wasm, INVITE, list, "failure", &["--failure", "486"]).unwrap();
    assert_eq!(o.decision, "give up", "a busy callee is not failed over");
}
"#;

const README: &str = r#"# {name}

A wisp routing policy, made by `wisp policy new {name}`.

```sh
rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2   # target/wasm32-wasip2/release/{lib}.wasm
wisp policy check target/wasm32-wasip2/release/{lib}.wasm
WISP_BIN=$(command -v wisp) cargo test         # runs the policy offline (tests/offline.rs)
```

Point wisp at it (`[policy] file = ".../{lib}.wasm"`, settings under
`[policy.config]`), and after a change rebuild and swap it in without
losing a call: `wisp ctl policy.reload` (or SIGHUP, or `watch = true`).
"#;

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_checked_and_existing_folders_kept() {
        let dir = std::env::temp_dir().join(format!("wisp-scaffold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sdk = super::Sdk::Git("https://example.com/wisp".into());
        assert!(super::new_policy(&dir, "Bad Name", &sdk).is_err());
        let made = super::new_policy(&dir, "my-route", &sdk).unwrap();
        let toml = std::fs::read_to_string(made.join("Cargo.toml")).unwrap();
        assert!(toml.contains("name = \"my-route\"") && toml.contains("git = \"https://example.com/wisp\""));
        assert!(std::fs::read_to_string(made.join("tests/offline.rs")).unwrap().contains("release/my_route.wasm"));
        assert!(super::new_policy(&dir, "my-route", &sdk).is_err(), "an existing folder is not overwritten");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
