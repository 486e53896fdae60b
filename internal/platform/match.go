package platform

import kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"

// Satisfies reports whether info meets every field c pins: each pinned field
// must equal the measured value exactly (both sides canonical; see the
// package doc). nil constraints are satisfied by any system, including nil.
func Satisfies(info *kilnv1.SystemInfo, c *kilnv1.PlatformConstraints) bool {
	if c == nil {
		return true
	}
	for i := range Registry {
		f := &Registry[i]
		if v := f.Constraint(c); v != "" && v != f.Measured(info) {
			return false
		}
	}
	return true
}

// Unmet returns the fields c pins that info does not meet, in Fields order,
// or nil when info satisfies c.
func Unmet(info *kilnv1.SystemInfo, c *kilnv1.PlatformConstraints) []string {
	var out []string
	for i := range Registry {
		f := &Registry[i]
		if v := f.Constraint(c); v != "" && v != f.Measured(info) {
			out = append(out, f.Name)
		}
	}
	return out
}

// Covers reports whether every field req pins is pinned to the same value in
// build, so that any system satisfying build also satisfies req. The
// scheduler uses it to let a request wait on an existing build. build may pin
// more than req; a nil req is covered by anything, a nil build covers only a
// req that pins nothing.
func Covers(build, req *kilnv1.PlatformConstraints) bool {
	if req == nil {
		return true
	}
	for i := range Registry {
		f := &Registry[i]
		if v := f.Constraint(req); v != "" && v != f.Constraint(build) {
			return false
		}
	}
	return true
}

// FromInfo returns constraints pinning the given fields to info's measured
// values, exactly as measured, so that info always satisfies the result.
// Unknown field names and fields info has not measured are left free. Pass
// Fields... to pin everything.
func FromInfo(info *kilnv1.SystemInfo, fields ...string) *kilnv1.PlatformConstraints {
	c := &kilnv1.PlatformConstraints{}
	for _, f := range fields {
		put(c, f, Value(info, f))
	}
	return c
}
