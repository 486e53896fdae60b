// Package manifest reads kiln.yaml, a project's build manifest, and
// validates compile options against it.
//
// A manifest declares the tools a build requires, typed compile options with
// defaults, the shell steps that build, check and package the project, the
// artifact paths and a time limit. A project without kiln.yaml builds with
// the default recipe [Detect] chooses from the top of its tree: configure,
// autotools (autoreconf), Meson, CMake or a plain Makefile, configured as a
// cross build on a cross target, installed into $KILN_DESTDIR.
// docs/manifest.md describes the format for project authors.
//
// # Parsing
//
// [Parse] is strict: unknown keys, duplicate keys, YAML anchors and aliases,
// and values of the wrong shape are errors. Every error is a *[ParseError]
// carrying the line it concerns, with a message meant for the project's
// author.
//
// # Options
//
// [Manifest.Normalize] turns the options a requester typed into the
// canonical map that goes into a build's cache key: every declared option
// present, defaults applied, each value in its canonical spelling. Two
// requests that mean the same build normalize to equal maps. Build steps see
// each option in the environment variable [EnvName] gives.
//
// Manifests are immutable once parsed: callers must not modify one that
// other goroutines read.
package manifest
