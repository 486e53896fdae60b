package store

import (
	"github.com/kilnbuild/kiln/internal/platform"
	kilnv1 "github.com/kilnbuild/kiln/proto/kiln/v1"
)

// BuildArch is the architecture a BuildFilter's Platform.Arch matches for
// b: BuildPlatformValue(b, "arch"). Every Store implementation filters and
// indexes by this value so that they agree.
func BuildArch(b *Build) string { return BuildPlatformValue(b, "arch") }

// BuildPlatformValue is the value a BuildFilter platform field matches for
// b: field of the platform the build ran on once it has been dispatched
// (b.Build.Platform), otherwise the value the requester pinned
// (b.Build.Constraints, possibly empty). field is a platform field name
// (platform.Registry); any other gives "".
func BuildPlatformValue(b *Build, field string) string {
	v := b.GetBuild()
	if p := v.GetPlatform(); p != nil {
		return platform.Value(p, field)
	}
	return platform.Get(v.GetConstraints(), field)
}

// Matches reports whether b is selected by f. Store implementations may
// narrow their scan with an index, but must agree with Matches.
func (f BuildFilter) Matches(b *Build) bool {
	v := b.GetBuild()
	if (f.State != kilnv1.BuildState_BUILD_STATE_UNSPECIFIED && v.GetState() != f.State) ||
		(f.Project != "" && v.GetProject() != f.Project) {
		return false
	}
	for i := range platform.Registry {
		pf := &platform.Registry[i]
		if want := pf.Constraint(f.Platform); want != "" && BuildPlatformValue(b, pf.Name) != want {
			return false
		}
	}
	return true
}
