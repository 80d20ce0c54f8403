//! Builders shared by the unit tests.

use quiver_core::RegistryState;
use quiver_core::manifest::{ManifestFile, parse_manifests};
use quiver_core::plan::{NoSchemaCheck, apply};

pub(crate) use quiver_core::testdata::view;

/// The registry state of applying the README example once.
pub(crate) fn registry_state() -> RegistryState {
    let declared = parse_manifests(&[ManifestFile {
        path: "/repo/m.yaml".into(),
        content: quiver_core::testdata::EXAMPLE.into(),
    }])
    .expect("manifest parses");
    let state = RegistryState::default();
    apply(&state, declared, Some(0), false, &NoSchemaCheck, 1_000)
        .expect("example applies")
        .0
}
