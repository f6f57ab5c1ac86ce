//! Built against `wisp:policy@0.0.9` (see wit/old.wit): wrong version, missing
//! exports. `wisp policy check` and reloads must refuse it with the reason.
wit_bindgen::generate!({ world: "router", path: "wit" });

struct Old;

impl Guest for Old {
    fn request_route() -> bool {
        wisp::policy::log::log("old world");
        true
    }
}

export!(Old);
