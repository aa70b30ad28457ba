//! Sample multi-arch images with real layers, for the demo and the tests.
