//! The macros' compile-time contract: every misuse is an error at the offending token (the
//! `.stderr` beside each case), and the supported forms compile. Regenerate expectations with
//! `TRYBUILD=overwrite cargo test --test compiletest` and review each `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/derive/*.rs");
    t.compile_fail("tests/ui/emits/*.rs");
    t.compile_fail("tests/ui/aggregate-root/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
