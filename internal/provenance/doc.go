// Package provenance signs and checks who built what: the build server's
// in-toto Statement of a successful attempt (predicate SLSA provenance v1)
// and the metaserver's verification summary (predicate SLSA verification
// summary v1), each in a DSSE envelope signed with an ed25519 key, and the
// entries that carry them into the transparency log (package translog).
//
// # Keys
//
// A build server makes its key pair at its first start and keeps the
// private key in DATA_DIR/provenance.key (mode 0600, refused when readable
// by others); it sends the public key in every Hello and the metaserver
// pins the first one it sees for the credential (docs/provenance.md). The
// metaserver's own key, in its data directory likewise, signs summaries and
// the log's checkpoints.
//
// # What is signed
//
//	Statement{subject: artifact sha256,
//	  predicate: Provenance{
//	    buildDefinition: {buildType, externalParameters: project, commit,
//	                      options, platform constraints,
//	                      resolvedDependencies: source commit, dependency
//	                      artifacts, toolchain as measured},
//	    runDetails: {builder.id: kiln build server NAME,
//	                 metadata: attempt id, start, end,
//	                 byproducts: the build log's sha256}}}
//
// Everything in it is read from what the metaserver also knows (the
// assignment, the result), so the metaserver checks the statement field by
// field against the attempt before it accepts the result (CheckStatement).
package provenance
