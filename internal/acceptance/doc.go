// Package acceptance is Kiln's acceptance suite: real upstream C projects,
// unpacked from Debian 12's source packages into git repositories without a
// kiln.yaml, built through a real farm (farmtest's metaserver and one
// buildserver offering native, musl and four qemu-user cross targets) on
// every platform, their own tests included.
//
// scripts/acceptance.sh fetches and imports the projects and runs
// TestAcceptance, which submits every project × platform cell with the real
// startcompile, downloads each artifact and judges it:
//
//   - the build must have succeeded (its failure, failing step and log tail
//     are kept otherwise);
//   - every ELF file in the artifact, and every ELF member of every static
//     archive in it, must match the platform's machine, class and byte order
//     (and for executables and shared objects its ABI: program interpreter,
//     the C library they need, ARM's hard-float flag) — Inspect;
//   - the artifact must hold at least one ELF file (a build that installs
//     nothing is no build), and a shared library when the same project's
//     native build has one.
//
// The results go to a markdown report (ACCEPTANCE.md): a project × platform
// table and, for every failed cell, its reason and the end of its log.
// TestAcceptance skips unless KILN_ACCEPTANCE names the project list the
// script writes.
package acceptance
